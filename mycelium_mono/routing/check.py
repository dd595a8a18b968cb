"""Stage 3: a parsed routing class + a scope → a resolved table, or diagnostics.

Every problem is collected; nothing stops at the first one. The resolved table is what the
generator consumes: distinct handlers in first-appearance order (the constructor's parameter
order) and, per message, the method each handler receives it with.
"""

from __future__ import annotations

import ast
import inspect
import keyword
from dataclasses import dataclass

from mycelium_mono.messages import snake_case
from mycelium_mono.routing.errors import Diagnostic, Span
from mycelium_mono.routing.parse import NameRef, RouteEntry, RoutingClass
from mycelium_mono.routing.resolve import (
    HandlerInfo,
    MessageInfo,
    MethodInfo,
    Scope,
    Unresolved,
)

__all__ = ["HandlerCall", "ResolvedRoute", "ResolvedTable", "check_class"]


@dataclass(frozen=True)
class HandlerCall:
    """One handler receiving one message: ``self.<handler.attr>.<method.method>(msg)``."""

    handler: HandlerInfo
    method: MethodInfo
    ref: NameRef


@dataclass(frozen=True)
class ResolvedRoute:
    message: MessageInfo
    ref: NameRef
    sync: tuple[HandlerCall, ...]
    background: tuple[HandlerCall, ...]
    split: bool
    span: Span

    @property
    def emit_name(self) -> str:
        return f"emit_{snake_case(self.message.name)}"

    @property
    def message_expr(self) -> str:
        return self.ref.text


@dataclass(frozen=True)
class ResolvedTable:
    """A routing class, checked and ready to generate."""

    name: str
    span: Span
    lineno: int
    inline: bool | None
    handlers: tuple[tuple[HandlerInfo, NameRef], ...]
    """Distinct handler classes in first-appearance order, with the ref that introduced each."""
    routes: tuple[ResolvedRoute, ...]


RESERVED_ATTRS = frozenset({"emit", "background", "on_error", "detach",
                            "self", "object", "isinstance", "getattr"})
"""Names of the generated bus's own members, and the names its constructor (which takes one
argument per handler attribute) uses: a handler attribute may not shadow them."""

LINTER_NOTE = (
    "linters count a name on the left of `=` as unused: if `ruff --fix` or autoflake removed "
    "its import (F401), restore it with `# noqa: F401`"
)
"""Why a message import that was there yesterday can be gone: the commonest cause of E0002."""


