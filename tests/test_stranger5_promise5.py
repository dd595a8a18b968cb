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
import contextlib
import copy
import importlib
import math
import pickle
import sys
import threading
from collections.abc import AsyncIterator, Iterator
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
    assert str(error).splitlines() == [
        f"{lift.Bus.__name__} has no route for AuditNote",
        "note: it routes CarAssignment, DoorCommand, HallCall",
        "help: add `AuditNote = [...]` to the routing class"]
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


# -- "Flexible": the same services on MessageBus + ServiceRuntime ---------------------------

@pytest.fixture
def plain() -> Iterator[SimpleNamespace]:
    """The services and messages, no bus class needed."""
    forget_modules("liftbank")
    services = importlib.import_module("liftbank.services")
    messages = importlib.import_module("liftbank.messages")
    services.TRACE.clear()
    yield SimpleNamespace(S=services, M=messages)
    forget_modules("liftbank")


async def _spawn_all(runtime: ServiceRuntime, S: ModuleType) -> dict[str, Any]:
    running = {}
    for handler in (S.Dispatcher(), S.SafetyMonitor(), S.CarController(), S.Logbook(),
                    S.Noter(), S.Archive()):
        running[type(handler).__name__] = await runtime.spawn_service(handler)
    return running


# floors where nothing raises and nothing emits an AuditNote
QUIET_FLOORS = [f for f in range(1, 41) if f not in (7, 13, 21)]


def _positions(trace: list[str]) -> dict[str, int]:
    return {entry: i for i, entry in enumerate(trace)}


async def test_runtime_queues_first_in_first_out_and_counts_failures(plain: SimpleNamespace
                                                                     ) -> None:
    bus = MessageBus()
    runtime = ServiceRuntime(bus)
    running = await _spawn_all(runtime, plain.S)
    pub = bus.publisher(plain.M.HallCall)
    floors = (5, 41, 13, 99, 7)
    for floor in floors:
        await pub.publish(plain.M.HallCall(floor=floor, going_up=True, at_ns=floor))
    await runtime.shutdown()
    trace = plain.S.TRACE
    at = _positions(trace)
    # queued, not depth first: the emitting handler's next line runs before any receiver
    for floor in (5, 13, 7):
        assert at[f"dispatch:{floor}"] < at[f"dispatched:{floor}"] < at[f"car:{floor % 3}@{floor}"]
    assert at["car-done:5"] < at["log-door:5"]
    # every subscriber saw the producer's order; each service went on after a failure
    assert [e for e in trace if e.startswith("safety:")] == [f"safety:{f}" for f in floors]
    assert [e for e in trace if e.startswith("dispatch:")] == [f"dispatch:{f}" for f in floors]
    assert [e for e in trace if e.startswith("log-")] == [
        "log-assign:5", "log-assign:13", "log-assign:7", "log-door:5", "log-door:7"]
    assert [e for e in trace if e.startswith("archive:")] == ["archive:5", "archive:7"]
    counts = {name: (r.handled, r.errors) for name, r in running.items()}
    assert counts == {"Dispatcher": (5, 2), "SafetyMonitor": (5, 1), "CarController": (3, 1),
                      "Logbook": (5, 0), "Noter": (2, 0), "Archive": (2, 0)}
    stats = bus.stats
    # 5 calls + 3 assignments + 2 door commands + 1 note nobody hears; 2+2+3 receivers each
    assert (stats.published, stats.delivered, stats.no_local_subscriber) == (11, 22, 1)
    assert (stats.dropped, stats.rejected, stats.overfilled) == (0, 0, 0)


