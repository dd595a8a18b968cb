"""Stage 4: a resolved table → the generated bus class, as an AST.

The emit methods are straight-line code, one ``try`` per handler, written as a careful person
would write them by hand::

    def emit_v2_swap(self, msg: V2Swap) -> None:
        while True:
            try:
                self.arbitrage_detector.handle(msg)
            except Exception as exc:
                failure = (0, exc)
                break
            try:
                self.risk_manager.handle(msg)
            except Exception as exc:
                failure = (1, exc)
                break
            return
        self._failed_at('emit_v2_swap', msg, *failure)

Since Python 3.11 a ``try`` costs nothing when nothing raises, and ``while True`` compiles to
no test, so "every handler runs even if an earlier one raised" is free on the fast path. The
rest of the work happens only after a failure: ``break`` ends the ``except`` (the handlers
after it must not run with ``sys.exception()`` still set, as returning from inside it left
it), then ``_failed_at`` calls the handlers after the one that raised (listed in the class's
``__mycelium_calls__``) and raises every failure as one ``ExceptionGroup``. Measured on
three trivial handlers, dropping the ``errors`` local and its final test this way saved about
7 ns per emit (~6%); async emits keep the local, their cost is the event loop's.

With ``inline=True`` the call is replaced, where :mod:`mycelium_mono.routing.inline` can keep
its meaning, by the handler's body (``h1 = self.risk_manager`` then the body with ``self``
renamed ``h1``), behind one flag test per emit (and per inlined body after the first, since
an earlier handler may have replaced a service or detached the bus: ``_resume_calls`` then
calls the rest)::

    def emit_v2_swap(self, msg: V2Swap) -> None:
        if not self._mycelium_inline_ok:
            return self._emit_v2_swap_calls(msg)   # a subclass, a mock, a patched method
        while True:
            h1 = self.risk_manager
            try:
                'inlined RiskManager.handle from .../risk.py:97'
                h1.approved += 1
            except Exception as exc:
                failure = (0, _mycelium_inline.located(exc, ...))
                break
            return
        self._failed_at('emit_v2_swap', msg, *failure)

Every generated node carries the source position of the routing line it came from, and
each handler's ``try`` (inlined body included) the position of that handler's name in the
list: a traceback through ``emit_v2_swap`` points at ``V2Swap = [ArbitrageDetector,
RiskManager]`` with a caret under the handler that raised. An inlined body's failure also gets
a note naming the handler's own file and line; the generated text (``show``, ``linecache``)
names each inlined block's origin in its first line.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, field
from types import CodeType

from mycelium_mono.routing.check import HandlerCall, ResolvedRoute, ResolvedTable
from mycelium_mono.routing.errors import Span
from mycelium_mono.routing.inline import (
    BUILTINS_ALIAS,
    SUPPORT_ALIAS,
    InlinedBody,
    NotInlined,
    code_crc_of,
    inline_source,
    module_alias,
)
from mycelium_mono.routing.methods import find_method

__all__ = ["INLINE_SUPPORT", "SUPPORT", "CallNote", "GeneratedClass", "generate_class",
           "support_import"]

SUPPORT = "_mycelium_monolith"
"""The name under which generated code reaches :mod:`mycelium_mono.monolith`."""

INLINE_SUPPORT = SUPPORT_ALIAS
"""The name under which generated code reaches :mod:`mycelium_mono.routing.inline`."""

INLINE_FLAG = "_mycelium_inline_ok"
CHECK_CALLS = "__mycelium_check_calls__"
"""Set on a generated class whose table was read through a guessed branch (see
``GeneratedBus.__init_subclass__``); unset, the check's ~140 µs per cached import are saved."""
"""The bus slot holding the guard's verdict."""


@dataclass(frozen=True)
class CallNote:
    """How one handler is called from one emit method, and why (``show`` prints these)."""

    emit: str
    handler: str
    method: str
    mode: str  # "call" or "inlined"
    reason: str


@dataclass(frozen=True)
class GeneratedClass:
    name: str
    node: ast.ClassDef
    notes: tuple[CallNote, ...]
    prelude: tuple[ast.stmt, ...] = ()
    """Module-level imports the class needs (inlined bodies read their modules' globals
    through them); the module splices them in after :func:`support_import`."""
    lineno: int = 0
    """The line of the routing class statement it replaces (two classes may share a name)."""
    sources: tuple[str, ...] = ()
    """The files whose text was inlined: a method assigned from another module
    (``Risk.handle = helpers.impl``) is read from a file no class of the MRO lives in, and the
    cache must see it change."""


