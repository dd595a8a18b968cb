"""Round 9, multibus9: several monolith buses and shared instances, in a parcel-logistics app.

A stranger's shapes of use: two routing classes in one module and one in another, the same
handler class routed by several buses, hook and run-time builds (inlined and called) living
in one process, a hybrid bus shared by two threads' event loops, copies and pickles of buses,
a service replaced from inside a handler, a bus dropped while its handlers live on, emits
from several threads. Every result is compared with the same handlers called by hand in route
order. Type ids 39800-39899.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, load_build

from mycelium_mono.pytest_plugin import forget_modules

PACKAGE = "parcel9"

MESSAGES = """
from mycelium_mono import message, Text, U32, U64

@message(type_id={a}, topic="logi.scan")
class ParcelScanned:
    parcel: U64
    depot: U32

@message(type_id={b}, topic="logi.plan")
class RoutePlanned:
    parcel: U64
    stop: U32

@message(type_id={c}, topic="logi.customs")
class CustomsHold:
    parcel: U64
    reason: Text[16]
"""

HANDLERS = """
import asyncio
import threading

from mycelium_mono import MessageHandler, handles
from parcel9.messages import CustomsHold, ParcelScanned, RoutePlanned

LOG = []


class Scanner(MessageHandler[ParcelScanned]):
    '''Scans a parcel: depot 7 is a customs depot, every other one plans the next stop.'''

    def __init__(self, tag="scan"):
        self.tag = tag
        self.n = 0

    def handle(self, msg):
        self.n += 1
        LOG.append((self.tag, msg.parcel))
        if msg.depot == 7:
            self.emit(CustomsHold(msg.parcel, "depot7"))
        else:
            self.emit(RoutePlanned(msg.parcel, msg.depot + 1))


class Planner(MessageHandler[RoutePlanned]):
    def __init__(self, tag="plan"):
        self.tag = tag
        self.n = 0

    def handle(self, msg):
        self.n += 1
        LOG.append((self.tag, msg.parcel, msg.stop))


class Customs:
    '''A plain class: no self.emit, so the README lets several buses share one.'''

    def __init__(self):
        self.held = []

    @handles(CustomsHold)
    def hold(self, msg):
        self.held.append(msg.parcel)
        LOG.append(("customs", msg.parcel))


class Archive(MessageHandler[RoutePlanned]):
    '''The background side of a hybrid route: which thread archived what.'''

    def __init__(self):
        self.got = []

    async def handle(self, msg):
        await asyncio.sleep(0)
        self.got.append((msg.parcel, threading.current_thread().name))
"""

HYBRID_ROUTING = """
from mycelium_mono import route, routing_config
from parcel9.messages import CustomsHold, ParcelScanned, RoutePlanned  # noqa: F401
from parcel9.handlers import Archive, Customs, Planner, Scanner


@routing_config(inline=INLINE)
class HubBus:
    ParcelScanned = [Scanner]
    RoutePlanned = route(sync=[Planner], background=[Archive])
    CustomsHold = [Customs]
