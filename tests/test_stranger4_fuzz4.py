"""A stranger's differential attack on monolith code generation and the inliner (round 4).

Earlier rounds drew handler *bodies* and class *structures*; this one draws where a handler's
method comes from and what its names collide with: a module-level function assigned as
``handle = record``, a method borrowed from an unrelated class (``handle = Donor.handle``),
diamond hierarchies over a mixin (the MRO picks the right-hand base's method), ``super()``
zero-arg and two-arg, ``functools.wraps`` decorators, plain ``@handles`` classes, classes in
the routing module itself; private names (``self.__n``, a local ``__p``) that the compiler
mangles with the class the method was written in; locals named like the emit's own names
(``h1``, ``h2_a``, ``returned_h1``, ``msg``, ``exc``, ``failure``, ``_``, ``self`` when the
instance parameter is ``this``); classmethod, staticmethod and property reads; lambdas,
comprehensions and generator expressions capturing ``self`` and the message; ``match``,
walrus, ``del``, ``assert``, loops with ``else``; ``return`` inside ``try/finally`` and inside a
suppressing ``with``; ``except*``, bare re-raise, ``while``/``else``; handlers typed through a
generic base (``class Tap(Relay[A])``); re-entrant emits of the same type (bounded) and emits to
a second bus that shares a plain handler instance with the first.

Each program is imported by five builds: the import hook and the run-time decorator, each with
``inline=True`` and ``inline=False``, and the hook's inline build imported a second time from
its bytecode cache. Each must leave what plain hand-written calls of the same methods leave:
the log of side effects in order, ``sys.exception()`` as each handler saw it, every service's
state, and each emit's outcome (failure types, texts and grouping, what each failure is
chained to, and the handler file, line and text each failure points at: a call's last frame,
or the note an inlined body's failure carries).

The focused tests above the generator each hold one difference it found (fixed in
``mycelium_mono/routing``): run without the fix, each fails.
"""

from __future__ import annotations

import importlib
import linecache
import random
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_shapes import inlined, write_package

from mycelium_mono.handlers import attach_emitter
from mycelium_mono.messages import snake_case
from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.hook import Outcome, import_records, install_import_hook

PACKAGE = "fz4"

MESSAGES = """
from mycelium_mono import message, I64

@message(type_id=64411, topic="fz4.a")
class A:
    value: I64

@message(type_id=64412, topic="fz4.b")
class B:
    value: I64
"""

@pytest.fixture(autouse=True)
def writes_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached build needs the hook's cache written (the test run may not write .pyc)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


BUILDS = ("hook-inline", "hook-call", "runtime-inline", "runtime-call", "cached-inline")


def load(root: Path, build: str, modules: dict[str, str]) -> ModuleType:
    """Import ``fz4.routing`` by ``build``; ``cached-inline`` re-imports the hook-inline
    package and insists the hook took it from its cache."""
    path, mode = build.split("-")
    inline = mode == "inline"
    base = root / ("hook-inline" if path == "cached" else build)
    if path != "cached":
        texts = {name: text.replace("INLINE", str(inline)) for name, text in modules.items()}
        write_package(base, PACKAGE, {"messages": MESSAGES, **texts})
    forget_modules(PACKAGE)
    importlib.invalidate_caches()
    sys.path.insert(0, str(base))
    manager = None if path == "runtime" else install_import_hook([PACKAGE])
    try:
        module = importlib.import_module(f"{PACKAGE}.routing")
    finally:
        if manager is not None:
            manager.uninstall()
        sys.path.remove(str(base))
    origin = module.Main.__mycelium_origin__
    assert origin == ("runtime" if path == "runtime" else "import hook"), (build, origin)
    if path == "cached":
        outcome = import_records()[f"{PACKAGE}.routing"].outcome
        assert outcome is Outcome.CACHE_HIT, import_records()[f"{PACKAGE}.routing"].describe()
    return module


class HandWritten:
    """One bus written by hand: each routed method called in order, failures gathered."""

    def __init__(self, name: str, services: dict[str, Any],
                 routes: dict[str, list[tuple[str, str]]]) -> None:
        self.name = name
        self.services = services
        self.routes = routes
        for service in services.values():
            attach_emitter(service, self.emit)

    def emit(self, msg: Any) -> None:
        kind = type(msg).__name__
        failures: list[tuple[str, Exception]] = []
        for attr, method in self.routes[kind]:
            try:
                getattr(self.services[attr], method)(msg)
            except Exception as exc:
                failures.append((f"{attr}.{method}", exc))
        if failures:
            names = ", ".join(where for where, _ in failures)
            raise ExceptionGroup(f"{self.name}.emit_{snake_case(kind)}: {len(failures)} "
                                 f"handler(s) failed ({names})", [exc for _, exc in failures])