def support_import() -> ast.stmt:
    return ast.parse(f"import mycelium_mono.monolith as {SUPPORT}").body[0]


@dataclass
class _InlinePlan:
    """Which calls of a table get inlined, and the notes saying why or why not."""

    inline: bool
    imported: frozenset[str] = frozenset()
    """Names the module the class is compiled in binds by import (see ``_compiled_alone``)."""
    notes: list[CallNote] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)
    guarded: dict[tuple[str, str], InlinedBody] = field(default_factory=dict)

    def note(self, emit: str, call: HandlerCall, result: InlinedBody | NotInlined) -> None:
        if isinstance(result, InlinedBody):
            mode, reason = "inlined", (f"from {result.origin}; guarded: exact type, method "
                                       "not replaced (checked when the bus is built)")
        else:
            mode, reason = "call", result.reason
        self.notes.append(CallNote(emit, call.handler.attr, call.method.method, mode, reason))

    def body_for(self, emit: str, index: int, call: HandlerCall) -> InlinedBody | None:
        result = self._try(call, instance=f"h{index}")
        self.note(emit, call, result)
        if isinstance(result, NotInlined):
            return None
        self.modules.update(result.modules)
        self.guarded[(call.handler.attr, call.method.method)] = result
        return result

    def _try(self, call: HandlerCall, *, instance: str) -> InlinedBody | NotInlined:
        if not self.inline:
            return NotInlined("inline=False")
        if call.method.is_async:
            return NotInlined("async handler")
        found = find_method(call.handler, call.method.method)
        if isinstance(found, NotInlined):
            return found
        return inline_source(found, instance=instance, message="msg")

    def prelude(self) -> tuple[ast.stmt, ...]:
        if not self.guarded:
            return ()
        lines = [f"import mycelium_mono.routing.inline as {INLINE_SUPPORT}",
                 f"import builtins as {BUILTINS_ALIAS}"]
        lines += [f"import {m} as {module_alias(m)}" for m in sorted(self.modules)]
        return tuple(ast.parse("\n".join(lines)).body)


def generate_class(table: ResolvedTable, *, inline: bool,
                   imported: frozenset[str] = frozenset(),
                   check_calls: bool = False) -> GeneratedClass:
    """The bus class for ``table``; ``inline`` inlines handler bodies where that is safe.
    ``imported``: the names the module it is compiled in binds by import at module level.
    ``check_calls``: the table was read through a guessed ``if``/``try`` branch, so the class
    checks its calls against the live classes when it is created (``CHECK_CALLS``)."""
    plan = _InlinePlan(inline, imported)
    methods = [m for route in table.routes for m in _route_methods(route, plan)]
    body: list[ast.stmt] = [
        _stmt(f'"""{_docstring(table)}"""'),
        _stmt(f"__slots__ = {_slots(table, plan)!r}"),
        _stmt(_services_mapping(table)),
        _stmt(_routes_mapping(table)),
    ]
    body.append(_stmt(f"__mycelium_calls__ = {_calls_table(table)!r}"))
    # What was decided for each handler and why, carried by the class itself: `show` and
    # `doctor` report the build that really ran, not a fresh rewrite (issue 11).
    notes = tuple((n.emit, n.handler, n.method, n.mode, n.reason) for n in plan.notes)
    body.append(_stmt(f"__mycelium_notes__ = {notes!r}"))
    if plan.guarded:
        body.append(_stmt(f"__mycelium_inlined__ = {_inlined_spec(plan)!r}"))
    if check_calls:
        body.append(_stmt(f"{CHECK_CALLS} = True"))
    _place_all(body, table.span)
    body.append(_init(table, guarded=bool(plan.guarded)))
    body.append(_setattr(table, guarded=bool(plan.guarded)))
    body.extend(methods)
    # Parsed, not built field by field: a parsed node has every field this Python defines
    # (3.12 added ClassDef.type_params, PEP 695), on every supported version (issue 13).
    cls = ast.parse(f"class {table.name}({SUPPORT}.GeneratedBus): pass").body[0]
    assert isinstance(cls, ast.ClassDef)
    cls.body = body
    _place(cls, table.span, shallow=True)
    _place(cls.bases[0], table.span)
    prelude = plan.prelude()
    _place_all(list(prelude), table.span)
    # The files a swap check followed count too: a helper edited to swap `handle` must not
    # leave a cached bus inlining it.
    sources = tuple(sorted({path for body in plan.guarded.values()
                            for path in (body.filename, *body.watched)}))
    return GeneratedClass(table.name, cls, tuple(plan.notes), prelude, table.lineno, sources)