"""


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


def load(tmp_path: Path, build: Build, routing: str, base: int,
         extra: dict[str, str] | None = None) -> Any:
    modules = {"messages": MESSAGES.format(a=base, b=base + 1, c=base + 2),
               "handlers": HANDLERS, "routing": routing, **(extra or {})}
    return load_build(tmp_path, PACKAGE, modules, build)


def handlers_module() -> Any:
    return sys.modules[f"{PACKAGE}.handlers"]


def hub(routing: Any, **given: Any) -> Any:
    h = handlers_module()
    services = {"scanner": h.Scanner(), "planner": h.Planner(), "customs": h.Customs(),
                "archive": h.Archive(), **given}
    return routing.HubBus(**services)


# --- one hybrid bus, two threads' event loops ---------------------------------------------


def test_a_hybrid_bus_refuses_an_emit_from_a_second_threads_running_loop(
        tmp_path: Path, build: Build) -> None:
    """Found: two threads, each with its own asyncio.run, emitting into one hybrid bus moved
    the backlog's worker from loop to loop (cancelling the other loop's task from the wrong
    thread): 18-20 of 10,000 background calls were lost and both threads hung in drain().
    Now the second loop's emit is refused before any handler ran, and once the first loop has
    ended the bus works on the next one (a second asyncio.run, as before)."""
    from mycelium_mono.bus import NoEventLoopError, OtherEventLoopError

    routing = load(tmp_path, build, HYBRID_ROUTING, 39800)
    h = handlers_module()
    bus = hub(routing)
    emitted = threading.Event()
    release = threading.Event()
    failures: list[BaseException] = []

    async def depot_loop() -> None:
        bus.emit(h.ParcelScanned(1, 1))
        emitted.set()
        await asyncio.to_thread(release.wait, 10)  # the loop runs on, waiting
        bus.emit(h.ParcelScanned(2, 1))
        await bus.background.drain()

    def depot_thread() -> None:
        try:
            asyncio.run(depot_loop())
        except BaseException as exc:  # reported by the assertions below
            failures.append(exc)

    first = threading.Thread(target=depot_thread, name="depot-a")
    first.start()
    try:
        assert emitted.wait(10), "the first loop never emitted"

        async def other_loop() -> None:
            bus.emit(h.RoutePlanned(99, 5))  # the hybrid emit itself: its submit comes first

        with pytest.raises(OtherEventLoopError, match=r"(?s)submit\(HubBus.emit_route_planned"
                           r"_async\) from an event loop other than .* still running.*help: "
                           r"a bus with background routes belongs to one event loop"):
            asyncio.run(other_loop())
        assert issubclass(OtherEventLoopError, NoEventLoopError)
        assert bus.planner.n == 1  # refused before the sync handlers too
    finally:
        release.set()
        first.join(15)
    assert not first.is_alive(), "the first loop hung in drain()"
    assert failures == []
    assert sorted(bus.archive.got) == [(1, "depot-a"), (2, "depot-a")]

    async def next_loop() -> None:  # the first loop is over: the next one takes the bus
        bus.emit(h.ParcelScanned(3, 1))
        await bus.background.drain()

    asyncio.run(next_loop())
    assert [p for p, _ in bus.archive.got] == [1, 2, 3]
    assert (bus.scanner.n, bus.planner.n) == (3, 3)


# --- copies and pickles of a bus --------------------------------------------------------


def bus_on_error(exc: Exception, where: str, msg: object) -> None:
    """A module-level callback: a pickled bus can carry it."""


def backlog_on_error(exc: BaseException) -> None:
    """The backlog's own callback, module-level for the same reason."""


def test_a_pickled_or_deep_copied_hybrid_bus_keeps_its_backlog_settings(
        tmp_path: Path, build: Build) -> None:
    """Found: pickle and copy.deepcopy rebuilt the bus with the default backlog (10,000 calls,
    "block", no on_error): the copy of a bus that drops the oldest of 3 queued calls queued
    all 10 (dropped 0 of 7) and reported background failures to drain() instead of its
    callback. The copy now behaves as the original: same handlers' results, same drops."""
    from mycelium_mono import BackgroundBacklog

    routing = load(tmp_path, build, HYBRID_ROUTING, 39810)
    h = handlers_module()

    def built() -> Any:
        backlog = BackgroundBacklog(maxsize=3, policy="drop_oldest", on_error=backlog_on_error)
        return routing.HubBus(
            scanner=h.Scanner(), planner=h.Planner(), customs=h.Customs(),
            archive=h.Archive(), background=backlog, on_error=bus_on_error)

    async def ten_scans(bus: Any) -> tuple[Any, ...]:
        for parcel in range(10):  # one loop turn: the worker runs only after the tenth
            bus.emit(h.ParcelScanned(parcel, 1))
        await bus.background.drain()
        stats = bus.background.stats
        return (bus.scanner.n, bus.planner.n, [p for p, _ in bus.archive.got],
                stats.submitted, stats.completed, stats.dropped)

    original = asyncio.run(ten_scans(built()))
    assert original == (10, 10, [7, 8, 9], 10, 3, 7)
    for copied in (copy.deepcopy(built()), pickle.loads(pickle.dumps(built()))):
        backlog = copied.background
        assert (type(backlog), backlog.maxsize, backlog.policy, backlog.on_error) == (
            BackgroundBacklog, 3, "drop_oldest", backlog_on_error)
        assert copied._on_error is bus_on_error
        assert asyncio.run(ten_scans(copied)) == original


