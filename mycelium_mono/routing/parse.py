"""Stage 1: a routing module's AST → routing tables (frozen dataclasses with source spans).

This stage only reads syntax. It finds top-level classes decorated with ``@routing_config``
and turns each ``Message = [Handler, ...]`` or ``Message = route(sync=[...], background=[...])``
statement into a :class:`RouteEntry`. What the names *mean* is the resolver's job.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from mycelium_mono.routing.errors import Diagnostic, Span

__all__ = ["GENERATED_PREFIX", "NameRef", "ParseResult", "RouteEntry", "RoutingClass",
           "generated_name_clashes", "parse_class", "parse_module"]

DECORATOR = "routing_config"
ROUTE = "route"

_BODY_HELP = (
    "a routing class may only contain `Message = [Handler, ...]` or "
    "`Message = route(sync=[...], background=[...])` lines (and a docstring)"
)


@dataclass(frozen=True)
class NameRef:
    """A name or dotted name as written in the routing module (``services.RiskManager``)."""

    text: str
    span: Span


@dataclass(frozen=True)
class RouteEntry:
    """One line of a routing class: a message and its handlers."""

    message: NameRef
    sync: tuple[NameRef, ...]
    background: tuple[NameRef, ...]
    split: bool
    """Written with ``route(...)``: the bus gets ``emit_<m>_sync`` / ``emit_<m>_async`` too."""
    span: Span


@dataclass(frozen=True)
class RoutingClass:
    """A ``@routing_config`` class as written."""

    name: str
    span: Span
    """The class name in ``class MonolithBus:``."""
    inline: bool | None
    entries: tuple[RouteEntry, ...]
    lineno: int
    """Line of the ``class`` statement (decorators excluded), to find the node again."""


@dataclass(frozen=True)
class ParseResult:
    classes: tuple[RoutingClass, ...]
    diagnostics: tuple[Diagnostic, ...]


_DECLARING_MODULES = frozenset({"mycelium_mono", "mycelium_mono.routing",
                                "mycelium_mono.routing.declare"})
DEFAULT_NAMES = frozenset({DECORATOR})
DEFAULT_ROUTES = frozenset({ROUTE})


def decorator_names(tree: ast.Module) -> frozenset[str]:
    """The names the module binds ``routing_config`` to: itself, and every ``import ... as``.

    ``from mycelium_mono import routing_config as rc`` used to leave ``@rc`` classes to the
    run-time build, silently (issue 15.7).
    """
    return _names_for(tree, DECORATOR)


def route_names(tree: ast.Module) -> frozenset[str]:
    """The names the module binds ``route`` to (``route as r`` was an E0007 in both builds)."""
    return _names_for(tree, ROUTE)


def _names_for(tree: ast.Module, name: str) -> frozenset[str]:
    names = {name}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.ImportFrom) and stmt.module in _DECLARING_MODULES:
            names.update(a.asname for a in stmt.names if a.name == name and a.asname)
    return frozenset(names)


def is_routing_decorator(node: ast.expr, names: frozenset[str] = DEFAULT_NAMES) -> bool:
    """``@routing_config``, ``@routing_config(...)``, ``@mycelium_mono.routing_config(...)``,
    or one of ``names`` (the module's aliases, :func:`decorator_names`)."""
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id in names
    return isinstance(target, ast.Attribute) and target.attr == DECORATOR


def routing_decorator(node: ast.ClassDef, names: frozenset[str] = DEFAULT_NAMES
                      ) -> ast.expr | None:
    return next((d for d in node.decorator_list if is_routing_decorator(d, names)), None)


def parse_module(tree: ast.Module, filename: str) -> ParseResult:
    """Every top-level ``@routing_config`` class in ``tree``."""
    classes: list[RoutingClass] = []
    diagnostics: list[Diagnostic] = []
    names, routes = decorator_names(tree), route_names(tree)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and routing_decorator(node, names) is not None:
            parsed, problems = parse_class(node, filename, names, routes=routes)
            classes.append(parsed)
            diagnostics.extend(problems)
    return ParseResult(tuple(classes), tuple(diagnostics))


GENERATED_PREFIX = "_mycelium_"
"""The module-level names the generated code binds in the routing module start with this
(``_mycelium_monolith``, ``_mycelium_inline``, ``_mycelium_builtins``, ``_mycelium_m_<module>``)."""


def generated_name_clashes(tree: ast.Module, filename: str) -> list[Diagnostic]:
    """An E0011 for each global of the routing module named like the generated code's own.

    The generated bus imports its support modules into the routing module's globals. A global
    of the module's own with such a name either replaced the import (the hook places it first:
    an inlined ``len`` then read ``"mine".len``) or was replaced by it (the run-time build runs
    after: the module's own code read the builtins module where it had bound a string).
    """
    problems: list[Diagnostic] = []
    for node, name in _module_bindings(tree.body):
        if name.startswith(GENERATED_PREFIX):
            problems.append(Diagnostic(
                "E0011", f"the routing module binds `{name}`, a name the generated bus uses "
                "itself", filename, Span.of(node),
                help=f"rename it: names starting with {GENERATED_PREFIX} are reserved for "
                "generated code"))
    return problems


def _module_bindings(body: list[ast.stmt]) -> Iterator[tuple[ast.AST, str]]:
    """The names ``body`` binds in the module's global scope, with the node binding each."""
    pending: deque[ast.AST] = deque(body)  # first in, first out: diagnostics in source order
    while pending:
        node = pending.popleft()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node, node.name
            pending.extend(node.decorator_list)   # their bodies are scopes of their own
            continue
        if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp
                      | ast.GeneratorExp):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            yield node, node.id
        elif isinstance(node, ast.alias):
            yield node, (node.asname or node.name).split(".")[0]
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            yield node, node.name
        pending.extend(ast.iter_child_nodes(node))