def _calls_table(table: ResolvedTable) -> dict[str, tuple[tuple[str, str], ...]]:
    """Per sync emit, its handlers in order: what ``_failed_at`` calls after a failure."""
    table_: dict[str, tuple[tuple[str, str], ...]] = {}
    for route in table.routes:
        name = f"{route.emit_name}_sync" if route.split else route.emit_name
        table_[name] = tuple((c.handler.attr, c.method.method) for c in route.sync)
    return table_


def _slots(table: ResolvedTable, plan: _InlinePlan) -> tuple[str, ...]:
    attrs = tuple(h.attr for h, _ in table.handlers)
    return (*attrs, INLINE_FLAG) if plan.guarded else attrs


def _inlined_spec(plan: _InlinePlan
                  ) -> tuple[tuple[str, str, str, int, int, str, tuple[str, ...],
                                   tuple[str, ...]], ...]:
    """What the run-time guard checks per inlined body: (attribute, method, file, first line,
    code digest, module, globals read as builtins, globals read through the module)."""
    return tuple((attr, method, body.filename, body.firstlineno, body.code_crc, body.module,
                  body.read_as_builtins, body.read_from_module)
                 for (attr, method), body in plan.guarded.items())


def _docstring(table: ResolvedTable) -> str:
    lines = [f"Generated by mycelium-mono from @routing_config {table.name}.", ""]
    for route in table.routes:
        sync = ", ".join(c.handler.name for c in route.sync) or "-"
        if route.split:
            background = ", ".join(c.handler.name for c in route.background) or "-"
            lines.append(f"{route.message.name}: sync {sync}; background {background}")
        else:
            lines.append(f"{route.message.name} → {sync}")
    return "\n    ".join(lines).replace('"""', "'''") + "\n    "


def _services_mapping(table: ResolvedTable) -> str:
    items = ", ".join(f"{h.attr!r}: {ref.text}" for h, ref in table.handlers)
    return f"__mycelium_services__ = {{{items}}}"


def _init(table: ResolvedTable, *, guarded: bool) -> ast.stmt:
    """The constructor. Handler and message classes are the ones the class statement saw
    (``__mycelium_services__``, ``__mycelium_routes__``), never the routing module's globals
    read again: a module may ``del`` or rebind those names, or a test patch them, later."""
    params = "".join(f", {h.attr}: {ref.text}" for h, ref in table.handlers)
    lines = [f"def __init__(self{params}, *, on_error=None, background=None) -> None:",
             # `_`-names cannot be handler attributes (E0011): no parameter is shadowed.
             "    _services = self.__mycelium_services__"]
    for handler, _ in table.handlers:
        expected = f"_services[{handler.attr!r}]"
        lines += [
            f"    if not isinstance({handler.attr}, {expected}):",
            f"        raise {SUPPORT}.wrong_service(self, {handler.attr!r}, {expected}, "
            f"{handler.attr})",
            # Past `__setattr__`, which is for replacing a service on a built bus.
            f"    object.__setattr__(self, {handler.attr!r}, {handler.attr})",
        ]
    lines.append("    self._setup(on_error, background, {message: getattr(self, emit) for "
                 "message, emit in self.__mycelium_routes__.items()})")
    if guarded:
        lines.append(f"    {INLINE_SUPPORT}.recheck(self)")
    fn = _stmt("\n".join(lines))
    assert isinstance(fn, ast.FunctionDef)
    _place(fn, table.span)
    # The two statements checking and storing a service point at where it was first routed.
    for index, (_, ref) in enumerate(table.handlers):
        for stmt in fn.body[1 + 2 * index : 3 + 2 * index]:
            _place(stmt, ref.span)
    return fn


def _routes_mapping(table: ResolvedTable) -> str:
    """Message class → the emit method ``emit(msg)`` dispatches it to (evaluated once, with
    the class statement, as the table itself was)."""
    items = ", ".join(f"{r.message_expr}: {r.emit_name!r}" for r in table.routes)
    return f"__mycelium_routes__ = {{{items}}}"