async def test_shutdown_while_a_feed_is_emitting_loses_nothing_it_emitted(
        plain: SimpleNamespace) -> None:
    """"graceful: every queue drained first": stop a live feed halfway; each call it emitted
    went all the way down the pipeline (assignment, door command, log, archive)."""
    HallCall = plain.M.HallCall
    emitted: list[int] = []

    @mycelium_mono.service
    class Feed:
        async def run(self, ctx: Any) -> None:
            n = 0
            while not ctx.shutting_down:
                floor = QUIET_FLOORS[n % len(QUIET_FLOORS)]
                await ctx.emit(HallCall(floor=floor, going_up=True, at_ns=n))
                emitted.append(n)
                n += 1
                if n % 50 == 0:
                    await asyncio.sleep(0)

    bus = MessageBus()
    runtime = ServiceRuntime(bus)
    running = await _spawn_all(runtime, plain.S)
    await runtime.spawn_service(Feed())
    for _ in range(200):
        if len(emitted) >= 300:
            break
        await asyncio.sleep(0.005)
    await runtime.shutdown()
    trace = plain.S.TRACE
    n = len(emitted)
    assert n >= 300
    assert sum(e.startswith("dispatch:") for e in trace) == n
    assert sum(e.startswith("safety:") for e in trace) == n
    assert sum(e.startswith("log-door:") for e in trace) == n
    assert sum(e.startswith("archive:") for e in trace) == n
    assert all(r.errors == 0 for r in running.values())
    assert bus.stats.published == 3 * n                # calls, assignments, door commands
    assert bus.stats.delivered == 2 * n + 2 * n + 3 * n


async def test_bus_close_under_a_runtime_refuses_what_handlers_emit(plain: SimpleNamespace,
                                                                   caplog: Any) -> None:
    bus = MessageBus()
    runtime = ServiceRuntime(bus)
    running = await _spawn_all(runtime, plain.S)
    pub = bus.publisher(plain.M.HallCall)
    for floor in (1, 2, 3):
        pub.publish_nowait(plain.M.HallCall(floor=floor, going_up=True, at_ns=floor))
    await bus.close()       # before the dispatcher got a turn
    await runtime.shutdown()
    # queued messages are still handled ...
    assert [e for e in plain.S.TRACE if e.startswith("dispatch:")] == [
        "dispatch:1", "dispatch:2", "dispatch:3"]
    assert [e for e in plain.S.TRACE if e.startswith("safety:")] == [
        "safety:1", "safety:2", "safety:3"]
    # ... what they emit is refused, logged and counted, naming the service and shutdown()
    assert running["Dispatcher"].errors == 3
    refused = [r for r in caplog.records if r.exc_info and
               isinstance(r.exc_info[1], BusClosedError)]
    assert len(refused) == 3
    text = str(refused[0].exc_info[1])
    assert "service 'Dispatcher' emitted CarAssignment, which was not published" in text
    assert "runtime.shutdown()" in text