def describe(exc: BaseException) -> Any:
    if isinstance(exc, BaseExceptionGroup):
        return ("group", exc.message, tuple(describe(e) for e in exc.exceptions))
    return (type(exc).__name__, str(exc))


def chained(exc: BaseException) -> Any:
    """What each failure is chained to (``__context__``, ``__cause__``), as types."""
    if isinstance(exc, BaseExceptionGroup):
        return tuple(chained(e) for e in exc.exceptions)
    return tuple(None if e is None else (type(e).__name__, str(e))
                 for e in (exc.__context__, exc.__cause__))


_INLINED_AT = re.compile(r"^inlined \S+ raised at (.+):(\d+): (.*)$", re.MULTILINE)


def raised_at(exc: BaseException) -> Any:
    """Where each failure a handler body raised itself points: the handler's own file, line
    and text (a call: its last frame; inlined: the note naming the handler's line)."""
    if isinstance(exc, BaseExceptionGroup):
        return tuple(raised_at(e) for e in exc.exceptions)
    if not isinstance(exc, ValueError | AssertionError):
        return None   # raised in a callee: a call's last frame is the callee's, by design
    for note in getattr(exc, "__notes__", ()):
        found = _INLINED_AT.match(note)
        if found:
            return Path(found[1]).name, int(found[2]), found[3]
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    assert tb is not None
    code = tb.tb_frame.f_code
    return (Path(code.co_filename).name, tb.tb_lineno,
            linecache.getline(code.co_filename, tb.tb_lineno).strip())


def state_of(service: Any) -> dict[str, str]:
    return {k: repr(v) for k, v in sorted(vars(service).items()) if k != "emit"}


# --- the private name of a module-level function assigned as `handle` --------------------------

RECORD_HANDLERS = """
from mycelium_mono import MessageHandler
from fz4.messages import A, B

LOG = []


def record(self, m):
    self.__last = m.value                  # written outside a class: no mangling
    LOG.append(("record", self.__last, getattr(self, "__last", "missing")))


class Recorder(MessageHandler[A]):
    handle = record
"""

RECORD_ROUTING = """
from mycelium_mono import routing_config
from fz4.messages import A, B  # noqa: F401
from fz4.handlers import Recorder


@routing_config(inline=INLINE)
class Main:
    A = [Recorder]
"""


@pytest.mark.parametrize("build", BUILDS)
def test_a_module_function_assigned_as_handle_sets_the_attribute_a_call_sets(
        tmp_path: Path, build: str) -> None:
    # Inlined into the bus's class statement, `self.__last` was mangled to `self._Main__last`:
    # the state and the log differed from calling `Recorder().handle(A(5))`.
    modules = {"handlers": RECORD_HANDLERS, "routing": RECORD_ROUTING}
    if build == "cached-inline":
        load(tmp_path, "hook-inline", modules)
    try:
        routing = load(tmp_path, build, modules)
        handlers = sys.modules[f"{PACKAGE}.handlers"]
        recorder = handlers.Recorder()
        routing.Main(recorder=recorder).emit_a(handlers.A(5))
        assert handlers.LOG == [("record", 5, 5)]
        assert state_of(recorder) == {"__last": "5"}
        if build.endswith("inline"):
            [note] = routing.Main.__mycelium_notes__
            assert note[3] == "call" and "`__last`" in note[4], note
    finally:
        forget_modules(PACKAGE)


# --- an UnboundLocalError the handler catches itself ---------------------------------------------

UNBOUND_HANDLERS = """
from mycelium_mono import MessageHandler
from fz4.messages import A, B

LOG = []


class Checker(MessageHandler[A]):
    def handle(self, m):
        if m.value > 0:
            pending = m.value
        try:
            LOG.append(("pending", pending))
        except UnboundLocalError as e:
            LOG.append(("caught", str(e)))
"""

UNBOUND_ROUTING = RECORD_ROUTING.replace("Recorder", "Checker")


FREE_HANDLERS = """
from mycelium_mono import MessageHandler
from fz4.messages import A, B

LOG = []


class Late(MessageHandler[A]):
    def handle(self, m):
        try:
            LOG.append(sum(len(pending) for _ in "a"))   # `pending`: a local, unbound yet
        except NameError as e:
            LOG.append(("caught", str(e)))
        if m.value > 1:
            sum(len(pending) for _ in "a")               # escapes
        pending = [m.value]
"""


