"""Inlined handler bodies behave exactly like calls (issue 7).

A varied corpus of handlers (counters, branches, early returns, loops, clashing local names,
handlers that raise or emit downstream, module-level names) is written into a temporary
package whose routing module declares the same table twice, ``CallBus`` (``inline=False``)
and ``InlineBus`` (``inline=True``). Both run the same message sequence over fresh instances
and must leave identical state and raise identical failures. Every test runs through the
import hook and through the decorator's run-time path.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
import subprocess
import sys
import textwrap
import traceback
import unittest.mock
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mycelium_mono.messages import snake_case
from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.cache import cache_path
from mycelium_mono.routing.inline import guard_failures
from mycelium_mono.routing.pipeline import rewrite_module

PACKAGE = "inline_corpus"

MESSAGES = """
from mycelium_mono import message, I64

@message(type_id=57101, topic="inline.ping")
class Ping:
    value: I64

@message(type_id=57102, topic="inline.pong")
class Pong:
    value: I64
"""

HANDLERS = """
import functools
import math

from mycelium_mono import MessageHandler, handles
from inline_corpus.messages import Ping, Pong

LIMIT = 50
SCALE = 3
TABLE = {"a": 1, "b": 2}
COUNT = 0


def helper(x):
    return x * SCALE + 1