def test_copy_copy_of_a_bus_with_message_handlers_says_to_deep_copy_and_plain_ones_share(
        tmp_path: Path, build: Build) -> None:
    """Found: copy.copy(bus) raised "already owned by HubBus at 0x...; it cannot also be
    given to HubBus at 0x..." naming a copy the caller never received. It now names the
    services and says what to do; a bus of plain @handles classes only is copied sharing
    them (the README lets plain classes serve several buses)."""
    from mycelium_mono import HandlerOwnedError

    plain_routing = """
from mycelium_mono import routing_config
from parcel9.messages import CustomsHold  # noqa: F401
from parcel9.handlers import Customs


@routing_config(inline=INLINE)
class CustomsDesk:
    CustomsHold = [Customs]
"""
    routing = load(tmp_path, build, HYBRID_ROUTING, 39820,
                   extra={"desk": plain_routing.replace("INLINE", str(build.inline))})
    h = handlers_module()
    bus = hub(routing)
    with pytest.raises(HandlerOwnedError, match=r"(?s)^copy.copy\(\) of a HubBus would give "
                       r"its MessageHandler services \(scanner, planner, archive\) to a second "
                       r"bus.*help: copy.deepcopy\(bus\) builds a HubBus around copies"):
        copy.copy(bus)
    bus.emit(h.ParcelScanned(1, 7))  # the original is untouched
    assert bus.customs.held == [1]
    twin = copy.deepcopy(bus)
    twin.emit(h.ParcelScanned(2, 7))
    assert (bus.customs.held, twin.customs.held) == ([1], [1, 2])

    if build.path == "hook":
        from mycelium_mono.routing.hook import install_import_hook
        with install_import_hook([PACKAGE]):
            desk_module = importlib.import_module(f"{PACKAGE}.desk")
    else:
        desk_module = importlib.import_module(f"{PACKAGE}.desk")
    shared = h.Customs()
    desk = desk_module.CustomsDesk(customs=shared)
    other = copy.copy(desk)
    assert other is not desk and other.customs is shared
    desk.emit(h.CustomsHold(3, "a"))
    other.emit(h.CustomsHold(4, "b"))
    assert shared.held == [3, 4]


# --- a bus dropped while its handlers live on; a handler replaced from inside an emit ----

ROUTING = """
from mycelium_mono import routing_config
from parcel9.messages import CustomsHold, ParcelScanned, RoutePlanned  # noqa: F401
from parcel9.handlers import Customs, Planner, Scanner


@routing_config(inline=INLINE)
class DepotBus:
    ParcelScanned = [Scanner]
    RoutePlanned = [Planner]
    CustomsHold = [Customs]
"""


def test_a_dropped_bus_lives_on_in_its_handlers_and_the_error_says_how_to_free_them(
        tmp_path: Path, build: Build) -> None:
    """A bus the caller dropped is not collected while one of its handlers lives (its
    self.emit is the bus's), so it still owns the handler and still delivers its emits, as
    the README now says. Found: the refusal of a new bus said "free it from the first one with
    bus.detach()", naming a bus the caller can no longer reach; it now says how."""
    import gc
    import weakref

    from mycelium_mono import HandlerOwnedError

    routing = load(tmp_path, build, ROUTING, 39830)
    h = handlers_module()
    scanner, planner = h.Scanner(), h.Planner("old-plan")
    bus = routing.DepotBus(scanner=scanner, planner=planner, customs=h.Customs())
    dropped = weakref.ref(bus)
    del bus, planner
    gc.collect()
    assert dropped() is not None  # held by scanner.emit
    scanner.handle(h.ParcelScanned(1, 2))  # by hand: its emit still reaches the dropped bus
    assert h.LOG == [("scan", 1), ("old-plan", 1, 3)]
    with pytest.raises(HandlerOwnedError, match=r"(?s)already owned by DepotBus at 0x.*"
                       r"a bus you dropped still lives in its handlers and owns them: "
                       r"<handler>.emit.__self__.detach\(\) reaches it"):
        routing.DepotBus(scanner=scanner, planner=h.Planner(), customs=h.Customs())
    scanner.emit.__self__.detach()
    fresh = routing.DepotBus(scanner=scanner, planner=h.Planner("new-plan"),
                             customs=h.Customs())
    fresh.emit(h.ParcelScanned(2, 4))
    assert h.LOG[2:] == [("scan", 2), ("new-plan", 2, 5)]
    gc.collect()
    assert dropped() is None  # detached, nothing holds it any more