def _setattr(table: ResolvedTable, *, guarded: bool) -> ast.stmt:
    """``bus.<service> = new`` is checked and attached as in ``__init__`` (the new one can
    emit, the old one is freed), then re-runs the inline guard; reads stay plain slots."""
    recheck = f"        {INLINE_SUPPORT}.recheck(self)\n" if guarded else ""
    fn = _stmt(
        "def __setattr__(self, name: str, value: object) -> None:\n"
        "    if name in self.__mycelium_services__:\n"
        f"        {SUPPORT}.replace_service(self, name, value)\n"
        f"{recheck}"
        "    else:\n"
        "        object.__setattr__(self, name, value)"
    )
    _place(fn, table.span)
    return fn


def _route_methods(route: ResolvedRoute, plan: _InlinePlan) -> list[ast.stmt]:
    if not route.split:
        return _sync_methods(route, route.emit_name, route.sync, plan)
    for call in route.background:
        plan.note(route.emit_name, call, NotInlined(
            "background path: queued on the event loop, where one call is noise"))
    name = route.emit_name
    combined = _stmt(_combined_source(route, name))
    _place(combined, route.span)
    return [
        *_sync_methods(route, f"{name}_sync", route.sync, plan),
        _emit_method(route, f"{name}_async", route.background, is_async=True),
        combined,
    ]


def _combined_source(route: ResolvedRoute, name: str) -> str:
    head = f"def {name}(self, msg: {route.message_expr}) -> None:\n"
    # A side with no handlers is left out: with an empty background an emit needs no event
    # loop (and queues no empty coroutine); with an empty sync side it calls nothing first.
    submit = f"self.background.submit(self.{name}_async, msg)"
    if not route.background:
        return head + ("    '''Run the sync handlers (the background path has none).'''\n"
                       f"    self.{name}_sync(msg)")
    if not route.sync:
        return head + ("    '''Queue the background handlers on self.background.'''\n"
                       f"    {submit}")
    # Queued first: a backlog that refuses (BacklogFull, no event loop, closed) then refuses
    # before any handler ran, so a retry cannot run the sync handlers twice. The worker cannot
    # start before this emit returns (the caller holds the event loop's thread), so the sync
    # path still runs first, and this message's background call is queued before those of the
    # messages its sync handlers emit, the order a bus's subscribers would receive them in.
    return head + (
        "    '''Queue the background handlers on self.background, then run the sync ones.'''\n"
        "    # Messages are immutable: the copy the background path needs is msg itself.\n"
        f"    {submit}\n"
        f"    self.{name}_sync(msg)"
    )


def _sync_methods(route: ResolvedRoute, name: str, calls: tuple[HandlerCall, ...],
                  plan: _InlinePlan) -> list[ast.stmt]:
    """The sync emit: inlined where the plan allows, plus its all-calls twin for the guard."""
    bodies = [plan.body_for(name, index, call) for index, call in enumerate(calls, 1)]
    if not any(bodies):
        return [_emit_method(route, name, calls, is_async=False)]
    fallback = f"_{name}_calls"
    return [
        _emit_method(route, name, calls, is_async=False, bodies=bodies, fallback=fallback,
                     imported=plan.imported),
        _emit_method(route, fallback, calls, is_async=False, reported_as=name),
    ]