@pytest.mark.parametrize("build", BUILDS)
def test_an_unbound_local_read_by_a_generator_expression_is_named_as_written(
        tmp_path: Path, build: str) -> None:
    # The generator expression's own frame raised "cannot access free variable 'h0_pending'".
    modules = {"handlers": FREE_HANDLERS, "routing": UNBOUND_ROUTING.replace("Checker", "Late")}
    if build == "cached-inline":
        load(tmp_path, "hook-inline", modules)
    try:
        routing = load(tmp_path, build, modules)
        handlers = sys.modules[f"{PACKAGE}.handlers"]
        bus = routing.Main(late=handlers.Late())
        with pytest.raises(ExceptionGroup) as caught:
            bus.emit_a(handlers.A(2))
        text = ("cannot access free variable 'pending' where it is not associated with a "
                "value in enclosing scope")
        assert [("caught", text)] == handlers.LOG
        assert describe(caught.value.exceptions[0]) == ("NameError", text)
        assert inlined(routing.Main) == ({"late"} if build.endswith("inline") else set())
    finally:
        forget_modules(PACKAGE)


@pytest.mark.parametrize("build", BUILDS)
def test_an_unbound_local_caught_by_the_handler_names_the_local_as_written(
        tmp_path: Path, build: str) -> None:
    # Inlined, the handler's own `str(e)` read "cannot access local variable 'h0_pending'".
    modules = {"handlers": UNBOUND_HANDLERS, "routing": UNBOUND_ROUTING}
    if build == "cached-inline":
        load(tmp_path, "hook-inline", modules)
    try:
        routing = load(tmp_path, build, modules)
        handlers = sys.modules[f"{PACKAGE}.handlers"]
        bus = routing.Main(checker=handlers.Checker())
        bus.emit_a(handlers.A(-1))
        bus.emit_a(handlers.A(2))
        assert handlers.LOG == [
            ("caught", "cannot access local variable 'pending' where it is not associated "
                       "with a value"),
            ("pending", 2)]
        assert inlined(routing.Main) == ({"checker"} if build.endswith("inline") else set())
    finally:
        forget_modules(PACKAGE)


# --- a global that every module object has as an attribute, but no namespace holds ---------------

DUNDER_HANDLERS = """
from mycelium_mono import MessageHandler
from fz4.messages import A, B

LOG = []


class Peeker(MessageHandler[A]):
    def handle(self, m):
        try:
            LOG.append(("dict", type(__dict__).__name__))
        except NameError as e:
            LOG.append(("NameError", str(e)))
        LOG.append(("name", __name__))
"""

DUNDER_ROUTING = RECORD_ROUTING.replace("Recorder", "Peeker")


@pytest.mark.parametrize("build", BUILDS)
def test_a_global_named_like_a_module_attribute_raises_name_error_as_in_a_call(
        tmp_path: Path, build: str) -> None:
    # `__dict__` is no global and no builtin (a module *object* has it as an attribute):
    # inlined, it was read as `builtins.__dict__` and the handler logged a dict.
    modules = {"handlers": DUNDER_HANDLERS, "routing": DUNDER_ROUTING}
    if build == "cached-inline":
        load(tmp_path, "hook-inline", modules)
    try:
        routing = load(tmp_path, build, modules)
        handlers = sys.modules[f"{PACKAGE}.handlers"]
        routing.Main(peeker=handlers.Peeker()).emit_a(handlers.A(1))
        assert handlers.LOG == [("NameError", "name '__dict__' is not defined"),
                                ("name", "fz4.handlers")]
    finally:
        forget_modules(PACKAGE)


# --- a routing module's own global named like the generated code's ----------------------------

CLASH_ROUTING = """
from mycelium_mono import routing_config
from fz4.messages import A, B  # noqa: F401
from fz4.handlers import Counter

_mycelium_builtins = "the module's own"


@routing_config(inline=INLINE)
class Main:
    A = [Counter]
"""

CLASH_HANDLERS = """
from mycelium_mono import MessageHandler
from fz4.messages import A, B

LOG = []


class Counter(MessageHandler[A]):
    def handle(self, m):
        LOG.append(len([m.value]))
"""


@pytest.mark.parametrize("build", BUILDS[:4])
def test_a_routing_module_global_named_like_the_generated_imports_is_refused_with_a_caret(
        tmp_path: Path, build: str) -> None:
    # The hook imported builtins as `_mycelium_builtins` first and the module rebound it
    # (the inlined `len` became `"the module's own".len`: AttributeError); the run-time build
    # imported it afterwards and the module's own global became the builtins module.
    from mycelium_mono import RoutingError
    modules = {"handlers": CLASH_HANDLERS, "routing": CLASH_ROUTING}
    try:
        with pytest.raises(RoutingError) as caught:
            load(tmp_path, build, modules)
        text = str(caught.value)
        assert "[E0011]" in text and "`_mycelium_builtins`" in text, text
        assert "routing.py:6:1" in text and "\n  | ^^^^^^^^^^^^^^^^^^\n" in text, text
    finally:
        forget_modules(PACKAGE)


