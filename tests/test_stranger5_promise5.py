"""A stranger audits README.md's promises with an application of their own: an elevator bank.

The application (``tests/promise5_app/liftbank``): a ``HallCall`` reaches the ``Dispatcher``
(which emits a ``CarAssignment``, and refuses a floor the building does not have) and the
``SafetyMonitor`` (which must see every call); the ``CarController`` emits a ``DoorCommand``
(and cannot stop at 13); a plain ``Logbook`` writes both down; ``Noter`` emits an ``AuditNote``
nobody routes; ``Archive`` (``async def``) stores each door command in the background. Every
service appends to one trace, so the order of side effects is visible in every mode.

Each README promise checked here is asserted for every build it applies to: the monolith called
and inlined, built by the import hook and without it, the in-process ``MessageBus`` with a
``ServiceRuntime``, hybrid, ZeroMQ across two real processes, and NATS/JetStream.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import math
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import mycelium_mono
from mycelium_mono import BacklogFull, MessageBus, MessageError, ServiceRuntime
from mycelium_mono.bus.bus import BusClosedError
from mycelium_mono.bus.hybrid import BackgroundBacklog
from mycelium_mono.handlers import BusDetachedError, HandlerOwnedError
from mycelium_mono.pytest_plugin import forget_modules

APP = Path(__file__).parent / "promise5_app"
if str(APP) not in sys.path:
    sys.path.insert(0, str(APP))

BUILDS = [
    ("hook", "routing", "LiftBus"),
    ("hook", "routing_inline", "InlineLiftBus"),
    ("runtime", "routing", "LiftBus"),
    ("runtime", "routing_inline", "InlineLiftBus"),
]


def _import_lift(how: str, module: str, cls: str) -> SimpleNamespace:
    forget_modules("liftbank")
    hook = mycelium_mono.install_import_hook(packages=["liftbank"]) if how == "hook" else None
    try:
        routing = importlib.import_module(f"liftbank.{module}")
    finally:
        if hook is not None:
            hook.uninstall()
    services = importlib.import_module("liftbank.services")
    messages = importlib.import_module("liftbank.messages")
    bus_class = getattr(routing, cls)
    assert bus_class.__mycelium_origin__ == ("import hook" if how == "hook" else "runtime")
    services.TRACE.clear()
    services.SEEN_EXCEPTION.clear()
    return SimpleNamespace(S=services, M=messages, Bus=bus_class, how=how, module=module)


@pytest.fixture(params=BUILDS, ids=[f"{h}-{m}" for h, m, _ in BUILDS])
def lift(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    ns = _import_lift(*request.param)
    yield ns
    forget_modules("liftbank")


def _services(S: ModuleType, **override: Any) -> dict[str, Any]:
    made = {"dispatcher": S.Dispatcher(), "safety_monitor": S.SafetyMonitor(),
            "car_controller": S.CarController(), "logbook": S.Logbook(), "noter": S.Noter(),
            "archive": S.Archive()}
    made.update(override)
    return made


def _call(lift: SimpleNamespace, floor: int) -> Any:
    return lift.M.HallCall(floor=floor, going_up=True, at_ns=floor)


def _leaves(group: BaseException) -> list[tuple[str, str]]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [(type(group).__name__, str(group))]


# -- "A 30-second tour": every handler runs, failures as one ExceptionGroup -------------------

def test_inline_build_really_inlines(lift: SimpleNamespace) -> None:
    decisions = {(emit, attr): how for emit, attr, _m, how, _r in lift.Bus.__mycelium_notes__}
    if lift.module == "routing_inline":
        assert decisions[("emit_hall_call", "dispatcher")] == "inlined"
        assert decisions[("emit_hall_call", "safety_monitor")] == "inlined"
        assert decisions[("emit_car_assignment", "car_controller")] == "inlined"
    else:
        assert set(decisions.values()) == {"call"}


async def test_monolith_is_depth_first(lift: SimpleNamespace) -> None:
    """README "Order": a handler's emit runs its receivers before the handler's next line."""
    bus = lift.Bus(**_services(lift.S))
    bus.emit_hall_call(_call(lift, 5))
    assert lift.S.TRACE == ["dispatch:5", "car:2@5", "log-door:5", "car-done:5",
                            "log-assign:5", "dispatched:5", "safety:5"]
    lift.S.TRACE.clear()
    bus.emit(_call(lift, 6))  # the generic emit: the same, after one dict lookup
    assert lift.S.TRACE == ["dispatch:6", "car:0@6", "log-door:6", "car-done:6",
                            "log-assign:6", "dispatched:6", "safety:6"]
    await bus.background.drain()
    assert lift.S.TRACE[-2:] == ["archive:5", "archive:6"]


def test_a_failing_handler_does_not_stop_the_later_ones(lift: SimpleNamespace) -> None:
    bus = lift.Bus(**_services(lift.S))
    with pytest.raises(ExceptionGroup) as info:
        bus.emit_hall_call(_call(lift, 41))
    assert lift.S.TRACE == ["dispatch:41", "safety:41"]   # the monitor saw the refused call
    assert info.value.message == (
        f"{lift.Bus.__name__}.emit_hall_call: 1 handler(s) failed (dispatcher.handle)")
    (only,) = info.value.exceptions
    assert type(only) is ValueError and str(only) == "no floor 41"
    # "sys.exception() is None in them and nothing they raise is chained to the earlier one"
    assert lift.S.SEEN_EXCEPTION == [None]


def test_two_failures_are_raised_together_in_routing_order(lift: SimpleNamespace) -> None:
    bus = lift.Bus(**_services(lift.S))
    with pytest.raises(ExceptionGroup) as info:
        bus.emit(_call(lift, 99))
    first, second = info.value.exceptions
    assert (type(first), type(second)) == (ValueError, RuntimeError)
    assert second.__context__ is None and second.__cause__ is None
    assert lift.S.SEEN_EXCEPTION == [None]


def test_a_failure_downstream_surfaces_through_the_emitting_handler(lift: SimpleNamespace
                                                                   ) -> None:
    """CarController raises inside Dispatcher's self.emit: Logbook (after it) still runs, the
    dispatcher's next line does not (its emit raised), SafetyMonitor runs; nested groups."""
    bus = lift.Bus(**_services(lift.S))
    with pytest.raises(ExceptionGroup) as info:
        bus.emit_hall_call(_call(lift, 13))
    assert lift.S.TRACE == ["dispatch:13", "car:1@13", "log-assign:13", "safety:13"]
    (inner,) = info.value.exceptions
    assert isinstance(inner, ExceptionGroup)
    assert inner.message.endswith("emit_car_assignment: 1 handler(s) failed "
                                  "(car_controller.handle)")
    (cause,) = inner.exceptions
    assert type(cause) is LookupError