def _emit_method(route: ResolvedRoute, name: str, calls: tuple[HandlerCall, ...], *,
                 is_async: bool, bodies: list[InlinedBody | None] | None = None,
                 fallback: str | None = None, reported_as: str | None = None,
                 imported: frozenset[str] = frozenset()) -> ast.stmt:
    lines = [
        f"{'async ' if is_async else ''}def {name}(self, msg: {route.message_expr}) -> None:",
        f"    '''{_emit_doc(route, calls, bodies, reported_as)}'''",
    ]
    if fallback is not None:
        lines += [f"    if not self.{INLINE_FLAG}:", f"        return self.{fallback}(msg)"]
    if is_async and calls:
        lines.append("    errors = None")
    elif calls:
        # Left by `break` when a handler raised: the handlers after it then run (in
        # _failed_at) with that `except` over, as when called by hand. Returning from inside
        # it ran them with sys.exception() still set to the earlier failure. `while True`
        # compiles to no test, so the fast path is the straight line it was.
        lines.append("    while True:")
    for index, call in enumerate(calls):
        body = bodies[index] if bodies else None
        record = _record_failure(call, body, is_async=is_async)
        if is_async:
            lines += _handler_lines(call, index + 1, body, [f"errors = {record}"], indent=4)
        else:
            if body is not None and index:
                # The guard was checked on entry, but an earlier handler may since have
                # replaced this service (by a subclass or mock, whose own method a call would
                # run) or detached the bus: the flag says so, and the rest is called.
                lines += [f"        if not self.{INLINE_FLAG}:",
                          f"            return self._resume_calls({name!r}, msg, {index})"]
            on_failure = [f"failure = {index}, {record}", "break"]
            lines += _handler_lines(call, index + 1, body, on_failure, indent=8)
    if is_async and calls:
        lines += [
            "    if errors is not None:",
            f"        self._raise_failures({name!r}, msg, errors)",
        ]
    elif calls:
        lines += ["        return",
                  f"    self._failed_at({reported_as or name!r}, msg, *failure)"]
    fn = _stmt("\n".join(lines))
    assert isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
    spliced = _splice_bodies(fn, bodies) if bodies else {}
    if spliced:
        _drop_single_use_aliases(fn)
    _place(fn, route.span)
    _place_handlers(fn, calls)
    if spliced:
        _locate_origins(fn, [(origins, calls[index].ref.span) for index, origins
                             in spliced.items()], imported)
    return fn


def _emit_doc(route: ResolvedRoute, calls: tuple[HandlerCall, ...],
              bodies: list[InlinedBody | None] | None, reported_as: str | None) -> str:
    if reported_as is not None:
        return f"{reported_as} when the inline guard fails: every handler is called."
    targets = [f"{c.handler.attr}.{c.method.method}"
               + (" (inlined)" if bodies and bodies[i] is not None else "")
               for i, c in enumerate(calls)]
    return f"{route.message.name} → {', '.join(targets) or 'no handlers'}."


def _record_failure(call: HandlerCall, body: InlinedBody | None, *, is_async: bool) -> str:
    """What the ``except`` hands on: the exception (noted with its origin if inlined).

    Sync emits return into ``_failed_at``, which records it and calls the handlers after
    this one; async emits accumulate into their ``errors`` local.
    """
    exc = f"{INLINE_SUPPORT}.located(exc, {body.origin!r})" if body is not None else "exc"
    if is_async:
        target = f"{call.handler.attr}.{call.method.method}"
        return f"{SUPPORT}.failed(errors, {exc}, self, {target!r})"
    return exc


def _handler_lines(call: HandlerCall, index: int, body: InlinedBody | None,
                   on_failure: list[str], *, indent: int) -> list[str]:
    pad = " " * indent
    handled = [f"{pad}    {line}" for line in on_failure]
    if body is not None:
        return [
            f"{pad}h{index} = self.{call.handler.attr}",
            f"{pad}try:",
            f"{pad}    {body.marker!r}",
            f"{pad}except Exception as exc:",
            *handled,
        ]
    awaiting = "await " if call.method.is_async else ""
    return [
        f"{pad}try:",
        f"{pad}    {awaiting}self.{call.handler.attr}.{call.method.method}(msg)",
        f"{pad}except Exception as exc:",
        *handled,
    ]


def _handler_block(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.stmt]:
    """The statements that hold the handlers' ``try`` blocks: a sync emit's ``while True``
    body, an async emit's own body."""
    return next((stmt.body for stmt in fn.body if isinstance(stmt, ast.While)), fn.body)


def _splice_bodies(fn: ast.FunctionDef | ast.AsyncFunctionDef,
                   bodies: list[InlinedBody | None]) -> dict[int, _Origins]:
    """Put each inlined body after its origin marker, inside that handler's ``try``.

    The k-th ``try`` belongs to the k-th call, so bodies are placed by position, never by
    their marker text: three routed classes sharing one inherited ``handle`` have the same
    marker, and keying by it once put the last handler's body into every block (issue 11.1).

    Returns, per handler index, the spliced statements with their original lines, which
    :func:`_locate_origins` turns into positions a failure can be traced back with.
    """
    spliced: dict[int, _Origins] = {}
    tries = [node for node in _handler_block(fn) if isinstance(node, ast.Try)]
    for index, (node, body) in enumerate(zip(tries, bodies, strict=True)):
        if body is None:
            continue
        statements = copy.deepcopy(list(body.statements))
        node.body = [node.body[0], *statements]
        spliced[index] = _Origins.of(node, statements, body)
    return spliced