def parse_class(node: ast.ClassDef, filename: str, names: frozenset[str] = DEFAULT_NAMES, *,
                routes: frozenset[str] = DEFAULT_ROUTES
                ) -> tuple[RoutingClass, list[Diagnostic]]:
    """One routing class; problems are collected, never raised."""
    problems: list[Diagnostic] = []
    decorator = routing_decorator(node, names)
    inline = _inline_option(decorator, filename, problems) if decorator is not None else None
    for base in [*node.bases, *node.keywords]:
        problems.append(
            Diagnostic(
                "E0007",
                f"routing class {node.name} cannot have bases or keywords",
                filename,
                Span.of(base),
                help=f"remove them: the generated {node.name} has its own base class",
            )
        )
    entries = []
    for stmt in node.body:
        entry = _parse_statement(stmt, filename, problems, routes)
        if entry is not None:
            entries.append(entry)
    span = _class_name_span(node)
    return RoutingClass(node.name, span, inline, tuple(entries), node.lineno), problems


def _class_name_span(node: ast.ClassDef) -> Span:
    # ast gives the span of the whole statement; the caret belongs under the name.
    col = node.col_offset + len("class ")
    return Span(node.lineno, col, node.lineno, col + len(node.name))


def _inline_option(decorator: ast.expr, filename: str, problems: list[Diagnostic]) -> bool | None:
    if not isinstance(decorator, ast.Call):
        return None
    inline: bool | None = None
    for arg in decorator.args:
        problems.append(
            Diagnostic("E0009", "routing_config takes keyword options only", filename,
                       Span.of(arg), help="write @routing_config(inline=True)")
        )
    for kw in decorator.keywords:
        if kw.arg != "inline":
            problems.append(
                Diagnostic("E0009", f"unknown routing_config option {kw.arg!r}", filename,
                           Span.of(kw), help="the only option is inline=True or inline=False")
            )
        elif isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool | None):
            inline = kw.value.value
        else:
            problems.append(
                Diagnostic("E0009", "inline= must be the literal True, False or None", filename,
                           Span.of(kw.value),
                           help="the option is read before the module runs, so it cannot be "
                           "computed")
            )
    return inline


def _parse_statement(
    stmt: ast.stmt, filename: str, problems: list[Diagnostic], routes: frozenset[str]
) -> RouteEntry | None:
    if _is_docstring_or_pass(stmt):
        return None
    if not (
        isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
    ):
        problems.append(
            Diagnostic("E0007", "unsupported statement in a routing class", filename,
                       Span.of(stmt), help=_BODY_HELP)
        )
        return None
    message = NameRef(stmt.targets[0].id, Span.of(stmt.targets[0]))
    if message.text.startswith("__") and not message.text.endswith("__"):
        # In a class body Python mangles it (`__Ping` is stored as `_Bus__Ping`), and so
        # would the generated class's `{__Ping: 'emit___ping'}`: a NameError at import.
        problems.append(
            Diagnostic("E0007", f"`{message.text}` is a private name, which a class body "
                       "mangles", filename, message.span,
                       help="route the message under a name without leading `__`")
        )
        return None
    value = stmt.value
    if _is_route_call(value, routes):
        assert isinstance(value, ast.Call)
        sync, background = _parse_route_call(value, filename, problems)
        return RouteEntry(message, sync, background, True, Span.of(stmt))
    if isinstance(value, ast.List | ast.Tuple):
        return RouteEntry(message, _refs(value, filename, problems), (), False, Span.of(stmt))
    problems.append(
        Diagnostic("E0007", f"the handlers of {message.text} must be a list of classes",
                   filename, Span.of(value), help=_BODY_HELP)
    )
    return None


def _is_docstring_or_pass(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(
        stmt.value.value, str
    )


def _is_route_call(node: ast.expr, routes: frozenset[str]) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id in routes) or (
        isinstance(func, ast.Attribute) and func.attr == ROUTE
    )


def _parse_route_call(
    call: ast.Call, filename: str, problems: list[Diagnostic]
) -> tuple[tuple[NameRef, ...], tuple[NameRef, ...]]:
    lists: dict[str, tuple[NameRef, ...]] = {"sync": (), "background": ()}
    for arg in call.args:
        problems.append(
            Diagnostic("E0007", "route() takes keyword arguments only", filename, Span.of(arg),
                       help="write route(sync=[...], background=[...])")
        )
    for kw in call.keywords:
        if kw.arg not in lists:
            problems.append(
                Diagnostic("E0007", f"route() has no argument {kw.arg!r}", filename,
                           Span.of(kw), help="write route(sync=[...], background=[...])")
            )
        elif isinstance(kw.value, ast.List | ast.Tuple):
            lists[kw.arg] = _refs(kw.value, filename, problems)
        else:
            problems.append(
                Diagnostic("E0007", f"route({kw.arg}=...) must be a list of classes", filename,
                           Span.of(kw.value), help="write the handler classes in [...]")
            )
    return lists["sync"], lists["background"]


def _refs(
    node: ast.List | ast.Tuple, filename: str, problems: list[Diagnostic]
) -> tuple[NameRef, ...]:
    refs = []
    for element in node.elts:
        text = dotted_name(element)
        if text is None:
            problems.append(
                Diagnostic("E0007", "expected a handler class name", filename, Span.of(element),
                           help="list handler classes by name, e.g. [RiskManager, "
                           "services.AuditLogger]")
            )
        else:
            refs.append(NameRef(text, Span.of(element)))
    return tuple(refs)


def dotted_name(node: ast.expr) -> str | None:
    """``a.b.C`` for a chain of attribute accesses on a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))