class Tally(MessageHandler[Ping]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += 1


class Brancher(MessageHandler[Ping]):
    def __init__(self):
        self.small = self.big = self.neg = 0
        self.last = None

    def handle(self, ping):
        v = ping.value
        if v < 0:
            self.neg += 1
            return
        elif v > LIMIT:
            self.big += helper(v)
            return self.big
        self.small += 1
        self.last = v


class Looper(MessageHandler[Ping]):
    def __init__(self):
        self.trace = []

    def handle(self, ping):
        returned = 0  # the name the inliner could pick for its own return flag
        for i in range(4):
            for j in range(3):
                returned += 1
                if i * j == ping.value % 7 and i:
                    self.trace.append((i, j, returned))
                    return
                if j == 2:
                    continue
            else:
                self.trace.append(-i)
        k = 0
        while k < ping.value % 5:
            k += 1
            if k == 3:
                break
        else:
            self.trace.append("no-break")
            return
        self.trace.append((k, returned))


class ClashA(MessageHandler[Ping]):
    \"\"\"Locals named like the generated emit's own names.\"\"\"

    def __init__(self):
        self.out = []

    def handle(self, m):
        msg = m.value + 1
        errors = [msg]
        exc = "a"
        h1 = h2 = len(errors)
        total = msg * h1
        self.out.append((msg, errors, exc, h2, total))


class ClashB(MessageHandler[Ping]):
    def __init__(self):
        self.out = []

    def handle(self, msg):
        total = 0
        for i in range(msg.value % 4):
            total += i
        i = -1
        self.out.append((total, i))


class Raiser(MessageHandler[Ping]):
    def __init__(self):
        self.before = self.after = 0

    def handle(self, ping):
        self.before += 1
        if ping.value % 4 == 3:
            raise ValueError(f"bad ping {ping.value}")
        if ping.value == 13:
            raise KeyError(ping.value)
        self.after += 1


class Forwarder(MessageHandler[Ping]):
    def __init__(self):
        self.forwarded = 0

    def handle(self, ping):
        if ping.value % 2 == 0:
            self.forwarded += 1
            self.emit(Pong(ping.value // 2))


class ModuleNames(MessageHandler[Ping]):
    def __init__(self):
        self.acc = []
        self.__private = 0

    def handle(self, ping):
        self.__private += 1
        self.acc.append((math.floor(ping.value / SCALE), TABLE.get("a"), helper(ping.value),
                         self.__private, len(self.acc), max(ping.value, LIMIT)))


class Comprehensions(MessageHandler[Ping]):
    def __init__(self):
        self.sums, self.keys, self.total, self.n, self.base = [], [], 0, 0, 10

    def handle(self, ping):
        LIMIT = 1
        vals = [ping.value * k for k in range(3) if k != LIMIT]
        self.sums.append(sum(vals) + sum(SCALE for SCALE in vals))
        squares = {k: k * k for k in vals}
        self.keys.append(sorted(squares))
        gen = (self.base + v for v in vals)
        self.total += sum(gen)
        if (n := len(vals)) > 1:
            self.n += n


class Matcher(MessageHandler[Ping]):
    def __init__(self):
        self.kinds = []

    def handle(self, ping):
        match ping.value % 6:
            case 0:
                self.kinds.append("zero")
            case 1 | 2 as small:
                self.kinds.append(("small", small))
            case other if other > 4:
                self.kinds.append(("big", other))
                return
            case _:
                pass
        self.kinds.append("end")


class TryFinally(MessageHandler[Ping]):
    def __init__(self):
        self.log = []

    def handle(self, ping):
        try:
            if ping.value % 3 == 0:
                return
            try:
                1 // (ping.value % 5)
            except ZeroDivisionError as e:
                self.log.append(type(e).__name__)
                return
            finally:
                self.log.append("inner-finally")
            self.log.append("body")
        finally:
            self.log.append("outer-finally")


class Rebinder(MessageHandler[Ping]):
    def __init__(self):
        self.values = []

    def handle(self, ping):
        ping = ping.value * 2
        self.values.append(ping)


class Downstream:
    def __init__(self):
        self.got = []

    @handles(Pong)
    def on_pong(self, pong):
        self.got.append(pong.value)
        if pong.value == 5:
            raise RuntimeError("five")


# -- handlers that must keep their call -------------------------------------------------------


class Base(MessageHandler[Ping]):
    def __init__(self):
        self.base_calls = 0
        self.own = 0

    def handle(self, ping):
        self.base_calls += 1


class UsesSuper(Base):
    def handle(self, ping):
        super().handle(ping)
        self.own += 1


def _make():
    bonus = 7

    def handle(self, ping):
        self.total += bonus

    return handle


class Closure(MessageHandler[Ping]):
    handle = _make()

    def __init__(self):
        self.total = 0


def logged(fn):
    @functools.wraps(fn)
    def wrapper(self, msg):
        self.calls += 1
        return fn(self, msg)

    return wrapper


class Decorated(MessageHandler[Ping]):
    def __init__(self):
        self.calls = self.total = 0

    @logged
    def handle(self, ping):
        self.total += ping.value


class UsesGlobal(MessageHandler[Ping]):
    def __init__(self):
        self.calls = 0

    def handle(self, ping):
        global COUNT
        COUNT += 1
        self.calls += 1


class Introspects(MessageHandler[Ping]):
    def __init__(self):
        self.names = []

    def handle(self, ping):
        self.names.append(sorted(locals()))


class Defaults(MessageHandler[Ping]):
    def __init__(self):
        self.total = 0

    def handle(self, ping, scale=2):
        self.total += ping.value * scale


class Lambdas(MessageHandler[Ping]):
    def __init__(self):
        self.out = []

    def handle(self, ping):
        self.out.append(sorted([3, 1, 2], key=lambda x: -x)[0] + ping.value)
"""

INLINED = ["Tally", "Brancher", "Looper", "ClashA", "ClashB", "Raiser", "Forwarder",
           "ModuleNames", "Comprehensions", "Matcher", "TryFinally", "Rebinder"]
"""Ping handlers the inliner must inline."""

KEPT_AS_CALLS = {
    "UsesSuper": "super()",
    "Closure": "closure over bonus",
    "Decorated": "decorated",
    "UsesGlobal": "global/nonlocal",
    "Introspects": "uses locals",
    "Defaults": "parameters",
    "Lambdas": "nested function, lambda",
}
"""Ping handlers that must keep their call, and a fragment of the reason recorded."""


def routing_source(ping: list[str], pong: list[str]) -> str:
    """A routing module with the same table twice: ``CallBus`` and ``InlineBus``."""
    names = sorted(set(ping) | set(pong))
    table = f"    Ping = [{', '.join(ping)}]\n    Pong = [{', '.join(pong)}]\n"
    return (
        "from mycelium_mono import routing_config\n"
        f"from {PACKAGE}.messages import Ping, Pong\n"
        f"from {PACKAGE}.handlers import {', '.join(names)}\n\n\n"
        "@routing_config(inline=False)\n"
        f"class CallBus:\n{table}\n\n"
        "@routing_config(inline=True)\n"
        f"class InlineBus:\n{table}"
    )


# -- loading the corpus -----------------------------------------------------------------------

PING = [*INLINED, *KEPT_AS_CALLS]
PONG = ["Downstream"]
VALUES = [*range(-3, 64), 13, 100, 5, 10, 0]


@dataclass(frozen=True)
class Loaded:
    routing: ModuleType
    handlers: ModuleType
    routing_path: Path


@pytest.fixture(params=["hook", "runtime"])
def load(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         monolith_hook: Any) -> Callable[..., Loaded]:
    """Write the corpus package and import its routing module through the hook or not."""
    path_kind = request.param

    def make(handlers: str = HANDLERS, ping: list[str] = PING, pong: list[str] = PONG,
             routing: str | None = None) -> Loaded:
        package = tmp_path / path_kind / PACKAGE
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "messages.py").write_text(textwrap.dedent(MESSAGES))
        (package / "handlers.py").write_text(textwrap.dedent(handlers))
        (package / "routing.py").write_text(routing or routing_source(ping, pong))
        forget_modules(PACKAGE)
        monkeypatch.syspath_prepend(str(package.parent))
        if path_kind == "hook":
            monolith_hook(PACKAGE)
        routing = importlib.import_module(f"{PACKAGE}.routing")
        expected = "import hook" if path_kind == "hook" else "runtime"
        assert routing.InlineBus.__mycelium_origin__ == expected
        return Loaded(routing, importlib.import_module(f"{PACKAGE}.handlers"),
                      package / "routing.py")

    yield make
    forget_modules(PACKAGE)


def build(loaded: Loaded, bus_name: str, **kwargs: Any) -> Any:
    bus_cls = getattr(loaded.routing, bus_name)
    services = {attr: cls() for attr, cls in bus_cls.__mycelium_services__.items()}
    return bus_cls(**services, **kwargs)


def describe(exc: BaseException) -> Any:
    """An exception as comparable data: type, text and, for a group, its members."""
    if isinstance(exc, BaseExceptionGroup):
        # "CallBus.emit_ping: ..." and "InlineBus.emit_ping: ...": the bus's name aside.
        message = exc.message.replace("InlineBus.", "Bus.").replace("CallBus.", "Bus.")
        return (type(exc).__name__, message, [describe(e) for e in exc.exceptions])
    return (type(exc).__name__, str(exc))


def state(bus: Any) -> dict[str, dict[str, Any]]:
    """Everything each service holds (its bound ``emit`` aside)."""
    return {attr: {k: v for k, v in vars(getattr(bus, attr)).items() if k != "emit"}
            for attr in type(bus).__mycelium_services__}


def replay(bus: Any, values: list[int], ping: type) -> list[Any]:
    """Emit one ping per value; what each emit raised (None when nothing did)."""
    outcomes = []
    for value in values:
        try:
            bus.emit(ping(value))
            outcomes.append(None)
        except ExceptionGroup as group:
            outcomes.append(describe(group))
    return outcomes


def inlined_attrs(bus_cls: type) -> set[str]:
    return {attr for attr, *_ in getattr(bus_cls, "__mycelium_inlined__", ())}


# -- differential: inlined and called buses leave the same state ------------------------------


def test_corpus_is_inlined_where_safe_and_called_where_not(load: Callable[..., Loaded]) -> None:
    loaded = load()
    inlined = inlined_attrs(loaded.routing.InlineBus)
    assert inlined == {snake_case(n) for n in INLINED} | {"downstream"}
    assert inlined_attrs(loaded.routing.CallBus) == set()
    assert build(loaded, "InlineBus")._mycelium_inline_ok


def test_inlined_and_called_buses_leave_identical_state(load: Callable[..., Loaded]) -> None:
    loaded = load()
    ping = loaded.routing.Ping
    called, inlined = build(loaded, "CallBus"), build(loaded, "InlineBus")
    called_outcomes = replay(called, VALUES, ping)
    inlined_outcomes = replay(inlined, VALUES, ping)
    assert inlined_outcomes == called_outcomes
    assert state(inlined) == state(called)
    assert any(o is not None for o in called_outcomes)  # the corpus does raise
    assert state(called)["downstream"]["got"]  # and does emit downstream


def test_on_error_sees_the_same_failures_in_the_same_order(load: Callable[..., Loaded]) -> None:
    loaded = load()
    ping = loaded.routing.Ping
    seen: dict[str, list[Any]] = {"CallBus": [], "InlineBus": []}
    buses = {name: build(loaded, name, on_error=lambda exc, where, msg, log=log: log.append(
        (where, describe(exc), msg.value))) for name, log in seen.items()}
    for bus in buses.values():
        replay(bus, VALUES, ping)
    assert seen["InlineBus"] == seen["CallBus"]
    # With a callback, a downstream failure is reported by the nested emit itself.
    assert {where for where, *_ in seen["CallBus"]} == {"raiser.handle", "downstream.on_pong"}
    assert state(buses["InlineBus"]) == state(buses["CallBus"])


def test_fallback_reasons_are_recorded_for_show_and_doctor(load: Callable[..., Loaded]) -> None:
    loaded = load()
    result = rewrite_module(loaded.routing_path.read_bytes(), str(loaded.routing_path),
                            f"{PACKAGE}.routing")
    inline_notes = {n.handler: n for n in result.notes if n.emit == "emit_ping"}
    for name, fragment in KEPT_AS_CALLS.items():
        note = inline_notes[snake_case(name)]
        # Each handler appears twice (CallBus, then InlineBus); the dict keeps InlineBus's.
        assert note.mode == "call"
        assert fragment in note.reason, (name, note.reason)
    for name in INLINED:
        assert inline_notes[snake_case(name)].mode == "inlined"
    called = [n for n in result.notes if n.mode == "call" and n.reason == "inline=False"]
    assert len(called) == len(PING) + len(PONG)


def test_generated_source_names_the_origin_of_each_inlined_block(
    load: Callable[..., Loaded],
) -> None:
    loaded = load()
    result = rewrite_module(loaded.routing_path.read_bytes(), str(loaded.routing_path),
                            f"{PACKAGE}.routing")
    handlers_file = loaded.handlers.__file__
    assert f"'inlined Brancher.handle from {handlers_file}:" in result.generated_source
    assert "h2_v = msg.value" in result.generated_source  # Brancher is the 2nd Ping handler


# -- guards: anything but the exact, unpatched class takes the call path ----------------------


def test_subclass_instance_takes_the_call_path(load: Callable[..., Loaded]) -> None:
    loaded = load(ping=["Tally", "Brancher"], pong=["Downstream"])

    class LoudTally(loaded.handlers.Tally):  # type: ignore[name-defined,misc]
        def handle(self, msg: Any) -> None:
            self.n += 10

    bus_cls = loaded.routing.InlineBus
    bus = bus_cls(LoudTally(), loaded.handlers.Brancher(), loaded.handlers.Downstream())
    assert not bus._mycelium_inline_ok
    bus.emit_ping(loaded.routing.Ping(1))
    assert bus.tally.n == 10 and bus.brancher.small == 1


def test_mock_with_spec_takes_the_call_path(load: Callable[..., Loaded]) -> None:
    loaded = load(ping=["Tally", "Brancher"], pong=["Downstream"])
    mock = unittest.mock.Mock(spec=loaded.handlers.Tally)
    bus = loaded.routing.InlineBus(mock, loaded.handlers.Brancher(), loaded.handlers.Downstream())
    msg = loaded.routing.Ping(4)
    bus.emit(msg)
    mock.handle.assert_called_once_with(msg)
    assert bus.brancher.small == 1


def test_method_replaced_on_the_instance_before_the_bus_is_built(
    load: Callable[..., Loaded],
) -> None:
    loaded = load(ping=["Tally"], pong=["Downstream"])
    tally = loaded.handlers.Tally()
    calls: list[Any] = []
    tally.handle = calls.append
    bus = loaded.routing.InlineBus(tally, loaded.handlers.Downstream())
    bus.emit(loaded.routing.Ping(3))
    assert [c.value for c in calls] == [3] and tally.n == 0


def test_method_replaced_on_the_class_after_generation(
    load: Callable[..., Loaded], monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = load(ping=["Tally"], pong=["Downstream"])
    monkeypatch.setattr(loaded.handlers.Tally, "handle", lambda self, msg: setattr(self, "n", -1))
    bus = build(loaded, "InlineBus")
    assert not bus._mycelium_inline_ok
    bus.emit(loaded.routing.Ping(3))
    assert bus.tally.n == -1


def test_reassigning_a_service_rechecks_the_guard(load: Callable[..., Loaded]) -> None:
    loaded = load(ping=["Tally"], pong=["Downstream"])
    bus = build(loaded, "InlineBus")
    assert bus._mycelium_inline_ok, guard_failures(bus)
    bus.tally = unittest.mock.Mock(spec=loaded.handlers.Tally)
    assert not bus._mycelium_inline_ok
    assert guard_failures(bus) == ["tally is a Mock, not exactly Tally: its methods are called"]
    bus.emit(loaded.routing.Ping(1))
    bus.tally.handle.assert_called_once()
    bus.tally = loaded.handlers.Tally()
    assert bus._mycelium_inline_ok
    bus.emit(loaded.routing.Ping(1))
    assert bus.tally.n == 1


def test_module_rebinding_a_global_is_seen_by_inlined_code(
    load: Callable[..., Loaded], monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = load(ping=["Brancher", "ModuleNames"], pong=["Downstream"])
    monkeypatch.setattr(loaded.handlers, "LIMIT", 0)
    monkeypatch.setattr(loaded.handlers, "helper", lambda x: 1000)
    called, inlined = build(loaded, "CallBus"), build(loaded, "InlineBus")
    for bus in (called, inlined):
        replay(bus, [1, 2, 3], loaded.routing.Ping)
    assert state(inlined) == state(called)
    assert inlined.brancher.big == 3000


def test_pickled_inline_bus_keeps_inlining(load: Callable[..., Loaded]) -> None:
    loaded = load(ping=["Tally"], pong=["Downstream"])
    bus = build(loaded, "InlineBus")
    copy = pickle.loads(pickle.dumps(bus))
    assert copy._mycelium_inline_ok
    copy.emit(loaded.routing.Ping(1))
    assert copy.tally.n == 1


# -- tracebacks --------------------------------------------------------------------------------


def line_of(module: ModuleType, text: str) -> int:
    """The 1-based line of the first line of ``module``'s file containing ``text``."""
    lines = Path(module.__file__ or "").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


@pytest.mark.parametrize(("value", "raising"), [
    (3, 'raise ValueError(f"bad ping {ping.value}")'),
    (13, "raise KeyError(ping.value)"),
])
def test_failure_in_inlined_code_names_the_handler_file_line_and_text(
    load: Callable[..., Loaded], value: int, raising: str,
) -> None:
    loaded = load(ping=["Tally", "Raiser"], pong=["Downstream"])
    bus = build(loaded, "InlineBus")
    with pytest.raises(ExceptionGroup) as info:
        bus.emit(loaded.routing.Ping(value))
    (exc,) = info.value.exceptions
    where = f"{loaded.handlers.__file__}:{line_of(loaded.handlers, raising)}"
    assert exc.__notes__[0].startswith(f"inlined Raiser.handle raised at {where}: {raising}")
    assert "raised in InlineBus by raiser.handle" in exc.__notes__
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames[-1].name == "emit_ping"
    printed = "".join(traceback.format_exception(info.value))
    assert f"raised at {where}" in printed
    if loaded.routing.InlineBus.__mycelium_origin__ == "import hook":
        # The hook compiles the generated class in place: the frame points at the routing
        # table, with the caret from the handler whose inlined body raised.
        assert frames[-1].filename == str(loaded.routing_path)
        assert "Raiser" in (frames[-1].line or "")


def test_failure_in_a_callee_names_the_inlined_line_that_called_it(
    load: Callable[..., Loaded],
) -> None:
    loaded = load(ping=["Forwarder"], pong=["Downstream"])
    bus = build(loaded, "InlineBus")
    with pytest.raises(ExceptionGroup) as info:
        bus.emit(loaded.routing.Ping(10))  # Pong(5): Downstream raises, inside the nested emit
    (nested,) = info.value.exceptions
    call = "self.emit(Pong(ping.value // 2))"
    where = f"{loaded.handlers.__file__}:{line_of(loaded.handlers, call)}"
    assert nested.__notes__[0].startswith(f"inlined Forwarder.handle raised at {where}: {call}")
    (inner,) = nested.exceptions  # type: ignore[attr-defined]
    raising = 'raise RuntimeError("five")'
    assert inner.__notes__[0].startswith(
        f"inlined Downstream.on_pong raised at {loaded.handlers.__file__}:"
        f"{line_of(loaded.handlers, raising)}: {raising}")


# -- split routes, local classes, recompiling --------------------------------------------------

SPLIT_HANDLERS = HANDLERS + """

class PongLog:
    def __init__(self):
        self.rows = []

    @handles(Pong)
    async def on_pong(self, pong):
        self.rows.append(pong.value)
"""

SPLIT_ROUTING = f"""
from mycelium_mono import route, routing_config
from {PACKAGE}.messages import Ping, Pong
from {PACKAGE}.handlers import Forwarder, Downstream, PongLog


@routing_config(inline=True)
class InlineBus:
    Ping = [Forwarder]
    Pong = route(sync=[Downstream], background=[PongLog])
"""


def test_split_route_inlines_the_sync_path_and_calls_the_background(
    load: Callable[..., Loaded],
) -> None:
    loaded = load(handlers=SPLIT_HANDLERS, routing=SPLIT_ROUTING)
    bus = build(loaded, "InlineBus")
    assert inlined_attrs(type(bus)) == {"forwarder", "downstream"}

    async def scenario() -> None:
        bus.emit(loaded.routing.Ping(8))
        assert bus.downstream.got == [4]  # sync path ran inline, inside Forwarder's body
        await bus.background.drain()
        assert bus.pong_log.rows == [4]

    asyncio.run(scenario())
    notes = rewrite_module(loaded.routing_path.read_bytes(), str(loaded.routing_path),
                           f"{PACKAGE}.routing").notes
    (background,) = [n for n in notes if n.handler == "pong_log"]
    assert background.mode == "call" and "background path" in background.reason


LOCAL_ROUTING = f"""
from mycelium_mono import MessageHandler, routing_config
from {PACKAGE}.messages import Ping, Pong
from {PACKAGE}.handlers import Tally, Downstream


class LocalTally(MessageHandler[Ping]):
    def __init__(self):
        self.n = 0

    def handle(self, ping):
        self.n += ping.value


@routing_config(inline=True)
class InlineBus:
    Ping = [Tally, LocalTally]
    Pong = [Downstream]
"""


def test_handler_defined_in_the_routing_module_itself(load: Callable[..., Loaded]) -> None:
    # Both builds read LocalTally.handle from the routing module's text and inline it: the
    # hook no longer keeps it a call because the class "does not exist yet" (issue 11.2).
    loaded = load(routing=LOCAL_ROUTING)
    bus = build(loaded, "InlineBus")
    bus.emit(loaded.routing.Ping(5))
    assert (bus.tally.n, bus.local_tally.n) == (1, 5)
    assert inlined_attrs(type(bus)) == {"tally", "local_tally", "downstream"}
    assert guard_failures(bus) == []


def test_editing_an_inlined_handler_recompiles_the_routing_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monolith_hook: Any,
) -> None:
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "messages.py").write_text(textwrap.dedent(MESSAGES))
    (package / "routing.py").write_text(routing_source(["Tally"], ["Downstream"]))
    monkeypatch.syspath_prepend(str(tmp_path))
    counts = []
    for step in ("self.n += 1", "self.n += 1000"):
        (package / "handlers.py").write_text(textwrap.dedent(HANDLERS).replace(
            "    def handle(self, msg):\n        self.n += 1", f"    def handle(self, msg):\n"
            f"        {step}"))
        forget_modules(PACKAGE)
        importlib.invalidate_caches()
        manager = monolith_hook(PACKAGE)
        routing = importlib.import_module(f"{PACKAGE}.routing")
        bus = build(Loaded(routing, routing, package / "routing.py"), "InlineBus")
        assert bus._mycelium_inline_ok
        bus.emit(routing.Ping(1))
        counts.append(bus.tally.n)
        manager.uninstall()
    assert counts == [1, 1000]
    forget_modules(PACKAGE)


def test_handler_file_edited_after_import_keeps_the_call(load: Callable[..., Loaded]) -> None:
    loaded = load(ping=["Tally", "Brancher"], pong=["Downstream"])
    handlers_file = Path(loaded.handlers.__file__)
    edited = handlers_file.read_text().replace("self.n += 1", "self.n += 2")
    handlers_file.write_text(edited)
    # The module in sys.modules still runs `+= 1`: inlining the file's text would change it.
    notes = rewrite_module(loaded.routing_path.read_bytes(), str(loaded.routing_path),
                           f"{PACKAGE}.routing").notes
    tally = [n for n in notes if n.handler == "tally" and n.reason != "inline=False"]
    assert [(n.mode, "differs from the loaded code" in n.reason) for n in tally] == [
        ("call", True)]
    brancher = [n for n in notes if n.handler == "brancher" and n.reason != "inline=False"]
    assert [n.mode for n in brancher] == ["inlined"]


def test_method_replaced_by_other_code_at_the_same_file_and_line(
    load: Callable[..., Loaded], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # e.g. a reloaded module: same file, same first line, different body.
    loaded = load(ping=["Tally"], pong=["Downstream"])
    original = loaded.handlers.Tally.handle
    first = original.__code__.co_firstlineno
    source = "\n" * (first - 1) + "def handle(self, msg):\n    self.n += 7\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, original.__code__.co_filename, "exec"), namespace)
    monkeypatch.setattr(loaded.handlers.Tally, "handle", namespace["handle"])
    bus = build(loaded, "InlineBus")
    assert guard_failures(bus) == ["Tally.handle was replaced after the bus was generated"]
    bus.emit(loaded.routing.Ping(1))
    assert bus.tally.n == 7


CHILD = f"""
from mycelium_mono.routing.hook import import_records, install_import_hook
install_import_hook(["{PACKAGE}"])
from {PACKAGE}.routing import InlineBus
from {PACKAGE}.handlers import Tally, Brancher, Downstream
from {PACKAGE}.messages import Ping
bus = InlineBus(Tally(), Brancher(), Downstream())
bus.emit(Ping(3))
print(import_records()["{PACKAGE}.routing"].outcome.name, bus._mycelium_inline_ok,
      bus.tally.n, bus.brancher.small)
"""


def test_cached_rewrite_keeps_inlining_in_fresh_processes(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "messages.py").write_text(textwrap.dedent(MESSAGES))
    (package / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    (package / "routing.py").write_text(routing_source(["Tally", "Brancher"], ["Downstream"]))
    cached = Path(cache_path(str(package / "routing.py")) or "")
    outputs = []
    for seed in ("1", "2"):  # the second process reads the first one's cache
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(tmp_path), PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
        assert cached.is_file()
    assert outputs == ["REWRITTEN True 1 1", "CACHE_HIT True 1 1"]