# --- handlers typed through a generic base: class Tap(Relay[A]) over Relay(MessageHandler[T]) ----

GENERIC_HANDLERS = """
from typing import Generic, TypeVar
from mycelium_mono import MessageHandler, handles
from fz4.messages import A, B

T = TypeVar("T")
LOG = []


class Relay(MessageHandler[T]):
    def handle(self, m):
        LOG.append((type(self).__name__, "relay", type(m).__name__, m.value))


class Tap(Relay[A]):
    pass


class Keeper(Generic[T]):
    @handles(B)
    def on_b(self, m):
        LOG.append((type(self).__name__, "keeper", m.value))
"""

GENERIC_ROUTING = """
from typing import Generic, TypeVar
from mycelium_mono import MessageHandler, routing_config
from fz4.messages import A, B
from fz4.handlers import LOG, Keeper, Relay, Tap

U = TypeVar("U")
V = TypeVar("V")


class Near(Relay[B]):
    pass


class Local(MessageHandler[U]):
    def handle(self, m):
        LOG.append((type(self).__name__, "local", type(m).__name__, m.value))


class Pair(Local[V], Generic[U, V]):
    pass


class Second(Pair[A, B]):              # Pair's V is its second parameter: B
    pass


class Kept(Keeper[int]):
    pass


@routing_config(inline=INLINE)
class Main:
    A = [Tap]
    B = [Near, Second, Kept]
"""


@pytest.mark.parametrize("build", BUILDS)
def test_a_handler_typed_through_a_generic_base_is_routed_alike_by_every_build(
        tmp_path: Path, build: str) -> None:
    # `class Tap(Relay[A])` is a MessageHandler[A] to a type checker; every build said
    # "Tap does not handle A (handles: nothing)". A routing-module class over a subscripted
    # compiled base (`class Kept(Keeper[int])`) lost that base's @handles on the hook only.
    modules = {"handlers": GENERIC_HANDLERS, "routing": GENERIC_ROUTING}
    if build == "cached-inline":
        load(tmp_path, "hook-inline", modules)
    try:
        routing = load(tmp_path, build, modules)
        handlers = sys.modules[f"{PACKAGE}.handlers"]
        services = {"tap": handlers.Tap(), "near": routing.Near(), "second": routing.Second(),
                    "kept": routing.Kept()}
        bus = routing.Main(**services)
        bus.emit(handlers.A(1))
        bus.emit(handlers.B(2))
        got = list(handlers.LOG)
        handlers.LOG.clear()
        bus.detach()
        by_hand = HandWritten("Main", services, {
            "A": [("tap", "handle")],
            "B": [("near", "handle"), ("second", "handle"), ("kept", "on_b")]})
        by_hand.emit(handlers.A(1))
        by_hand.emit(handlers.B(2))
        assert got == handlers.LOG == [("Tap", "relay", "A", 1), ("Near", "relay", "B", 2),
                                       ("Second", "local", "B", 2), ("Kept", "keeper", 2)]
        if build.endswith("inline"):
            assert inlined(routing.Main) == {"tap", "near", "second", "kept"}
    finally:
        forget_modules(PACKAGE)


@pytest.mark.parametrize("build", BUILDS[:4])
def test_a_generic_base_bound_to_another_message_is_refused_alike_by_every_build(
        tmp_path: Path, build: str) -> None:
    from mycelium_mono import RoutingError
    routing_text = GENERIC_ROUTING.replace("    A = [Tap]\n", "    A = [Tap, Second]\n")
    modules = {"handlers": GENERIC_HANDLERS, "routing": routing_text}
    try:
        with pytest.raises(RoutingError) as caught:
            load(tmp_path, build, modules)
        errors = [line for line in str(caught.value).splitlines() if "error[" in line]
        assert len(errors) == 1 and "[E0001]: Second does not handle A" in errors[0], errors
    finally:
        forget_modules(PACKAGE)


def test_the_flexible_bus_reads_the_same_message_from_a_generic_base() -> None:
    from typing import TypeVar

    from mycelium_mono import MessageHandler
    from mycelium_mono.handlers import handled_messages
    from mycelium_mono.messages import I64, message

    @message(type_id=64419, topic="fz4.generic")
    class Ping:
        value: I64

    t = TypeVar("t")

    class Relay(MessageHandler[t]):
        def handle(self, m: t) -> None:
            pass

    class Tap(Relay[Ping]):
        pass

    assert {k: v.method for k, v in handled_messages(Tap).items()} == {Ping: "handle"}
    assert handled_messages(Relay) == {}


# --- the note of a failure in inlined code names the line that raised --------------------------