async def test_publishing_from_threads_through_call_soon_threadsafe(plain: SimpleNamespace
                                                                   ) -> None:
    """README "Threads": hand the message to the loop from a hardware callback thread."""
    HallCall = plain.M.HallCall
    bus = MessageBus()
    runtime = ServiceRuntime(bus)
    await _spawn_all(runtime, plain.S)
    pub = bus.publisher(HallCall)
    loop = asyncio.get_running_loop()

    def button_panel(panel: int) -> None:   # one thread per lobby panel, floors 1..30
        for floor in QUIET_FLOORS[:29]:
            loop.call_soon_threadsafe(pub.publish_nowait,
                                      HallCall(floor=floor, going_up=True, at_ns=panel))

    threads = [threading.Thread(target=button_panel, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    def join_all() -> None:
        for t in threads:
            t.join(10)

    await asyncio.to_thread(join_all)
    await runtime.shutdown()
    safety = [e for e in plain.S.TRACE if e.startswith("safety:")]
    assert len(safety) == 4 * 29 and bus.stats.published == 3 * 4 * 29
    assert sum(e.startswith("archive:") for e in plain.S.TRACE) == 4 * 29


# -- "Across processes": the dispatch side in another OS process ----------------------------

pytest_plugins = ["conftest_distributed"]

CALLS = (5, 41, 13, 99, 7, 22)     # 41, 99: the dispatcher raises; 99: the monitor too


def _expected_doors(M: ModuleType) -> list[Any]:
    return [M.DoorCommand(car=f % 3, floor=f, open=True, load_kg=70.1)
            for f in CALLS if f <= 40 and f != 13]


async def _drive_dispatch_peer(bus: MessageBus, peer: Any, M: ModuleType) -> dict[str, Any]:
    doors = bus.subscribe(M.DoorCommand)
    assignments = bus.subscribe(M.CarAssignment)
    pub = bus.publisher(M.HallCall)
    sent = [M.HallCall(floor=f, going_up=f % 2 == 0, at_ns=10**18 + f) for f in CALLS]
    for call in sent:
        await pub.publish(call)
    got_doors: list[Any] = []
    async with asyncio.timeout(30):
        while len(got_doors) < len(_expected_doors(M)):
            got_doors.extend(await doors.recv_batch())
    got_assign: list[Any] = []
    async with asyncio.timeout(30):
        while len(got_assign) < 4:
            got_assign.extend(await assignments.recv_batch())
    await asyncio.sleep(0.2)            # anything extra (a repeat) would arrive now
    got_doors.extend(doors.drain())
    peer.send("QUIT")
    result: dict[str, Any] = await peer.aresult()
    # a message equals its own round trip, F32 included (70.1 was rounded when built)
    assert got_doors == _expected_doors(M)
    assert {d: d.floor for d in got_doors} == {d: d.floor for d in _expected_doors(M)}
    assert [a.floor for a in got_assign] == [5, 13, 7, 22]
    assert got_assign[0].replace(car=2) == got_assign[0]      # replace of a decoded one
    assert got_assign[0].replace(car=0) != got_assign[0]
    # the peer's monitor saw every call, byte for byte, even those the dispatcher refused
    seen = [M.HallCall.from_bytes(bytes.fromhex(h)) for h in result["seen"]]
    assert seen == sent and [hash(s) for s in seen] == [hash(s) for s in sent]
    # each failure was logged and counted, and each service went on to the next message
    assert result["services"] == {"Dispatcher": [6, 2], "Recorder": [6, 1],
                                  "CarController": [4, 1]}
    return result


@pytest.mark.network
@pytest.mark.multiprocess
async def test_zeromq_peer_runs_the_dispatch_side(plain: SimpleNamespace, peers: Any) -> None:
    bus = MessageBus.with_tcp("127.0.0.1:0")
    await bus.start()
    address = bus.transport.address  # type: ignore[attr-defined]
    peer = peers.spawn("promise5_lift", "--engine", "zmq", "--connect", address)
    try:
        doors_first = bus.subscribe(plain.M.DoorCommand)   # before connecting: it is sent
        await bus.connect_to(await peer.aexpect("BOUND"))
        await bus.ready()
        await bus.wait_for_subscribers(1, plain.M.HallCall, timeout=30)
        await peer.aexpect("READY")
        result = await _drive_dispatch_peer(bus, peer, plain.M)
        assert len(doors_first.drain()) == len(_expected_doors(plain.M))
    finally:
        await bus.close()
    transport = result["transport"]
    # 6 calls in; 4 assignments + 3 door commands out (13 failed); nothing malformed, no gap
    assert transport["received"] == 6 and transport["sent"] == 7, transport
    assert transport["sequence_gaps"] == transport["dropped_malformed"] == 0, transport


@pytest.mark.network
@pytest.mark.multiprocess
async def test_core_nats_peer_runs_the_dispatch_side(plain: SimpleNamespace, peers: Any,
                                                     shared_nats: str) -> None:
    bus = MessageBus.with_nats(shared_nats)
    peer = peers.spawn("promise5_lift", "--engine", "nats", "--url", shared_nats)
    try:
        bus.subscribe(plain.M.DoorCommand)
        await bus.ready()
        await peer.aexpect("READY")
        result = await _drive_dispatch_peer(bus, peer, plain.M)
    finally:
        await bus.close()
    assert result["transport"]["received"] == 6 and result["transport"]["sent"] == 7


LIFT_SUBJECTS = ("lift.calls.8501", "lift.assign.8502", "lift.doors.8503", "lift.notes.8504")


@pytest.fixture
async def lift_stream(shared_nats: str, stream_name: str) -> AsyncIterator[str]:
    """A stream of this test's own; a stream a killed run left on these subjects (JetStream
    stores a subject in one stream only) is deleted first, and this one and its DLQ after."""
    import nats
    import nats.js.errors

    nc = await nats.connect(shared_nats)
    js = nc.jetstream()
    for subject in LIFT_SUBJECTS:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(await js.find_stream_name_by_subject(subject))
    try:
        yield stream_name
    finally:
        for doomed in (stream_name, f"DLQ_{stream_name}"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(doomed)
        await nc.close()


@pytest.mark.network
@pytest.mark.multiprocess
async def test_jetstream_peer_redelivers_then_dead_letters_a_refused_call(
        plain: SimpleNamespace, peers: Any, shared_nats: str, lift_stream: str) -> None:
    M, stream_name = plain.M, lift_stream
    bus = MessageBus.with_nats(shared_nats, jetstream=True, stream=stream_name)
    peer = peers.spawn("promise5_lift", "--engine", "nats", "--url", shared_nats,
                       "--jetstream", "--stream", stream_name, "--durable", "lift",
                       "--max-deliver", "2")
    try:
        doors = bus.subscribe(M.DoorCommand)
        await bus.ready()
        await peer.aexpect("READY")
        pub = bus.publisher(M.HallCall)
        sent = [M.HallCall(floor=f, going_up=True, at_ns=f) for f in CALLS]
        for call in sent:
            await pub.publish(call)
        got: list[Any] = []
        async with asyncio.timeout(30):
            while len(got) < 3:
                got.extend(await doors.recv_batch())
        await asyncio.sleep(1.0)   # the failed calls' redeliveries (backoff 0.05 s) settle
        got.extend(doors.drain())
        peer.send("QUIT")
        result = await peer.aresult()
    finally:
        await bus.close()
    assert got == _expected_doors(M)
    seen = [M.HallCall.from_bytes(bytes.fromhex(h)) for h in result["seen"]]
    assert set(seen) == set(sent)
    # 41 and 99 failed a handler each time: delivered max_deliver (2) times, then no more
    assert sorted(c.floor for c in seen if seen.count(c) > 1) == [41, 41, 99, 99]
    # the CarController's input (the peer's own publish, back from the stream) likewise
    assert result["services"] == {"Dispatcher": [8, 4], "Recorder": [8, 2],
                                  "CarController": [5, 2]}, result
    # 41, 99 and the assignment to 13 dead-lettered; 6 calls + 4 assignments + 3 repeats in
    transport = result["transport"]
    assert transport["dead_lettered"] == 3 and transport["received"] == 13, transport


# -- "Messages" --------------------------------------------------------------------------

def test_message_values_equality_replace_and_copies(plain: SimpleNamespace) -> None:
    M = plain.M
    door = M.DoorCommand(car=1, floor=2, open=True, load_kg=21.7)
    assert door.load_kg == 21.700000762939453              # F32: rounded when built
    assert door.replace(load_kg=21.7).load_kg == 21.700000762939453   # ... and when replaced
    assert M.DoorCommand.from_bytes(door.to_bytes()) == door
    assert hash(M.DoorCommand.from_bytes(door.to_bytes())) == hash(door)
    assert type(door.replace(load_kg=70).load_kg) is float  # an int is converted
    assert door.replace() == door and door.replace(floor=3) != door and door.floor == 2
    # equal only to a message of the same type with the same values
    assert M.HallCall(floor=1, going_up=True, at_ns=1) != M.CarAssignment(1, 1, True)
    assert door != (1, 2, True, door.load_kg)
    nan = door.replace(load_kg=math.nan)
    assert M.DoorCommand.from_bytes(nan.to_bytes()) != nan   # NaN, the one exception
    assert pickle.loads(pickle.dumps(door)) == door
    assert copy.copy(door) is door and copy.deepcopy(door) is door
    with pytest.raises(AttributeError, match=r"use \.replace"):
        door.floor = 3
    # checked where written, with the field's name: construction and replace() alike
    for build in (lambda: M.HallCall(floor=256, going_up=True, at_ns=0),
                  lambda: door.replace(floor=256)):
        with pytest.raises(MessageError, match=r"^\w+\.floor \(U8\) must be an int in 0\.\.255"):
            build()
    with pytest.raises(MessageError, match=r"going_up \(Bool\) must be a bool, got int 1"):
        M.HallCall(floor=1, going_up=1, at_ns=0)
    with pytest.raises(MessageError, match=r"got bool True"):
        M.HallCall(floor=True, going_up=True, at_ns=0)
    with pytest.raises(MessageError, match=r"F32\) must be a float within"):
        door.replace(load_kg=3.5e38)
    # Text counts bytes; NUL refused; a peer's bad UTF-8 decodes with U+FFFD
    assert M.AuditNote(text="€" * 8).text == "€" * 8
    for text in ("€" * 9, "lift\0stuck"):
        with pytest.raises(MessageError, match=r"^AuditNote\.text \(Text\[24\]\) must be a str "
                                               r"of at most 24 bytes in UTF-8"):
            M.AuditNote(text=text)
    raw = bytearray(M.AuditNote(text="ok").to_bytes())
    raw[0] = 0xFF
    assert M.AuditNote.from_bytes(bytes(raw)).text == "\ufffdk"
    with pytest.raises(MessageError, match=r"needs exactly 7 bytes, got 1"):
        M.DoorCommand.from_bytes(b"\0")


# -- close while a publish is in flight ----------------------------------------------------

async def test_close_while_a_publish_waits_for_space_refuses_it_and_counts_it(
        plain: SimpleNamespace) -> None:
    """A lobby panel's `await publish` waits on the car queue ("block" is full) when the bus
    closes. It used to return as if published, the call delivered to nobody and counted
    nowhere (published=3, queued 2, dropped 0); a publish after close raises BusClosedError,
    and so must the one the close cut short."""
    HallCall = plain.M.HallCall
    bus = MessageBus()
    cars = bus.subscribe(HallCall, maxsize=2)
    pub = bus.publisher(HallCall)
    for floor in (1, 2):
        await pub.publish(HallCall(floor=floor, going_up=True, at_ns=floor))
    waiting = asyncio.create_task(pub.publish(HallCall(floor=3, going_up=True, at_ns=3)))
    for _ in range(100):
        if cars.stats.blocked:
            break
        await asyncio.sleep(0.001)
    assert cars.stats.blocked == 1 and not waiting.done()
    await bus.close()
    with pytest.raises(BusClosedError, match="closed while this publish waited for space") as info:
        await asyncio.wait_for(waiting, 5)
    assert "HallCall#1" in str(info.value)
    assert [c.floor for c in cars.drain()] == [1, 2]
    assert cars.stats.dropped == 1 and bus.stats.dropped == 1


@pytest.mark.network
async def test_jetstream_runtime_shutdown_waits_for_its_own_emits(
        plain: SimpleNamespace, lift_stream: str, shared_nats: str) -> None:
    """README: `ServiceRuntime.shutdown()` waits until its own emits have come back (from the
    stream) and been handled. Publish, then shut down at once: every call went all the way."""
    S, M = plain.S, plain.M
    bus = MessageBus.with_nats(shared_nats, jetstream=True, stream=lift_stream)
    runtime = ServiceRuntime(bus)
    running = {type(h).__name__: await runtime.spawn_service(h)
               for h in (S.Dispatcher(), S.CarController(), S.Logbook())}
    await bus.ready()
    pub = bus.publisher(M.HallCall)
    floors = QUIET_FLOORS[:20]
    for floor in floors:
        await pub.publish(M.HallCall(floor=floor, going_up=True, at_ns=floor))
    await runtime.shutdown(timeout=20)
    trace = S.TRACE
    assert sorted(e for e in trace if e.startswith("log-door:")) == sorted(
        f"log-door:{f}" for f in floors)
    assert sorted(e for e in trace if e.startswith("log-assign:")) == sorted(
        f"log-assign:{f}" for f in floors)
    assert {n: (r.handled, r.errors) for n, r in running.items()} == {
        "Dispatcher": (20, 0), "CarController": (20, 0), "Logbook": (40, 0)}
    assert bus.stats.received_remote == 60   # calls, assignments, door commands: all stream


async def test_a_handler_owned_by_a_runtime_is_freed_by_shutdown_the_error_says_so(
        lift: SimpleNamespace) -> None:
    """README: `bus.detach()` frees a bus's services, "and so does a runtime's shutdown()".
    The refusal said "free it from the first one with bus.detach()" also when the first
    owner was a ServiceRuntime, which has no detach()."""
    dispatcher = lift.S.Dispatcher()
    runtime = ServiceRuntime(MessageBus())
    await runtime.spawn_service(dispatcher)
    with pytest.raises(HandlerOwnedError) as owned:
        lift.Bus(**_services(lift.S, dispatcher=dispatcher))
    text = str(owned.value)
    assert "already owned by a ServiceRuntime (service 'Dispatcher')" in text
    assert "runtime.shutdown()" in text and "bus.detach()" not in text
    await runtime.shutdown()
    bus = lift.Bus(**_services(lift.S, dispatcher=dispatcher))   # freed by the shutdown
    # and a bus owner still points at bus.detach()
    with pytest.raises(HandlerOwnedError, match=r"with bus\.detach\(\)"):
        await ServiceRuntime(MessageBus()).spawn_service(dispatcher)
    bus.detach()


@pytest.mark.network
@pytest.mark.multiprocess
async def test_zeromq_peer_shut_down_mid_pipeline_still_publishes_what_its_handlers_emit(
        plain: SimpleNamespace, peers: Any) -> None:
    """README "Closing": `runtime.shutdown()` drains the queues, lets each handler finish and
    publishes what they emit, then closes the bus. The peer shuts down the moment its monitor
    has seen the last of 300 calls: its dispatcher and car controller are still behind."""
    M = plain.M
    floors = [QUIET_FLOORS[i % len(QUIET_FLOORS)] for i in range(300)]
    bus = MessageBus.with_tcp("127.0.0.1:0")
    await bus.start()
    peer = peers.spawn("promise5_lift", "--engine", "zmq", "--quit-after", str(len(floors)),
                       "--connect", bus.transport.address)  # type: ignore[attr-defined]
    try:
        doors = bus.subscribe(M.DoorCommand, maxsize=1_000)
        await bus.connect_to(await peer.aexpect("BOUND"))
        await bus.ready()
        await bus.wait_for_subscribers(1, M.HallCall, timeout=30)
        await peer.aexpect("READY")
        pub = bus.publisher(M.HallCall)
        for n, floor in enumerate(floors):
            await pub.publish(M.HallCall(floor=floor, going_up=True, at_ns=n))
        result = await peer.aresult()
        got: list[Any] = []
        async with asyncio.timeout(30):
            while len(got) < len(floors):
                got.extend(await doors.recv_batch())
    finally:
        await bus.close()
    assert [d.floor for d in got] == floors
    assert result["services"] == {"Dispatcher": [300, 0], "Recorder": [300, 0],
                                  "CarController": [300, 0]}
    assert result["transport"]["sent"] == 600


async def test_a_call_queued_before_detach_fails_as_a_refusal_not_a_handler_failure(
        lift: SimpleNamespace) -> None:
    """README: calls still queued on a detached bus's backlog "fail the same way" as an emit
    on it: a BusDetachedError, which the sync path raises bare (no on_error, no group, "a
    refused emit, not a handler's failure"). The queued call reported it as archive.handle's
    failure instead: handed to on_error as ("archive.handle", msg), or nested in a group
    "1 handler(s) failed (archive.handle)" with the note "raised in ... by archive.handle"."""
    door = lift.M.DoorCommand(car=0, floor=8, open=True, load_kg=1.0)
    reported: list[str] = []
    for on_error in (None, lambda exc, where, msg: reported.append(where)):
        bus = lift.Bus(**_services(lift.S), on_error=on_error)
        bus.emit_door_command(door)                 # the background call is queued ...
        backlog = bus.background                    # (a detached bus refuses .background)
        bus.detach()                                # ... and the bus detached before it ran
        with pytest.raises(ExceptionGroup) as info:
            await backlog.drain()
        (refused,) = info.value.exceptions
        assert type(refused) is BusDetachedError
        assert "was detached" in str(refused)
        assert not any("archive.handle" in note for note in getattr(refused, "__notes__", []))
        with pytest.raises(BusDetachedError):       # the sync path: the same error
            bus.emit_door_command(door)
    assert reported == []                           # a refusal is no handler's failure
    assert "archive:8" not in lift.S.TRACE


async def test_drain_waits_for_what_background_handlers_queue_meanwhile(
        lift: SimpleNamespace) -> None:
    """README: `await bus.background.drain()` waits for the backlog, and a background failure
    is raised by the next drain(), "so a test that drains sees it". A background handler
    that emits (its self.emit reaches the bus) queues more background calls; drain() used to
    return once the calls queued *before* it had run: here after floor 1 of 4, with floor 2
    in flight, and the failure at floor 4 was raised by nobody (and lost at asyncio.run's
    end, with floors 3 and 4 never run)."""
    bus = lift.Bus(**_services(lift.S, archive=lift.S.ChainingArchive()))
    bus.emit_door_command(lift.M.DoorCommand(car=0, floor=1, open=True, load_kg=1.0))
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(bus.background.drain(), 5)
    assert [e for e in lift.S.TRACE if e.startswith("archive:")] == [
        "archive:1", "archive:2", "archive:3", "archive:4"]
    assert _leaves(info.value) == [("OSError", "archive full at floor 4")]
    s = bus.background.stats
    assert (s.submitted, s.completed, s.failed, s.dropped, s.queued) == (4, 4, 1, 0, 0)


# -- counters that must add up ----------------------------------------------------------

async def test_backlog_counters_add_up_under_drop_oldest_and_close(lift: SimpleNamespace
                                                                  ) -> None:
    door = lift.M.DoorCommand
    backlog = BackgroundBacklog(maxsize=2, policy="drop_oldest")
    bus = lift.Bus(**_services(lift.S), background=backlog)
    for floor in range(1, 6):
        bus.emit_door_command(door(car=0, floor=floor, open=True, load_kg=1.0))
    await backlog.drain()
    s = backlog.stats
    assert (s.submitted, s.completed, s.dropped, s.queued) == (5, 2, 3, 0)
    assert [e for e in lift.S.TRACE if e.startswith("archive:")] == ["archive:4", "archive:5"]

    slow = BackgroundBacklog()
    started = asyncio.Event()

    async def store(n: int) -> None:
        started.set()
        await asyncio.sleep(30)

    for n in range(5):
        slow.submit(store, n)
    await started.wait()
    await slow.close(timeout=0.05)        # one cut off in flight, four never begun
    s = slow.stats
    assert (s.submitted, s.completed, s.dropped, s.queued) == (5, 0, 5, 0)
    assert s.submitted == s.completed + s.dropped
    await asyncio.wait_for(slow.drain(), 1)   # every drain() returns after close


async def test_a_sync_emit_outside_a_handler_refuses_all_or_nothing(plain: SimpleNamespace
                                                                   ) -> None:
    """Delivery table: a sync self.emit outside a running handler raises QueueFullError with
    nothing queued (the roomy subscriber did not get it either)."""
    from mycelium_mono import QueueFullError

    CarAssignment = plain.M.CarAssignment
    bus = MessageBus()
    runtime = ServiceRuntime(bus)
    dispatcher = plain.S.Dispatcher()
    await runtime.spawn_service(dispatcher)
    full = bus.subscribe(CarAssignment, maxsize=1)
    roomy = bus.subscribe(CarAssignment, maxsize=10)
    dispatcher.emit(CarAssignment(car=0, floor=1, going_up=True))
    with pytest.raises(QueueFullError, match="was not published"):
        dispatcher.emit(CarAssignment(car=0, floor=2, going_up=True))
    assert (len(full), len(roomy), bus.stats.published) == (1, 1, 1)
    full.drain()
    await runtime.shutdown()


async def test_a_plain_handler_class_spawned_twice_on_one_runtime_is_refused(
        plain: SimpleNamespace) -> None:
    """README: "spawning one instance twice on one runtime is refused too (it would get every
    message twice)". A plain class with @handles methods (the Logbook) was spawned twice and
    logged every car assignment twice; only a MessageHandler was refused. On two runtimes it
    may serve both, as on several buses."""
    runtime = ServiceRuntime(MessageBus())
    logbook = plain.S.Logbook()
    await runtime.spawn_service(logbook)
    with pytest.raises(HandlerOwnedError, match=r"already running on this ServiceRuntime as "
                       r"service 'Logbook'; spawning it again would give it every message twice"):
        await runtime.spawn_service(logbook)
    await runtime.bus.publisher(plain.M.CarAssignment).publish(
        plain.M.CarAssignment(car=0, floor=3, going_up=True))
    await runtime.shutdown()
    assert plain.S.TRACE == ["log-assign:3"]
    other, third = ServiceRuntime(MessageBus()), ServiceRuntime(MessageBus())
    await other.spawn_service(logbook)
    await third.spawn_service(logbook)
    await other.shutdown()
    await third.shutdown()