SHIFT_HANDLERS = """
from mycelium_mono import MessageHandler
from parcel9.messages import ParcelScanned, RoutePlanned

BUSES = []
LOG = []


class Gate(MessageHandler[ParcelScanned]):
    '''Hands its post to the next shift, then tries to emit: it is no longer the bus's.'''

    def handle(self, msg):
        LOG.append(("gate", msg.parcel))
        BUSES[0].gate = Gate()
        self.emit(RoutePlanned(msg.parcel, 0))


class Sorter(MessageHandler[ParcelScanned]):
    def handle(self, msg):
        LOG.append(("sorter", msg.parcel))


class Plan(MessageHandler[RoutePlanned]):
    def handle(self, msg):
        LOG.append(("plan", msg.parcel))
"""

SHIFT_ROUTING = """
from mycelium_mono import routing_config
from parcel9.messages import ParcelScanned, RoutePlanned  # noqa: F401
from parcel9.shift import Gate, Plan, Sorter


@routing_config(inline=INLINE)
class ShiftBus:
    ParcelScanned = [Gate, Sorter]
    RoutePlanned = [Plan]
"""


def test_a_handler_that_replaces_itself_mid_emit_is_told_why_it_cannot_emit(
        tmp_path: Path, build: Build) -> None:
    """`bus.gate = Gate()` from inside Gate.handle frees the old gate at once (README: "the
    old one is freed"), so its own emit after that fails; every build agrees, and the later
    handler still runs. Found: the NotAttachedError listed "before one did, or after its bus
    was detached or its runtime shut down" and told it to "pass the handler to a
    MonolithBus", not that it had been replaced."""
    from mycelium_mono.handlers import NotAttachedError

    routing = load(tmp_path, build, SHIFT_ROUTING, 39840, extra={"shift": SHIFT_HANDLERS})
    shift = sys.modules[f"{PACKAGE}.shift"]
    first = shift.Gate()
    bus = routing.ShiftBus(gate=first, sorter=shift.Sorter(), plan=shift.Plan())
    shift.BUSES.append(bus)
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit(shift.ParcelScanned(1, 1))
    (error,) = caught.value.exceptions
    assert isinstance(error, NotAttachedError)
    assert "it was replaced on its bus (bus.<service> = ...)" in str(error)
    assert shift.LOG == [("gate", 1), ("sorter", 1)]
    assert bus.gate is not first


# --- several buses, two build paths, one process ------------------------------------------

TWO_CLASSES_ROUTING = """
from mycelium_mono import routing_config
from parcel9.messages import CustomsHold, ParcelScanned, RoutePlanned  # noqa: F401
from parcel9.handlers import Customs, Planner, Scanner


@routing_config(inline=INLINE)
class DepotBus:
    ParcelScanned = [Scanner]
    RoutePlanned = [Planner]
    CustomsHold = [Customs]


@routing_config(inline=OTHER)
class BorderBus:
    CustomsHold = [Customs]
    ParcelScanned = [Scanner]
"""

NIGHT_ROUTING = """
from mycelium_mono import routing_config
from parcel9.messages import CustomsHold, ParcelScanned, RoutePlanned  # noqa: F401
from parcel9.handlers import Customs, Planner, Scanner


@routing_config(inline=OTHER)
class NightBus:
    RoutePlanned = [Planner]
    ParcelScanned = [Scanner]
    CustomsHold = [Customs]
"""