WHERE_HANDLERS = """
from mycelium_mono import MessageHandler
from fz4.messages import A, B

LOG = []


class Twice(MessageHandler[A]):
    def handle(self, m):
        LOG.append([v + m.value for v in (1, 2)])
        LOG.append([v + m.value for v in (1, 2)])      # an equal comprehension
        if m.value == 1:
            raise ValueError("twice")
"""

WHERE_ROUTING = """
from mycelium_mono import MessageHandler, routing_config
from fz4.messages import A, B  # noqa: F401
from fz4.handlers import LOG, Twice


class Here(MessageHandler[A]):
    def handle(self, m):
        LOG.append(m.value)                 # LOG: imported by this module
        if m.value == 2:
            raise ValueError("here")


@routing_config(inline=INLINE)
class Main:
    A = [Twice, Here]
"""


@pytest.mark.parametrize("build", BUILDS)
def test_a_failure_in_inlined_code_names_the_handler_line_that_raised(
        tmp_path: Path, build: str) -> None:
    # The note named each handler's `def` line instead: the copy the line table is read from
    # compiled to other bytecode than the emit (equal comprehensions are one constant in the
    # emit; and the hook's module imports LOG, which changes how `LOG.append(...)` compiles).
    modules = {"handlers": WHERE_HANDLERS, "routing": WHERE_ROUTING}
    if build == "cached-inline":
        load(tmp_path, "hook-inline", modules)
    try:
        routing = load(tmp_path, build, modules)
        handlers = sys.modules[f"{PACKAGE}.handlers"]
        bus = routing.Main(twice=handlers.Twice(), here=routing.Here())
        where = []
        for value in (1, 2):
            with pytest.raises(ExceptionGroup) as caught:
                bus.emit_a(handlers.A(value))
            [exc] = caught.value.exceptions
            where.append(raised_at(exc))
        assert where == [
            ("handlers.py", 13, 'raise ValueError("twice")'),
            ("routing.py", 11, 'raise ValueError("here")')], where
        assert inlined(routing.Main) == ({"twice", "here"} if build.endswith("inline") else set())
    finally:
        forget_modules(PACKAGE)


# --- a message routed under a private name ---------------------------------------------------

PRIVATE_ROUTING = """
from mycelium_mono import routing_config
from fz4.messages import A as __A, B  # noqa: F401
from fz4.handlers import Counter


@routing_config(inline=INLINE)
class Main:
    __A = [Counter]
"""


@pytest.mark.parametrize("build", BUILDS[:4])
def test_a_message_routed_under_a_private_name_is_a_routing_error_not_a_name_error(
        tmp_path: Path, build: str) -> None:
    # The class body mangles `__A`, and so did the generated `{__A: 'emit___a'}`: every build
    # failed with "NameError: name '_Main__A' is not defined" instead of a routing error.
    from mycelium_mono import RoutingError
    modules = {"handlers": CLASH_HANDLERS, "routing": PRIVATE_ROUTING}
    try:
        with pytest.raises(RoutingError) as caught:
            load(tmp_path, build, modules)
        text = str(caught.value)
        assert "routing.py:9:5: error[E0007]: `__A` is a private name" in text, text
        assert "\n  |     ^^^\n" in text, text
    finally:
        forget_modules(PACKAGE)


# --- generated programs -------------------------------------------------------------------------

COMMON = '''
import functools
import sys
from typing import TypeVar
from mycelium_mono import MessageHandler, handles
from fz4.messages import A, B

T = TypeVar("T")
LOG = []
OTHER = []                                  # [the Side bus], set by the driver
h1 = "module h1"                            # globals named like the emit's own locals
msg = "module msg"
failure = "module failure"
returned_h1 = "module returned_h1"


def ex():
    e = sys.exception()
    return None if e is None else type(e).__name__


class Swallow:
    def __enter__(self):
        LOG.append(("enter", ex()))
        return self

    def __exit__(self, et, ev, tb):
        LOG.append(("exit", None if et is None else et.__name__, ex()))
        return True


def logged(fn):
    @functools.wraps(fn)
    def wrapper(self, m):
        LOG.append(("wrapped", fn.__name__, m.value))
        return fn(self, m)
    return wrapper


class Mixin:
    SCALE = 3

    def note(self, tag):
        LOG.append(("note", type(self).__name__, tag))
        return tag

    @classmethod
    def scaled(cls, v):
        return v * cls.SCALE

    @staticmethod
    def clamp(v):
        return max(-40, min(40, v))

    @property
    def weight(self):
        LOG.append(("weight", type(self).__name__))
        return len(LOG) % 5


class Root(Mixin, MessageHandler[A]):
    def __init__(self):
        self.k = 0

    def handle(self, m):
        LOG.append(("root", type(self).__name__, m.value, ex()))
        self.k += 1


class Tally:
    """A plain class: the Main and the Side bus share one instance."""
    def __init__(self):
        self.seen = []

    @handles(B)
    def on_b(self, m):
        LOG.append(("tally", m.value, ex()))
        self.seen.append(m.value)
        if m.value % 7 == 3:
            raise KeyError(m.value)
'''

