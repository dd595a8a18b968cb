"""The no-hook path: ``@routing_config`` builds the generated bus when the class statement runs.

Same stages, same generated code as the import hook; only the scope differs (names are looked
up in the namespace the class statement ran in) and nothing is cached. When the class's
source cannot be read (a frozen app, code from ``exec``), the table is read from the class's
attributes instead and the generated code is shown from its own ``linecache`` entry.
"""

from __future__ import annotations

import ast
import inspect
import sys
from types import FrameType
from typing import Any

from mycelium_mono.routing.declare import Route
from mycelium_mono.routing.errors import UNKNOWN_SPAN, Diagnostic, RoutingError
from mycelium_mono.routing.generate import GeneratedClass, support_import
from mycelium_mono.routing.parse import (
    NameRef,
    RouteEntry,
    RoutingClass,
    decorator_names,
    generated_name_clashes,
    parse_class,
    route_names,
)
from mycelium_mono.routing.pipeline import (
    RewriteOptions,
    build_tables,
    generated_filename,
    register_generated_source,
)
from mycelium_mono.routing.resolve import LiveScope, RoutingSource, current_text

__all__ = ["build_at_runtime"]


def build_at_runtime(
    cls: type, *, inline: Any, frame: FrameType | None, line: int | None = None,
    bad_options: bool = False,
) -> type:
    """Generate, compile and return the bus class for the routing class ``cls``.

    ``line`` is where the decorator was written (the caller's line when ``routing_config`` ran).
    """
    namespace = _namespace(cls, frame)
    parsed = _parse_from_source(cls, line)  # reports bad options with a caret when it can
    parse_problems: list[Diagnostic] = []
    if parsed is None:
        _check_options(cls, inline, bad_options)
        routing, filename, source = _table_from_attributes(cls, inline, namespace), None, None
    else:
        routing, filename, source, parse_problems = parsed
    module = sys.modules.get(cls.__module__)
    written = None if parsed is None else RoutingSource(
        cls.__module__, parsed[1], parsed[2], ast.parse(parsed[2], parsed[1]),
        shares_globals=module is not None and namespace is vars(module))
    scope = LiveScope(namespace, cls.__module__, written)
    shown_name = filename or generated_filename(f"{cls.__module__}.{cls.__qualname__}")
    generated, problems = build_tables([(routing, scope)], shown_name, RewriteOptions())
    if parse_problems or problems:
        raise RoutingError([*parse_problems, *problems], source)
    return _compile(cls, generated[0], namespace, filename)


def _check_options(cls: type, inline: Any, bad: bool, what: str = "routing_config options") -> None:
    if bad or not (inline is None or isinstance(inline, bool)):
        where = generated_filename(f"{cls.__module__}.{cls.__qualname__}")
        raise RoutingError([Diagnostic(
            "E0009", f"bad {what}", where, UNKNOWN_SPAN,
            help="write @routing_config(inline=True|False) and route(sync=[...], "
            "background=[...])")])


def _namespace(cls: type, frame: FrameType | None) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    if frame is None:
        return dict(vars(module)) if module else {}
    if frame.f_locals is frame.f_globals:
        return frame.f_globals  # module level: resolve live, exactly as the hook's code does
    return {**frame.f_globals, **frame.f_locals}


def _parse_from_source(cls: type, line: int | None
                       ) -> tuple[RoutingClass, str, str, list[Diagnostic]] | None:
    """The class statement of ``cls`` in its file, parsed with its true positions.

    Not ``inspect.getsourcelines``: it returns the *first* class of that name in the file, so
    a second ``class Bus`` was generated from the first one's table (issue 11.7).
    """
    try:
        filename = inspect.getsourcefile(cls)
    except TypeError:
        return None
    if filename is None:
        return None
    source = current_text(filename)
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return None
    node = _class_statement(tree, cls, line)
    if node is None:
        return None
    routing, problems = parse_class(node, filename, decorator_names(tree),
                                    routes=route_names(tree))
    return routing, filename, source, [*problems, *generated_name_clashes(tree, filename)]


def _class_statement(tree: ast.Module, cls: type, line: int | None) -> ast.ClassDef | None:
    """The ``class`` statement that made ``cls``: by 3.13's ``__firstlineno__``, else by the
    decorator's line, else the last one of that name above the call (``Bus =
    routing_config(Bus)``)."""
    candidates = [n for n in ast.walk(tree)
                  if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    first = getattr(cls, "__firstlineno__", None)
    for node in candidates:
        if node.lineno == first:
            return node
    if line is None:
        return candidates[0] if len(candidates) == 1 else None
    for node in candidates:
        if any(d.lineno <= line <= (d.end_lineno or d.lineno) for d in node.decorator_list):
            return node
    above = [n for n in candidates if (n.end_lineno or n.lineno) <= line]
    return max(above, key=lambda n: n.lineno) if above else None


def _table_from_attributes(
    cls: type, inline: bool | None, namespace: dict[str, Any]
) -> RoutingClass:
    entries = []
    for key, value in vars(cls).items():
        if key.startswith("__"):
            continue
        if isinstance(value, Route):
            if value.malformed:
                _check_options(cls, None, True, what="route() arguments")
            sync, background, split = value.sync, value.background, True
        elif isinstance(value, list | tuple):
            sync, background, split = tuple(value), (), False
        else:
            continue
        entries.append(
            RouteEntry(NameRef(key, UNKNOWN_SPAN), _refs(sync, namespace),
                       _refs(background, namespace), split, UNKNOWN_SPAN)
        )
    return RoutingClass(cls.__name__, UNKNOWN_SPAN, inline, tuple(entries), 0)


def _refs(handlers: tuple[Any, ...], namespace: dict[str, Any]) -> tuple[NameRef, ...]:
    refs = []
    for index, handler in enumerate(handlers):
        name = getattr(handler, "__name__", None)
        if not isinstance(name, str) or namespace.get(name, handler) is not handler:
            name = f"_mycelium_handler_{id(handler):x}_{index}"
        namespace.setdefault(name, handler)
        refs.append(NameRef(name, UNKNOWN_SPAN))
    return tuple(refs)


def _compile(
    cls: type, generated: GeneratedClass, namespace: dict[str, Any], filename: str | None
) -> type:
    module = ast.Module(body=[support_import(), *generated.prelude, generated.node],
                        type_ignores=[])
    ast.fix_missing_locations(module)
    source = ast.unparse(module) + "\n"
    registered = register_generated_source(f"{cls.__module__}.{cls.__qualname__}", source)
    if filename is None:
        # No routing source to point at: compile the generated text itself, so tracebacks
        # show the generated lines from linecache.
        code = compile(source, registered, "exec", dont_inherit=True)
    else:
        code = compile(module, filename, "exec", dont_inherit=True)
    exec(code, namespace)
    built: type = namespace[generated.name]
    built.__module__ = cls.__module__
    built.__qualname__ = cls.__qualname__
    built.__mycelium_origin__ = "runtime"  # type: ignore[attr-defined]
    built.__mycelium_source__ = registered  # type: ignore[attr-defined]
    return built