def test_on_error_gets_each_failure_and_the_emit_returns(lift: SimpleNamespace) -> None:
    seen: list[tuple[str, str, int]] = []
    bus = lift.Bus(**_services(lift.S),
                   on_error=lambda exc, where, msg: seen.append((type(exc).__name__, where,
                                                                 msg.floor)))
    bus.emit_hall_call(_call(lift, 99))
    bus.emit_hall_call(_call(lift, 13))
    # with a callback the nested emit returns normally, so the dispatcher's next line runs
    assert seen == [("ValueError", "dispatcher.handle", 99),
                    ("RuntimeError", "safety_monitor.handle", 99),
                    ("LookupError", "car_controller.handle", 13)]
    assert lift.S.TRACE == ["dispatch:99", "safety:99", "dispatch:13", "car:1@13",
                            "log-assign:13", "dispatched:13", "safety:13"]


async def test_an_unrouted_message_is_a_type_error_inside_the_group(lift: SimpleNamespace) -> None:
    """README: `TypeError: <Bus> has no route for AuditNote` from a handler's self.emit."""
    bus = lift.Bus(**_services(lift.S))
    with pytest.raises(ExceptionGroup) as info:
        bus.emit_door_command(lift.M.DoorCommand(car=1, floor=7, open=True, load_kg=1.0))
    (error,) = info.value.exceptions
    assert type(error) is TypeError
    assert str(error).splitlines()[0] == f"{lift.Bus.__name__} has no route for AuditNote"
    with pytest.raises(TypeError, match=f"^{lift.Bus.__name__} has no route for AuditNote"):
        bus.emit(lift.M.AuditNote(text="direct"))