class _Checker:
    def __init__(self, routing: RoutingClass, scope: Scope, filename: str) -> None:
        self.routing = routing
        self.scope = scope
        self.filename = filename
        self.problems: list[Diagnostic] = []
        self.handlers: dict[str, tuple[HandlerInfo, NameRef]] = {}
        self.attrs: dict[str, HandlerInfo] = {}
        self.routed: dict[str, tuple[RouteEntry, MessageInfo]] = {}
        self.emit_names: dict[str, RouteEntry] = {}

    def error(self, code: str, message: str, span: Span, help: str | None = None,
              note: str | None = None) -> None:
        self.problems.append(Diagnostic(code, message, self.filename, span, help, note))

    def run(self) -> ResolvedTable:
        routes = []
        for entry in self.routing.entries:
            route = self.check_entry(entry)
            if route is not None:
                routes.append(route)
        return ResolvedTable(self.routing.name, self.routing.span, self.routing.lineno,
                             self.routing.inline, tuple(self.handlers.values()), tuple(routes))

    def check_entry(self, entry: RouteEntry) -> ResolvedRoute | None:
        message = self.check_message(entry)
        seen: dict[str, NameRef] = {}
        sync = self.check_handlers(entry.sync, message, seen, background=False)
        background = self.check_handlers(entry.background, message, seen, background=True)
        if message is None:
            return None
        return ResolvedRoute(message, entry.message, sync, background, entry.split, entry.span)

    def check_message(self, entry: RouteEntry) -> MessageInfo | None:
        ref = entry.message
        symbol = self.scope.resolve(ref.text)
        if isinstance(symbol, Unresolved):
            self.error(symbol.code, symbol.reason, ref.span,
                       f"the name on the left is the message class; {symbol.help}",
                       note=LINTER_NOTE if symbol.unknown_name else symbol.note)
            return None
        info = self.scope.message_info(symbol)
        if info is None:
            self.error("E0003", f"`{ref.text}` is not a message class", ref.span,
                       f"decorate {ref.text} with @message(type_id=..., topic=...), or route "
                       "the message class it was meant to be")
            return None
        known = self.routed.get(info.key)
        if known is not None:
            first, first_info = known
            if None not in (info.type_id, first_info.type_id) and \
                    info.type_id != first_info.type_id:
                # Two classes a factory function made: one module and qualname, the key.
                self.error("E0006", f"{ref.text} and {first.message.text} are two message "
                           f"classes with the same name, {info.key}", ref.span,
                           "give each message class its own name (a class made by a factory "
                           "function: set its __name__ and __qualname__ there)",
                           note=f"{first.message.text} is routed on line {first.span.lineno}")
                return None
            self.error("E0006", f"{info.name} is routed twice", ref.span,
                       "merge the two lines into one list (or one route(...))",
                       note=f"first routed on line {first.span.lineno}")
            return None
        emit = f"emit_{snake_case(info.name)}"
        names = [emit, f"{emit}_sync", f"{emit}_async"] if entry.split else [emit]
        clash = next((name for name in names if name in self.emit_names), None)
        if clash is not None:
            # `messages.Notice` and `catalog.Notice as ShelfNotice`: one emit_notice replaced
            # the other, and the first's messages went to the second's handlers.
            other = self.emit_names[clash]
            self.error("E0006", f"{ref.text} and {other.message.text} would both be emitted by "
                       f"`{clash}` (the bus names each emit method after its message class)",
                       ref.span, "route one of them on another bus, or rename one message "
                       "class (everywhere it is exchanged: its name is part of its fingerprint)",
                       note=f"{other.message.text} is routed on line {other.span.lineno}")
            return None
        self.routed[info.key] = (entry, info)
        self.emit_names.update(dict.fromkeys(names, entry))
        return info

    def check_handlers(self, refs: tuple[NameRef, ...], message: MessageInfo | None,
                       seen: dict[str, NameRef], *, background: bool) -> tuple[HandlerCall, ...]:
        calls = []
        for ref in refs:
            handler = self.check_handler(ref)
            if handler is None:
                continue
            if handler.key in seen:
                self.error("E0005", f"{handler.name} is listed twice for the same message",
                           ref.span, "remove the second one: each handler receives a message once",
                           note=f"first listed at column {seen[handler.key].span.col_offset + 1}")
                continue
            seen[handler.key] = ref
            if message is None:
                continue
            method = self.check_method(handler, message, ref, background=background)
            if method is not None:
                calls.append(HandlerCall(handler, method, ref))
        return tuple(calls)

    def check_handler(self, ref: NameRef) -> HandlerInfo | None:
        symbol = self.scope.resolve(ref.text)
        if isinstance(symbol, Unresolved):
            self.error(symbol.code, symbol.reason, ref.span, symbol.help, note=symbol.note)
            return None
        info = self.scope.handler_info(symbol)
        if info is None:
            shown = type(symbol).__name__
            self.error("E0008", f"`{ref.text}` is not a handler class (it is a {shown})",
                       ref.span, "route handler classes; the bus is constructed with instances")
            return None
        return self.register(info, ref)

    def register(self, info: HandlerInfo, ref: NameRef) -> HandlerInfo | None:
        known = self.handlers.get(info.key)
        if known is not None:
            first, first_ref = known
            if first.live is None or info.live is None or first.live is info.live:
                return first
            # Two classes one factory function made: the same module and qualname, which is
            # the key. Taken for one class, the second's messages went to the first's slot.
            self.error("E0011", f"{ref.text} and {first_ref.text} are two classes with the same "
                       f"name, {info.key}: the bus would store both as `{info.attr}`", ref.span,
                       "give each class its own name (a class made by a factory function: set "
                       "its __name__ and __qualname__ there), or route one class",
                       note=f"{first_ref.text} is routed at line {first_ref.span.lineno}")
            return None
        if keyword.iskeyword(info.attr):
            # `class Return` → `return`: no `MonolithBus(return=...)`, no `self.return`.
            self.error("E0011", f"handler class {info.name} would be stored as `{info.attr}`, "
                       "a Python keyword, which cannot name the bus's argument and attribute",
                       ref.span, "rename the handler class (the bus takes one keyword "
                       "argument per handler class, its name in snake_case)")
            return None
        if info.attr in RESERVED_ATTRS or info.attr.startswith(("emit_", "_")):
            self.error("E0011", f"handler class {info.name} would be stored as `{info.attr}`, "
                       "which the generated bus uses itself", ref.span,
                       "rename the handler class")
            return None
        clash = self.attrs.get(info.attr)
        if clash is not None:
            self.error("E0011", f"two handler classes would both be called `{info.attr}`",
                       ref.span, f"rename one of {clash.key} and {info.key}: the bus takes one "
                       "keyword argument per handler class, named after the class")
            return None
        self.attrs[info.attr] = info
        self.handlers[info.key] = (info, ref)
        return info

    def check_method(self, handler: HandlerInfo, message: MessageInfo, ref: NameRef, *,
                     background: bool) -> MethodInfo | None:
        method = handler.method_for(message.key)
        if method is None:
            handled = ", ".join(handler.handled_names()) or "nothing"
            self.error("E0001", f"{handler.name} does not handle {message.name}", ref.span,
                       f"mark a method of {handler.name} with @handles({message.name}), or make "
                       f"it a MessageHandler[{message.name}] that defines handle(self, msg)",
                       note=f"{handler.name} handles: {handled}")
            return None
        if method.is_async and not background:
            self.error("E0004", f"{handler.name}.{method.method} is async, but "
                       f"{message.name}'s sync path calls handlers inline", ref.span,
                       f"route it in the background: {message.name} = route(sync=[...], "
                       f"background=[{handler.name}])")
            return None
        wrong = _call_mismatch(handler.live, method.method, handler.mro)
        if wrong is not None:
            self.error("E0013", f"{handler.name}.{method.method}{wrong[0]} cannot be called "
                       f"with one message: {wrong[1]}", ref.span,
                       f"give {handler.name}.{method.method} one parameter for the message, "
                       f"e.g. def {method.method}(self, msg: {message.name}) -> None (others "
                       "need defaults)")
            return None
        return method