def _drop_single_use_aliases(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    """``h1 = self.detector`` then one ``h1.n += 1``: read the slot where it is used instead.

    The alias pays for itself from the second use; for one use it is a store and a load for
    nothing (~3 ns per handler, measured on three trivial handlers). Only done where the use
    runs at most once: no loop, comprehension or lambda in the body.
    """
    body = _handler_block(fn)
    for index in range(len(body) - 1):
        alias, block = body[index], body[index + 1]
        if not (_is_alias(alias) and isinstance(block, ast.Try)):
            continue
        assert isinstance(alias, ast.Assign) and isinstance(alias.targets[0], ast.Name)
        name = alias.targets[0].id
        uses = [n for stmt in block.body for n in ast.walk(stmt)
                if isinstance(n, ast.Name) and n.id == name]
        repeats = any(isinstance(n, ast.For | ast.While | ast.comprehension | ast.Lambda)
                      for stmt in block.body for n in ast.walk(stmt))
        if len(uses) != 1 or repeats or not isinstance(uses[0].ctx, ast.Load):
            continue
        # `self` is the service the message was given to: the slot may be read late only if
        # nothing runs before that read (`h1.n += 1`). A body that first calls out could
        # replace the bus's service (`bus.counter = Counter()`) before `self.counter.n += 1`.
        if len(block.body) < 2 or _first_evaluated(block.body[1]) is not uses[0]:
            continue
        _replace_node(block, uses[0], copy.deepcopy(alias.value))
        body[index] = ast.Pass()  # keeps indexes stable; removed below
    body[:] = [stmt for stmt in body if not isinstance(stmt, ast.Pass)]


def _first_evaluated(node: ast.AST) -> ast.AST:
    """The sub-expression Python evaluates first when it runs ``node`` (for the forms where
    that is plain; anything else answers itself, which no alias use is)."""
    while True:
        if isinstance(node, ast.Expr | ast.Return) and node.value is not None:
            node = node.value
        elif isinstance(node, ast.AugAssign):
            node = node.target  # its object is loaded before the value is computed
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            # The value runs first; a constant runs nothing, so the target's object is next.
            node = node.targets[0] if isinstance(node.value, ast.Constant) else node.value
        elif isinstance(node, ast.If | ast.While):
            node = node.test
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.BinOp | ast.Compare):
            node = node.left
        elif isinstance(node, ast.BoolOp):
            node = node.values[0]
        elif isinstance(node, ast.UnaryOp):
            node = node.operand
        else:
            return node


def _is_alias(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id.startswith("h")
            and stmt.targets[0].id[1:].isdigit() and isinstance(stmt.value, ast.Attribute))


def _replace_node(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field_name, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field_name, ast.copy_location(new, old))
                return
            if isinstance(value, list) and any(item is old for item in value):
                value[[id(item) for item in value].index(id(old))] = ast.copy_location(new, old)
                return


@dataclass(frozen=True)
class _Origins:
    """Every statement of one inlined body, in order, cut into *units*: the nodes of one
    statement that start on one line of the handler's file. ``lines`` holds each unit's
    line, ``units`` each node's unit (by ``id``). By statement alone, a failure in the third
    line of a statement written over four was noted at its first, where the call's own
    traceback names the line that raised."""

    node: ast.Try
    statements: tuple[ast.stmt, ...]
    lines: tuple[int, ...]
    body: InlinedBody
    units: dict[int, int]
    held: tuple[ast.AST, ...]
    """The nodes ``units`` names, kept alive: an id is unique only while its node lives (a
    later pass replaces some, ``_drop_single_use_aliases``)."""

    @classmethod
    def of(cls, node: ast.Try, statements: list[ast.stmt], body: InlinedBody) -> _Origins:
        found: list[ast.stmt] = []
        lines: list[int] = []
        units: dict[int, int] = {}
        held: list[ast.AST] = []
        for top in statements:
            for child in ast.walk(top):
                if not isinstance(child, ast.stmt):
                    continue
                found.append(child)
                # Statements the rewrite added (``break`` for a return) have no line:
                # they report the line of the statement before them.
                line = getattr(child, "lineno", None) or (lines[-1] if lines
                                                          else body.firstlineno)
                own: dict[int, int] = {}
                # A node the rewrite made (a global read through its module) has the line
                # of the node around it.
                pending: list[tuple[ast.AST, int]] = [(child, line)]
                while pending:
                    each, around = pending.pop()
                    at = getattr(each, "lineno", None) or around
                    if at not in own:
                        own[at] = len(lines)
                        lines.append(at)
                    units[id(each)] = own[at]
                    held.append(each)
                    pending.extend((sub, at) for sub in ast.iter_child_nodes(each)
                                   if not isinstance(sub, ast.stmt))
        return cls(node, tuple(found), tuple(lines), body, units, tuple(held))