def by_hand(scanner: Any, planner: Any, customs: Any, msg: Any) -> None:
    """What a routing table means, written out: the scanner's emit calls the planner or the
    customs desk before the scanner's next line (depth first); None: not routed there."""
    def emit(m: Any) -> None:
        kind = type(m).__name__
        target = {"ParcelScanned": scanner, "RoutePlanned": planner,
                  "CustomsHold": customs}[kind]
        if target is None:
            raise TypeError(f"no route for {kind}")
        if kind == "CustomsHold":
            target.hold(m)
        else:
            target.handle(m)

    object.__setattr__(scanner, "emit", emit)
    try:
        emit(msg)
    finally:
        object.__delattr__(scanner, "emit")


def test_three_buses_of_two_modules_and_both_build_paths_agree_with_hand_written_calls(
        tmp_path: Path, build: Build) -> None:
    """Two routing classes in one module (inlined and called), a third in another module built
    by the other path (hook vs. run time) with the other inline setting, all in one process:
    the same handler classes in each, one plain Customs desk shared by all three. A scan
    whose plan BorderBus does not route fails there, as the README says, after the scanner
    ran; the log is the hand-written calls' log."""
    other = str(not build.inline)
    routing = load(tmp_path, build, TWO_CLASSES_ROUTING.replace("OTHER", other), 39850,
                   extra={"night": NIGHT_ROUTING.replace("OTHER", other)})
    night_path = "runtime" if build.path == "hook" else "hook"
    if night_path == "hook":
        from mycelium_mono import MyceliumHookWarning
        from mycelium_mono.routing.hook import install_import_hook
        # The package's routing module was built at run time first: the hook says so, and
        # still rewrites the module it imports now.
        with pytest.warns(MyceliumHookWarning, match="imported before the mycelium-mono "
                          "import hook was installed"), install_import_hook([PACKAGE]):
            night = importlib.import_module(f"{PACKAGE}.night")
    else:
        night = importlib.import_module(f"{PACKAGE}.night")
    assert night.NightBus.__mycelium_origin__ == ("import hook" if night_path == "hook"
                                                  else "runtime")
    h = handlers_module()
    desk = h.Customs()
    depot = routing.DepotBus(scanner=h.Scanner("depot"), planner=h.Planner("d-plan"),
                             customs=desk)
    border = routing.BorderBus(customs=desk, scanner=h.Scanner("border"))
    nightly = night.NightBus(planner=h.Planner("n-plan"), scanner=h.Scanner("night"),
                             customs=desk)
    feed = [(depot, h.ParcelScanned(1, 3)), (border, h.ParcelScanned(2, 7)),
            (nightly, h.ParcelScanned(3, 7)), (nightly, h.ParcelScanned(4, 1)),
            (depot, h.ParcelScanned(5, 7)), (border, h.ParcelScanned(6, 2))]
    outcomes = []
    for bus, msg in feed:
        try:
            bus.emit(msg)
            outcomes.append("ok")
        except ExceptionGroup as group:
            (error,) = group.exceptions
            outcomes.append(str(error).splitlines()[0])
    got = (list(h.LOG), list(desk.held), outcomes)

    h.LOG.clear()
    hand_desk = h.Customs()
    hand = {"depot": (h.Scanner("depot"), h.Planner("d-plan")),
            "border": (h.Scanner("border"), None),
            "night": (h.Scanner("night"), h.Planner("n-plan"))}
    names = {id(depot): "depot", id(border): "border", id(nightly): "night"}
    hand_outcomes = []
    for bus, msg in feed:
        scanner, planner = hand[names[id(bus)]]
        try:
            by_hand(scanner, planner, hand_desk, msg)
            hand_outcomes.append("ok")
        except TypeError:
            hand_outcomes.append("BorderBus has no route for RoutePlanned")
    assert got == (list(h.LOG), list(hand_desk.held), hand_outcomes)
    assert desk.held == [2, 3, 5]
    assert outcomes.count("ok") == 5