# -- ownership, detach, replacement ---------------------------------------------------------

async def test_ownership_detach_and_replacement(lift: SimpleNamespace) -> None:
    services = _services(lift.S)
    bus = lift.Bus(**services)
    with pytest.raises(HandlerOwnedError) as owned:
        lift.Bus(**_services(lift.S, dispatcher=services["dispatcher"]))
    assert lift.Bus.__name__ in str(owned.value)
    # the refused bus left the services it took before free: a new bus may take them
    with pytest.raises(TypeError) as wrong:
        bus.dispatcher = lift.S.SafetyMonitor()
    assert "argument 'dispatcher' must be a Dispatcher instance, got SafetyMonitor" in str(
        wrong.value)
    assert bus.dispatcher is services["dispatcher"]          # unchanged
    old, new = bus.dispatcher, lift.S.Dispatcher()
    bus.dispatcher = new
    bus.emit_hall_call(_call(lift, 4))
    assert "car:1@4" in lift.S.TRACE                          # the new one's emit reaches it
    other = lift.Bus(**_services(lift.S, dispatcher=old))     # the old one was freed
    bus.detach()
    for emit in (lambda: bus.emit_hall_call(_call(lift, 4)), lambda: bus.emit(_call(lift, 4)),
                 lambda: bus.emit_door_command(lift.M.DoorCommand(1, 1, True, 1.0))):
        with pytest.raises(BusDetachedError, match="was detached"):
            emit()
    other.detach()


# -- hybrid ---------------------------------------------------------------------------------

async def test_hybrid_sync_path_first_then_background_and_failures_at_drain(
        lift: SimpleNamespace) -> None:
    bus = lift.Bus(**_services(lift.S))
    door = lift.M.DoorCommand
    bus.emit_door_command(door(car=0, floor=21, open=True, load_kg=1.0))
    bus.emit_door_command(door(car=0, floor=22, open=True, load_kg=1.0))
    assert lift.S.TRACE == ["log-door:21", "log-door:22"]     # background not begun yet
    with pytest.raises(ExceptionGroup) as info:
        await bus.background.drain()
    assert lift.S.TRACE[2:] == ["archive:21", "archive:22"]   # the failure did not stop 22
    # the drain's group holds the failed call's own group (one per background emit)
    assert _leaves(info.value) == [("OSError", "archive disk full")]
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.dropped) == (2, 2, 1, 0)
    await bus.background.drain()                              # raised once, not again


async def test_hybrid_full_backlog_refuses_before_any_handler(lift: SimpleNamespace) -> None:
    backlog = BackgroundBacklog(maxsize=2, policy="raise")
    bus = lift.Bus(**_services(lift.S), background=backlog)
    door = lift.M.DoorCommand
    for floor in (1, 2):
        bus.emit_door_command(door(car=0, floor=floor, open=True, load_kg=1.0))
    with pytest.raises(BacklogFull, match="the call was not queued"):
        bus.emit_door_command(door(car=0, floor=3, open=True, load_kg=1.0))
    assert lift.S.TRACE == ["log-door:1", "log-door:2"]        # nothing of floor 3 ran
    await backlog.drain()
    bus.emit_door_command(door(car=0, floor=3, open=True, load_kg=1.0))  # the retry: once
    await backlog.drain()
    assert lift.S.TRACE == ["log-door:1", "log-door:2", "archive:1", "archive:2",
                            "log-door:3", "archive:3"]
    s = backlog.stats
    assert (s.submitted, s.completed, s.failed, s.dropped, s.rejected) == (3, 3, 0, 0, 1)