def _locate_origins(fn: ast.FunctionDef | ast.AsyncFunctionDef,
                    blocks: list[tuple[_Origins, Span]], imported: frozenset[str]) -> None:
    """Let a failure in inlined code name the handler's own line, with clean positions.

    Every inlined node carries the position of its handler's name in the routing table, so a
    traceback shows that line with the caret under the handler. Which inlined statement
    raised is told by the instruction that raised: a copy of the method is compiled with the
    nodes of the k-th unit (the nodes of one inlined statement on one handler line,
    :class:`_Origins`) given the *end line* ``routing line + 1 + k`` (unique across the
    method's blocks), and its ``co_positions`` give, per instruction, the unit and so the
    handler line. Those runs go to ``_mycelium_inline.located`` with a digest of the
    bytecode they were read from. The method itself keeps plain positions: carrying the
    encoding in the real code put end lines past the routing file's last line and made
    tracebacks underline to the end of the line (issue 11.6).
    """
    base = 0
    encoded: list[tuple[_Origins, Span, int]] = []
    for number, (origins, span) in enumerate(blocks):
        _place_statements(origins, span, base)
        # A distinct placeholder per block: constants are deduplicated, and the copy must
        # number its constants as the real method will.
        _set_origin_table(origins, span, ("block", number))
        encoded.append((origins, span, base))
        base += len(origins.lines)
    code = _compiled_alone(fn, {m for origins, _ in blocks for m in origins.body.modules},
                           imported)
    positions = list(code.co_positions())
    for origins, span, first in encoded:
        runs = _runs(positions, span.lineno + 1 + first, origins.lines)
        body = origins.body
        _set_origin_table(origins, span, (body.filename, body.qualname, body.firstlineno,
                                          code_crc_of(code), runs))
        _place_statements(origins, span, None)


def _compiled_alone(fn: ast.FunctionDef | ast.AsyncFunctionDef, modules: set[str],
                    imported: frozenset[str] = frozenset()) -> CodeType:
    """``fn`` compiled as the module will compile it. The aliases it reads are imported first:
    the compiler emits a different (shorter) call for ``alias.f(...)`` when ``alias`` is bound
    by an import, and the instruction offsets must be those of the real method. So are the
    names the routing module imports itself (``imported``): the compiler asks the *module's*
    table whether a name is imported, even for a local of the same name, so with ``from app
    import h1`` at the top an inlined ``h1.scaled(...)`` (``h1``: the emit's local holding the
    handler) compiled to other instructions than in this copy, the digest never matched, and
    every failure's note named the handler's first line (found by tests/test_stranger4_fuzz4)."""
    imports = [f"import {m} as {module_alias(m)}" for m in sorted(modules)]
    imports += [f"import _mycelium_unused as {name}" for name in sorted(imported)]
    imports += [f"import mycelium_mono.monolith as {SUPPORT}",
                f"import mycelium_mono.routing.inline as {INLINE_SUPPORT}",
                f"import builtins as {BUILTINS_ALIAS}"]
    module = ast.Module(body=[*ast.parse("\n".join(imports)).body, copy.deepcopy(fn)],
                        type_ignores=[])
    compiled = compile(ast.fix_missing_locations(module), "<mycelium-mono positions>", "exec",
                       dont_inherit=True)
    return next(c for c in compiled.co_consts if isinstance(c, CodeType))