def test_emits_from_several_threads_into_one_sync_bus_are_each_threads_own_calls(
        tmp_path: Path, build: Build) -> None:
    """The README says the monolith runs on one thread and says no more. Held: a bus with no
    background route keeps no state per emit, so four threads emitting at once (a thread
    switch forced every 10 µs) lose nothing and raise nothing; each thread's messages reach
    the handlers depth first, in that thread's order, as the same calls made by hand in each
    thread would. (Handlers' own state is theirs to guard, as for any call.)"""
    routing = load(tmp_path, build, ROUTING, 39860)
    h = handlers_module()
    bus = routing.DepotBus(scanner=h.Scanner(), planner=h.Planner(), customs=h.Customs())
    threads_n, per_thread = 4, 3_000
    start = threading.Barrier(threads_n)
    failures: list[BaseException] = []

    def feed(k: int) -> None:
        start.wait(10)
        try:
            for i in range(per_thread):
                bus.emit(h.ParcelScanned(k * per_thread + i, 7 if i % 10 == 0 else i % 5))
        except BaseException as exc:  # reported below
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        workers = [threading.Thread(target=feed, args=(k,)) for k in range(threads_n)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
    finally:
        sys.setswitchinterval(interval)
    assert not any(w.is_alive() for w in workers) and failures == []

    def expected(k: int) -> list[tuple[Any, ...]]:
        log: list[tuple[Any, ...]] = []
        for i in range(per_thread):
            parcel, depot = k * per_thread + i, 7 if i % 10 == 0 else i % 5
            log.append(("scan", parcel))
            log.append(("customs", parcel) if depot == 7 else ("plan", parcel, depot + 1))
        return log

    for k in range(threads_n):
        own = [entry for entry in h.LOG if k * per_thread <= entry[1] < (k + 1) * per_thread]
        assert own == expected(k), f"thread {k}"
    assert len(h.LOG) == 2 * threads_n * per_thread
    assert sorted(bus.customs.held) == [p for k in range(threads_n) for p in
                                        range(k * per_thread, (k + 1) * per_thread, 10)]


RELAY_ROUTING = """
from mycelium_mono import handles, routing_config
from parcel9.messages import ParcelScanned, RoutePlanned  # noqa: F401

BUSES = {}


class Relay:
    '''A plain class serving two buses, forwarding each message to the other bus.'''

    @handles(ParcelScanned)
    def scanned(self, msg):
        BUSES["plans"].emit(RoutePlanned(msg.parcel, 0))

    @handles(RoutePlanned)
    def planned(self, msg):
        BUSES["scans"].emit(ParcelScanned(msg.parcel, 0))


@routing_config(inline=INLINE)
class ScanDesk:
    ParcelScanned = [Relay]


@routing_config(inline=INLINE)
class PlanDesk:
    RoutePlanned = [Relay]
"""


def test_a_cycle_through_two_buses_names_both_in_its_note(
        tmp_path: Path, build: Build) -> None:
    """Found: a plain handler shared by two buses, emitting on the other one, recursed until
    Python's limit and the EmitCycleError's note read "emit_parcel_scanned(ParcelScanned) →
    relay.scanned → emit_parcel_scanned(ParcelScanned)": a handler that never emits a scan,
    the other bus's half of the cycle left out. The note now walks both buses."""
    from mycelium_mono.handlers import EmitCycleError

    routing = load(tmp_path, build, RELAY_ROUTING, 39870)
    relay = routing.Relay()
    routing.BUSES.update(scans=routing.ScanDesk(relay=relay),
                         plans=routing.PlanDesk(relay=relay))
    with pytest.raises(EmitCycleError) as raised:
        routing.BUSES["scans"].emit(routing.ParcelScanned(1, 1))
    assert raised.value.cycle == (
        "emit_parcel_scanned(ParcelScanned)", "relay.scanned",
        "PlanDesk.emit_route_planned(RoutePlanned)", "relay.planned",
        "emit_parcel_scanned(ParcelScanned)")
    assert str(raised.value).startswith("ScanDesk and PlanDesk: their handlers emit each "
                                        "other's messages in a cycle that did not end")
    assert "note: the cycle: emit_parcel_scanned(ParcelScanned) → relay.scanned → PlanDesk." \
        in str(raised.value)