LOCAL_IMPORT = ("from fz4.handlers import LOG, OTHER, Root, Mixin, Swallow, ex, h1, A, B  "
                "# noqa: F401\n")

SHAPES = ("own", "own", "func", "borrowed", "diamond", "super0", "super2", "wrapped", "plain",
          "local", "local", "generic", "generic_local")


class Program:
    """One seeded program: its handler and routing modules and the routes written by hand."""

    def __init__(self, seed: int, stations: int = 3) -> None:
        self.rng = random.Random(seed)
        self.handlers = [COMMON]
        self.local: list[str] = []
        self.routes: list[tuple[str, str]] = []
        self.classes: list[tuple[str, str]] = []   # (class name, module: handlers/routing)
        self.relays: list[str] = []                # generic bases the routing module imports
        for i in range(stations):
            self.station(i)

    # -- bodies

    def expr(self, depth: int = 0) -> str:
        r = self.rng
        atoms = ["a", "b", "S.k", "M.value", "1", "2", "5", "len(LOG) % 3", "S.weight",
                 "S.scaled(M.value % 4)", "S.clamp(M.value)", "type(S).SCALE", "(h1 or 0)"]
        if depth >= 2 or r.random() < 0.4:
            return r.choice(atoms)
        form = r.randrange(4)
        left, right = self.expr(depth + 1), self.expr(depth + 1)
        if form == 0:
            return f"({left} {r.choice(['+', '-', '*'])} {right})"
        if form == 1:
            return f"sum(x * {left} for x in range(abs({right}) % 3))"
        if form == 2:
            return f"[v + M.value for v in (S.k, {left})][-1]"
        return f"({left} if {right} % 2 else -1)"

    def cond(self) -> str:
        return f"{self.expr()} {self.rng.choice(['<', '>', '==', '!='])} {self.expr()}"

    def block(self, depth: int, in_loop: bool, emits: bool, n: int | None = None) -> list[str]:
        count = n if n is not None else self.rng.randint(1, 3)
        return [line for _ in range(count) for line in self.stmt(depth, in_loop, emits)]

    def stmt(self, depth: int, in_loop: bool, emits: bool) -> list[str]:
        r = self.rng
        kinds = ["assign", "assign", "k", "log", "private", "priv_local", "shadow", "raise",
                 "assert", "walrus", "comp", "helpers", "del", "unbound", "other", "return",
                 "reraise", "augglobal"]
        if emits:
            kinds += ["emit_b", "reenter"]
        if depth < 2:
            kinds += ["if", "for", "try", "with", "match", "while", "trystar"]
        if in_loop:
            kinds += ["break", "continue"]
        if r.random() < 0.015:
            kinds = ["lambda"]
        kind = r.choice(kinds)
        tag = r.randrange(100)

        def sub(loop: bool = in_loop) -> list[str]:
            return ["    " + s for s in self.block(depth + 1, loop, emits)]

        if kind == "assign":
            return [f"{r.choice(['a', 'b'])} = {self.expr()}"]
        if kind == "k":
            return [f"S.k += {self.expr()}"]
        if kind == "log":
            return [f"LOG.append(('v', {tag}, {self.expr()}, ex()))"]
        if kind == "private":
            return [f"S.__n = {self.expr()}", "LOG.append(('private', S.__n))"]
        if kind == "priv_local":
            return [f"__p = {self.expr()}", "LOG.append(('priv local', __p))"]
        if kind == "shadow":
            name = r.choice(["h1", "h2_a", "returned_h1", "returning_h1", "msg", "exc",
                             "failure", "_", "h0"])
            return [f"{name} = {self.expr()}", f"LOG.append(('shadow', {name!r}, {name}))"]
        if kind == "raise":
            return [f"if {self.cond()}:", f"    raise ValueError(f'{tag} {{M.value}}')"]
        if kind == "reraise":     # the caller's exception when the emit runs in an except
            return [f"if {self.cond()}:", "    raise"]
        if kind == "augglobal":   # LOG is a global until the body assigns it: then a local
            return ["try:", "    LOG += ()", "except UnboundLocalError as e:",
                    "    unused = str(e)", "    LOG = sys.modules[Root.__module__].LOG",
                    "    LOG.append(('aug', unused))"]
        if kind == "trystar":
            return ["try:", *sub(), "except* (ValueError, AssertionError) as eg:",
                    "    LOG.append(('star', len(eg.exceptions), ex()))",
                    f"    S.k += {tag}"]
        if kind == "while":
            lines = ["n = 0", f"while (n := n + 1) < {tag % 4}:", *sub(True)]
            return lines + (["else:", *sub()] if r.random() < 0.5 else [])
        if kind == "assert":
            return [f"assert {self.cond()}, ('assert', {tag})"]
        if kind == "walrus":
            return [f"if (w := {self.expr()}) % 2:", "    LOG.append(('walrus', w))"]
        if kind == "comp":
            return [f"LOG.append(('comp', [x * S.k + M.value for x in range({tag % 3})], "
                    "{k: M.value for k in (S.k,)}, sorted({b, a})))"]
        if kind == "helpers":
            return [f"LOG.append(('helpers', S.note({tag}), S.scaled(a), type(S).clamp(b)))"]
        if kind == "del":
            return ["t = a", "del t"]
        if kind == "unbound":
            return ["try:", "    del u", "except UnboundLocalError as e:",
                    "    LOG.append(('unbound', str(e)))", "u = 1"]
        if kind == "other":
            return [f"OTHER[0].emit(B({self.expr()}))"]
        if kind == "emit_b":
            return ["try:", f"    S.emit(B({self.expr()}))", "except ExceptionGroup as g:",
                    "    LOG.append(('caught', g.message, ex()))"]
        if kind == "reenter":
            return ["if M.value > 0 and len(LOG) < 120:", "    S.emit(A(M.value - 9))"]
        if kind == "return":
            return [r.choice(["return", f"return {self.expr()}", "return Swallow()"])]
        if kind == "lambda":
            return [f"f = lambda v: v + S.k + M.value + {tag}", "LOG.append(('lambda', f(a)))"]
        if kind in ("break", "continue"):
            return [f"if {self.cond()}:", f"    {kind}"]
        if kind == "if":
            return [f"if {self.cond()}:", *sub(), "else:", *sub()]
        if kind == "for":
            lines = [f"for i in range({tag % 3}):", *sub(True)]
            return lines + (["else:", *sub()] if r.random() < 0.5 else [])
        if kind == "with":
            return ["with Swallow():", *sub()]
        if kind == "match":
            return ["match M.value % 3:", "    case 0:", *["    " + s for s in sub()],
                    "    case 1 if a > 0:", *["    " + s for s in sub()],
                    "    case _:", "        LOG.append(('match other', a))"]
        lines = ["try:", *sub(), "except (ValueError, AssertionError) as err:",
                 "    LOG.append(('except', type(err).__name__, ex()))", *sub()]
        if r.random() < 0.5:
            lines += ["finally:", "    LOG.append(('finally', ex()))",
                      *(["    return"] if r.random() < 0.3 else [])]
        return lines

    def body(self, this: str, m: str, emits: bool, extra: list[str] = ()) -> list[str]:
        lines = [f"a = {m}.value", "b = 1", *self.block(0, False, emits, self.rng.randint(2, 5)),
                 *extra, "LOG.append(('end', a, b))"]
        return [line.replace("S.", f"{this}.").replace("(S)", f"({this})").replace("M.", f"{m}.")
                for line in lines]

    # -- classes

    def method(self, name: str, lines: list[str], indent: str, this: str, m: str) -> str:
        inner = "\n".join(f"{indent}    {line}" for line in lines)
        return f"{indent}def {name}({this}, {m}):\n{inner}\n"

    def station(self, i: int) -> None:
        r = self.rng
        shape = r.choice(SHAPES)
        this = r.choice(["self", "self", "this"])
        m = r.choice(["m", "msg", "order"])
        name = f"S{i}"
        where = "handlers"
        if shape == "super0":
            extra = [f"super().handle({m})"]
        elif shape == "super2":
            extra = [f"super({name}, {this}).handle({m})"]
        else:
            extra = []
        body = self.body(this, m, emits=shape != "plain", extra=extra)
        if shape in ("own", "super0", "super2", "local"):
            text = f"\n\nclass {name}(Root):\n" + self.method("handle", body, "    ", this, m)
            if shape == "local":
                where = "routing"
        elif shape == "func":
            text = (f"\n\n{self.method(f'{name.lower()}_handle', body, '', this, m)}"
                    f"\n\nclass {name}(Root):\n    handle = {name.lower()}_handle\n")
        elif shape == "borrowed":
            text = (f"\n\nclass Donor{i}:\n{self.method('handle', body, '    ', this, m)}"
                    f"\n\nclass {name}(Root):\n    handle = Donor{i}.handle\n")
        elif shape == "diamond":
            text = (f"\n\nclass L{i}(Root):\n    pass\n\n\nclass R{i}(Root):\n"
                    f"{self.method('handle', body, '    ', this, m)}"
                    f"\n\nclass {name}(L{i}, R{i}):\n    pass\n")
        elif shape in ("generic", "generic_local"):
            # `Relay(MessageHandler[T])` subscripted `Relay[A]`: handles A, on every build.
            text = (f"\n\nclass Relay{i}(Mixin, MessageHandler[T]):\n    def __init__(self):\n"
                    f"        self.k = 0\n\n{self.method('handle', body, '    ', this, m)}")
            sub = f"\n\nclass {name}(Relay{i}[A]):\n    pass\n"
            if shape == "generic_local":     # Relay in the handler module, S here
                self.relays.append(f"Relay{i}")
                self.handlers.append(text)
                text, where = sub, "routing"
            else:
                text += sub
        elif shape == "wrapped":
            text = (f"\n\nclass {name}(Root):\n    @logged\n"
                    + self.method("handle", body, "    ", this, m))
        else:  # plain: @handles, no self.emit
            text = (f"\n\nclass {name}(Mixin):\n    def __init__(self):\n        self.k = 0\n\n"
                    f"    @handles(A)\n" + self.method("on_a", body, "    ", this, m))
        (self.local if where == "routing" else self.handlers).append(text)
        self.classes.append((name, where))
        self.routes.append((name.lower(), "on_a" if shape == "plain" else "handle"))

    def modules(self) -> dict[str, str]:
        imported = ", ".join([*(n for n, where in self.classes if where == "handlers"),
                              *self.relays])
        stations = ", ".join(n for n, _ in self.classes)
        routing = (
            "from mycelium_mono import routing_config\n"
            + LOCAL_IMPORT
            + (f"from fz4.handlers import Tally, {imported}\n" if imported
               else "from fz4.handlers import Tally\n")
            + "".join(self.local)
            + f"\n\n@routing_config(inline=INLINE)\nclass Main:\n    A = [{stations}]\n"
            "    B = [Tally]\n"
            "\n\n@routing_config(inline=INLINE)\nclass Side:\n    B = [Tally]\n")
        return {"handlers": "".join(self.handlers), "routing": routing}