def _runs(positions: list[tuple[int | None, int | None, int | None, int | None]], first: int,
          lines: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """``(first instruction, end instruction, handler line)`` for each run of instructions
    whose encoded end line names one of this block's statements."""
    runs: list[list[int]] = []
    for index, (_, end, _, _) in enumerate(positions):
        k = -1 if end is None else end - first
        if not 0 <= k < len(lines):
            continue
        if runs and runs[-1][1] == index and runs[-1][2] == lines[k]:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1, lines[k]])
    return tuple((a, b, line) for a, b, line in runs)


def _set_origin_table(origins: _Origins, span: Span, table: tuple[object, ...]) -> None:
    """The ``except`` hands ``table`` to ``_mycelium_inline.located``."""
    recorded = origins.node.handlers[0].body[0]
    assert isinstance(recorded, ast.Assign) and isinstance(recorded.value, ast.Tuple)
    call = recorded.value.elts[-1]  # failure = index, _mycelium_inline.located(exc, table)
    assert isinstance(call, ast.Call)
    call.args[-1] = ast.parse(repr(table), mode="eval").body
    _place(call.args[-1], span)


def _place_statements(origins: _Origins, span: Span, base: int | None) -> None:
    """Every inlined node at the handler's name; with ``base``, the end line of a node of unit
    k is ``span.lineno + 1 + base + k`` (the encoding :func:`_locate_origins` reads)."""
    for statement in origins.statements:
        # Each node with its unit; one put in after the units were read (the service read
        # in place of a single-use alias) goes with the node around it.
        nodes: list[tuple[ast.AST, int]] = []
        pending: list[tuple[ast.AST, int]] = [(statement, origins.units[id(statement)])]
        while pending:
            node, around = pending.pop()
            unit = origins.units.get(id(node), around)
            nodes.append((node, unit))
            pending.extend((sub, unit) for sub in ast.iter_child_nodes(node)
                           if not isinstance(sub, ast.stmt))
        # For `obj.method(...)` 3.11 starts the call's location at the attribute's *end*
        # line when the attribute spans lines: the attribute keeps the plain position.
        methods = {id(n.func) for n, _ in nodes if isinstance(n, ast.Call)
                   and isinstance(n.func, ast.Attribute)}
        for node, k in nodes:
            where = span if base is None else Span(span.lineno, span.col_offset,
                                                   span.lineno + 1 + base + k,
                                                   span.end_col_offset)
            _place(node, span if id(node) in methods else where, shallow=True)


def _place_handlers(fn: ast.FunctionDef | ast.AsyncFunctionDef,
                    calls: tuple[HandlerCall, ...]) -> None:
    """Each handler's ``try`` (and its ``hN = ...`` load) points at that handler's name."""
    block = _handler_block(fn)
    tries = [node for node in block if isinstance(node, ast.Try)]
    for node, call in zip(tries, calls, strict=True):
        _place(node, call.ref.span)
    for stmt in block:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            target = stmt.targets[0].id
            if target.startswith("h") and target[1:].isdigit():
                _place(stmt, calls[int(target[1:]) - 1].ref.span)
        elif (index := _resumes_at(stmt)) is not None:
            _place(stmt, calls[index].ref.span)


def _resumes_at(stmt: ast.stmt) -> int | None:
    """The handler index of a guard re-check ``if not self._mycelium_inline_ok: return
    self._resume_calls(emit, msg, index)``, or None for any other statement."""
    if not (isinstance(stmt, ast.If) and isinstance(stmt.body[0], ast.Return)):
        return None
    call = stmt.body[0].value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "_resume_calls"):
        return None
    index = call.args[-1]
    assert isinstance(index, ast.Constant) and isinstance(index.value, int)
    return index.value


def _stmt(source: str) -> ast.stmt:
    return ast.parse(source).body[0]


def _place_all(nodes: list[ast.stmt], span: Span) -> None:
    for node in nodes:
        _place(node, span)


def _place(node: ast.AST, span: Span, *, shallow: bool = False) -> None:
    """Give ``node`` (and, unless shallow, its subtree) the source position ``span``."""
    for child in [node] if shallow else ast.walk(node):
        if "lineno" in child._attributes:
            child.lineno = span.lineno  # type: ignore[attr-defined]
            child.col_offset = span.col_offset  # type: ignore[attr-defined]
            child.end_lineno = span.end_lineno  # type: ignore[attr-defined]
            child.end_col_offset = span.end_col_offset  # type: ignore[attr-defined]