def _call_mismatch(cls: type | None, name: str, mro: tuple[object, ...] = ()
                   ) -> tuple[str, str] | None:
    """The signature, and why ``instance.<name>(msg)``, the one call the bus makes, would
    raise TypeError (None: it binds, or the signature cannot be read). ``def handle(self,
    msg, extra)`` passed every check and failed at the first emit with "missing 1 required
    positional argument"."""
    if not isinstance(cls, type):
        # A class in the routing module itself: only its source exists yet.
        return _source_call_mismatch(mro, name)
    raw = inspect.getattr_static(cls, name, None)
    if isinstance(raw, staticmethod | classmethod):
        function = raw.__func__
        leading: tuple[object, ...] = () if isinstance(raw, staticmethod) else (cls,)
    elif inspect.isfunction(raw):
        function, leading = raw, (object(),)
    else:
        return None  # a descriptor or callable object of its own: not ours to judge
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    return _unbindable(signature, leading)


def _unbindable(signature: inspect.Signature, leading: tuple[object, ...]
                ) -> tuple[str, str] | None:
    try:
        signature.bind(*leading, object())
    except TypeError as exc:
        return str(signature.replace(return_annotation=inspect.Signature.empty)), str(exc)
    return None


def _source_call_mismatch(mro: tuple[object, ...], name: str) -> tuple[str, str] | None:
    """:func:`_call_mismatch` for a class written in the routing module, from the ``def`` the
    instance would call: the first class of its MRO that defines ``name``. A handler class
    written beside its table was never checked, and failed at its first emit instead."""
    for klass in mro:
        if isinstance(klass, type):
            return _call_mismatch(klass, name) if name in vars(klass) else None
        node = getattr(klass, "node", None)
        if not isinstance(node, ast.ClassDef):
            return None
        defined = [stmt for stmt in node.body if _binds(stmt, name)]
        if not defined:
            continue
        last = defined[-1]
        if not isinstance(last, ast.FunctionDef | ast.AsyncFunctionDef) or any(
                not _is_handles_decorator(d) for d in last.decorator_list):
            return None  # an assignment, a staticmethod, another decorator: not ours to judge
        wrong = _unbindable(_signature_of(last.args), (object(),))
        return None if wrong is None else (f"({ast.unparse(last.args)})", wrong[1])
    return None


def _binds(stmt: ast.stmt, name: str) -> bool:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return stmt.name == name
    targets = (stmt.targets if isinstance(stmt, ast.Assign)
               else [stmt.target] if isinstance(stmt, ast.AnnAssign | ast.AugAssign) else [])
    return any(isinstance(t, ast.Name) and t.id == name for t in targets)


def _is_handles_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == "handles") or (
        isinstance(target, ast.Attribute) and target.attr == "handles")


def _signature_of(args: ast.arguments) -> inspect.Signature:
    """The parameters of a ``def`` (annotations left out, every default ``...``): enough to
    tell whether one positional argument binds, and why not in Python's own words."""
    kind = inspect.Parameter
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    params = [kind(a.arg, kind.POSITIONAL_ONLY if i < len(args.posonlyargs)
                   else kind.POSITIONAL_OR_KEYWORD,
                   default=... if i >= first_default else kind.empty)
              for i, a in enumerate(positional)]
    if args.vararg is not None:
        params.append(kind(args.vararg.arg, kind.VAR_POSITIONAL))
    params += [kind(a.arg, kind.KEYWORD_ONLY,
                    default=kind.empty if default is None else ...)
               for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg is not None:
        params.append(kind(args.kwarg.arg, kind.VAR_KEYWORD))
    return inspect.Signature(params)


def check_class(
    routing: RoutingClass, scope: Scope, filename: str
) -> tuple[ResolvedTable, list[Diagnostic]]:
    """Resolve and check one routing class; the table is only usable if there are no problems."""
    checker = _Checker(routing, scope, filename)
    table = checker.run()
    return table, checker.problems