FEED = [(5, False), (0, True), (13, False), (21, True), (-4, False), (9, False)]


def observe(program: Program, routing: ModuleType, by_hand: bool) -> Any:
    handlers = sys.modules[f"{PACKAGE}.handlers"]
    modules = {"handlers": handlers, "routing": routing}
    services: dict[str, Any] = {n.lower(): getattr(modules[w], n)() for n, w in program.classes}
    tally = handlers.Tally()
    if by_hand:
        main_routes = {"A": program.routes, "B": [("tally", "on_b")]}
        main: Any = HandWritten("Main", {**services, "tally": tally}, main_routes)
        side: Any = HandWritten("Side", {"tally": tally}, {"B": [("tally", "on_b")]})
    else:
        main = routing.Main(tally=tally, **services)
        side = routing.Side(tally=tally)
    handlers.OTHER[:] = [side]
    handlers.LOG.clear()
    outcomes = []
    for value, in_except in FEED:
        try:
            if in_except:
                try:
                    raise LookupError("outer")
                except LookupError:
                    main.emit(handlers.A(value))
            else:
                main.emit(handlers.A(value))
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append((describe(exc), raised_at(exc), chained(exc)))
    handlers.OTHER.clear()
    states = {attr: state_of(s) for attr, s in {**services, "tally": tally}.items()}
    return outcomes, list(handlers.LOG), states


SEEDS = range(60)


def test_generated_programs_behave_like_hand_written_calls_on_five_builds(
        tmp_path: Path) -> None:
    inlined_total = called_total = 0
    for seed in SEEDS:
        program = Program(seed)
        modules = program.modules()
        root = tmp_path / f"p{seed}"
        expected = None
        try:
            for build in BUILDS:
                routing = load(root, build, modules)
                if expected is None:
                    expected = observe(program, routing, by_hand=True)
                got = observe(program, routing, by_hand=False)
                if got != expected:
                    for key, a, b in zip(("outcomes", "log", "state"), got, expected,
                                         strict=True):
                        assert a == b, (seed, build, key, textwrap.indent(
                            modules["handlers"] + "\n# routing\n" + modules["routing"], "  "))
                if build.endswith("inline"):
                    notes = routing.Main.__mycelium_notes__
                    inlined_total += sum(n[3] == "inlined" for n in notes)
                    called_total += sum(n[3] == "call" for n in notes)
        finally:
            forget_modules(PACKAGE)
    # The programs exercise the inliner, not only the call path.
    assert inlined_total > called_total / 2, (inlined_total, called_total)
