"""Round 9, promise9: the README's new sentences of today, each read literally by a stranger.

Domain: a library-book lending desk (borrow requests, holds, overdue notices, an archive
written in the background). Each test quotes the sentence it checks. Type ids 38900-38999.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, load_build

from mycelium_mono.pytest_plugin import forget_modules

PACKAGE = "lending9"

MESSAGES = """
from mycelium_mono import message, U32, U64

@message(type_id=BASE, topic="lib.borrow")
class BorrowRequested:
    book: U64
    reader: U32

@message(type_id=BASE1, topic="lib.hold")
class HoldPlaced:
    book: U64
    reader: U32

@message(type_id=BASE2, topic="lib.overdue")
class OverdueNotice:
    book: U64
    days: U32
"""

HANDLERS = """
import asyncio
import threading

from mycelium_mono import MessageHandler, handles
from lending9.messages import BorrowRequested, HoldPlaced, OverdueNotice

LOG = []
PER_THREAD = {}


def note(*entry):
    PER_THREAD.setdefault(threading.get_ident(), []).append(entry)


class Lender(MessageHandler[BorrowRequested]):
    '''A book on loan gets a hold placed for the next reader (never a cycle by itself).'''

    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += 1
        note("lend", msg.book)
        self.emit(HoldPlaced(msg.book, msg.reader + 1))


class HoldDesk(MessageHandler[HoldPlaced]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += 1
        note("hold", msg.book)


class Clerk:
    '''A plain @handles class: it never emits.'''

    def __init__(self):
        self.notices = []

    @handles(OverdueNotice)
    def overdue(self, msg):
        self.notices.append(msg.book)


class Archive(MessageHandler[HoldPlaced]):
    '''The background side of a hybrid route.'''

    def __init__(self):
        self.got = []

    async def handle(self, msg):
        await asyncio.sleep(0)
        self.got.append(msg.book)
"""

CYCLE_HANDLERS = """
from mycelium_mono import MessageHandler
from lending9.messages import BorrowRequested, HoldPlaced


class Lender(MessageHandler[BorrowRequested]):
    '''Lending a book places a hold ...'''

    def handle(self, msg):
        self.emit(HoldPlaced(msg.book, msg.reader))


class HoldDesk(MessageHandler[HoldPlaced]):
    '''... and a hold asks to borrow it again: a cycle that never ends.'''

    def handle(self, msg):
        self.emit(BorrowRequested(msg.book, msg.reader))
"""

CYCLE_ROUTING = """
from mycelium_mono import routing_config
from lending9.messages import BorrowRequested, HoldPlaced  # noqa: F401
from lending9.handlers import HoldDesk, Lender


@routing_config(inline=INLINE)
class LoanBus:
    BorrowRequested = [Lender]
    HoldPlaced = [HoldDesk]
"""

SYNC_ROUTING = """
from mycelium_mono import routing_config
from lending9.messages import BorrowRequested, HoldPlaced, OverdueNotice  # noqa: F401
from lending9.handlers import Clerk, HoldDesk, Lender


@routing_config(inline=INLINE)
class LoanBus:
    BorrowRequested = [Lender]
    HoldPlaced = [HoldDesk]
    OverdueNotice = [Clerk]
"""

HYBRID_ROUTING = """
from mycelium_mono import route, routing_config
from lending9.messages import BorrowRequested, HoldPlaced, OverdueNotice  # noqa: F401
from lending9.handlers import Archive, Clerk, HoldDesk, Lender


@routing_config(inline=INLINE)
class LoanBus:
    BorrowRequested = [Lender]
    HoldPlaced = route(sync=[HoldDesk], background=[Archive])
    OverdueNotice = [Clerk]
"""

PLAIN_ROUTING = """
from mycelium_mono import routing_config
from lending9.messages import OverdueNotice  # noqa: F401
from lending9.handlers import Clerk


@routing_config(inline=INLINE)
class ClerkBus:
    OverdueNotice = [Clerk]
"""


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


def load(tmp_path: Path, build: Build, routing: str, base: int,
         handlers: str = HANDLERS) -> Any:
    messages = (MESSAGES.replace("BASE2", str(base + 2)).replace("BASE1", str(base + 1))
                .replace("BASE", str(base)))
    return load_build(tmp_path, PACKAGE, {"messages": messages, "handlers": handlers,
                                          "routing": routing}, build)


def h() -> Any:
    return sys.modules[f"{PACKAGE}.handlers"]


def m() -> Any:
    return sys.modules[f"{PACKAGE}.messages"]


# --- "Handlers that emit each other's messages in a cycle that never ends ..." ---------


def test_a_cycle_raises_one_emit_cycle_error_whose_note_spells_it_and_skips_on_error(
        tmp_path: Path, build: Build) -> None:
    """Found: on an inlined bus the note skipped the handlers ("emit_borrow_requested(
    BorrowRequested) → emit_hold_placed(HoldPlaced) → ..."): an inlined body has no frame.
    README: "... recurse until Python's limit: the emit raises one `EmitCycleError` (a
    `RecursionError`, from `mycelium_mono.handlers`) whose `note:` spells the cycle out,
    `emit_a(A) → handler.handle → emit_b(B) → …`, not one `ExceptionGroup` per nested emit,
    and `on_error` is not called for it." """
    from mycelium_mono.handlers import EmitCycleError

    routing = load(tmp_path, build, CYCLE_ROUTING, 38900, CYCLE_HANDLERS)
    told: list[tuple[Exception, str, object]] = []
    bus = routing.LoanBus(lender=h().Lender(), hold_desk=h().HoldDesk(),
                          on_error=lambda exc, where, msg: told.append((exc, where, msg)))
    with pytest.raises(BaseException) as raised:
        bus.emit(m().BorrowRequested(7, 1))
    exc = raised.value
    assert type(exc) is EmitCycleError and isinstance(exc, RecursionError)
    assert not isinstance(exc, BaseExceptionGroup)
    text = str(exc)
    assert "note: " in text, text
    note = text[text.index("note: "):]
    assert ("emit_borrow_requested(BorrowRequested) → lender.handle → "
            "emit_hold_placed(HoldPlaced) → hold_desk.handle → "
            "emit_borrow_requested(BorrowRequested)") in note, note
    assert told == []


# --- "dropping the bus does not (each handler's self.emit keeps its bus alive ...)" -----


def test_a_dropped_bus_still_delivers_and_is_reached_through_handler_emit_self(
        tmp_path: Path, build: Build) -> None:
    """README: "dropping the bus does not [free its services] (each handler's `self.emit`
    keeps its bus alive and delivering: `handler.emit.__self__.detach()` reaches a bus you
    no longer hold)". """
    from mycelium_mono import HandlerOwnedError

    routing = load(tmp_path, build, SYNC_ROUTING, 38910)
    lender, desk = h().Lender(), h().HoldDesk()
    bus = routing.LoanBus(lender=lender, hold_desk=desk, clerk=h().Clerk())
    del bus
    gc.collect()
    lender.emit(m().HoldPlaced(3, 4))  # still delivering: the hold desk sees it
    assert desk.n == 1
    with pytest.raises(HandlerOwnedError):
        routing.LoanBus(lender=lender, hold_desk=h().HoldDesk(), clerk=h().Clerk())
    lender.emit.__self__.detach()
    again = routing.LoanBus(lender=lender, hold_desk=desk, clerk=h().Clerk())
    again.emit(m().BorrowRequested(5, 1))
    assert (lender.n, desk.n) == (1, 2)


# --- "pickle and copy.deepcopy(bus) build a new bus around copies of its services ..." --


def told_bus(exc: Exception, where: str, msg: object) -> None:
    """A module-level on_error, so a pickled bus can carry it."""


def told_backlog(exc: BaseException) -> None:
    """The backlog's own callback."""


def test_deepcopy_and_pickle_give_copies_same_on_error_and_a_new_empty_backlog(
        tmp_path: Path, build: Build) -> None:
    """README: "`pickle` and `copy.deepcopy(bus)` build a new bus around copies of its
    services, with the same `on_error` and a new, empty backlog with the same settings". The
    original has three background calls queued when it is copied: the copy has none."""
    from mycelium_mono import BackgroundBacklog

    routing = load(tmp_path, build, HYBRID_ROUTING, 38920)

    async def scenario() -> None:
        backlog = BackgroundBacklog(maxsize=4, policy="drop_oldest", on_error=told_backlog)
        bus = routing.LoanBus(lender=h().Lender(), hold_desk=h().HoldDesk(), clerk=h().Clerk(),
                              archive=h().Archive(), background=backlog, on_error=told_bus)
        for book in range(3):
            bus.emit(m().BorrowRequested(book, 1))
        assert bus.background.stats.submitted == 3
        for twin in (copy.deepcopy(bus), pickle.loads(pickle.dumps(bus))):
            assert twin is not bus and twin.lender is not bus.lender
            assert twin.lender.n == 3  # copies of the services, state included
            assert twin._on_error is told_bus
            b = twin.background
            assert b is not backlog
            assert (b.maxsize, b.policy, b.on_error) == (4, "drop_oldest", told_backlog)
            assert (b.stats.submitted, b.stats.completed, b.stats.dropped) == (0, 0, 0)
            assert len(b._queue) == 0
            twin.emit(m().BorrowRequested(100, 1))  # the copy works on its own
            await b.drain()
            assert twin.archive.got == [100]
            assert twin.lender.n == 4 and bus.lender.n == 3
        await bus.background.drain()
        assert bus.archive.got == [0, 1, 2]

    asyncio.run(scenario())


def test_copy_copy_refuses_message_handlers_and_shares_plain_classes(
        tmp_path: Path, build: Build) -> None:
    """README: "`copy.copy(bus)` would give the same `MessageHandler`s to a second bus and
    raises `HandlerOwnedError` saying so (a bus of plain `@handles` classes only is copied
    sharing them)." """
    from mycelium_mono import HandlerOwnedError

    routing = load(tmp_path, build, SYNC_ROUTING, 38930)
    bus = routing.LoanBus(lender=h().Lender(), hold_desk=h().HoldDesk(), clerk=h().Clerk())
    with pytest.raises(HandlerOwnedError, match=r"copy\.copy"):
        copy.copy(bus)
    bus.emit(m().BorrowRequested(1, 1))  # unchanged by the refusal
    assert bus.hold_desk.n == 1

    forget_modules(PACKAGE)
    plain = load(tmp_path / "plain", build, PLAIN_ROUTING, 38935)
    clerk = h().Clerk()
    desk = plain.ClerkBus(clerk=clerk)
    other = copy.copy(desk)
    assert other is not desk and other.clerk is clerk
    other.emit(m().OverdueNotice(9, 3))
    desk.emit(m().OverdueNotice(8, 3))
    assert clerk.notices == [9, 8]


# --- Threads --------------------------------------------------------------------------


def test_emits_from_several_threads_on_a_sync_bus_are_each_threads_own_depth_first(
        tmp_path: Path, build: Build) -> None:
    """README: "A bus with no background route keeps no state per emit: emits from several
    threads are each thread's own calls, depth first in that thread". Four threads, 300
    borrows each: each thread sees lend(b), hold(b), lend(b+1), hold(b+1), ... exactly."""
    routing = load(tmp_path, build, SYNC_ROUTING, 38940)
    bus = routing.LoanBus(lender=h().Lender(), hold_desk=h().HoldDesk(), clerk=h().Clerk())
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    idents: list[int] = []

    def worker(base: int) -> None:
        idents.append(threading.get_ident())
        try:
            start.wait(5)
            for book in range(base, base + 300):
                bus.emit(m().BorrowRequested(book, 1))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    for ident in idents:
        seen = h().PER_THREAD[ident]
        base = seen[0][1] // 1000 * 1000
        expected = [e for b in range(base, base + 300) for e in (("lend", b), ("hold", b))]
        assert seen == expected


def test_a_hybrid_emit_from_a_second_threads_loop_is_refused_before_any_handler(
        tmp_path: Path, build: Build) -> None:
    """README: "an emit from a loop running in another thread, while the first one still
    runs, raises `OtherEventLoopError` (`mycelium_mono.bus`) before any handler ran", and
    (found: not for an emit whose handler makes the hybrid emit: that handler ran first; the
    README now says so)
    (Hybrid) "an emit from another thread's loop is refused with `NoEventLoopError`"."""
    from mycelium_mono.bus import NoEventLoopError, OtherEventLoopError

    routing = load(tmp_path, build, HYBRID_ROUTING, 38945)
    bus = routing.LoanBus(lender=h().Lender(), hold_desk=h().HoldDesk(), clerk=h().Clerk(),
                          archive=h().Archive())
    running, release = threading.Event(), threading.Event()

    async def first_loop() -> None:
        bus.emit(m().BorrowRequested(1, 1))
        running.set()
        await asyncio.to_thread(release.wait, 10)
        await bus.background.drain()

    first = threading.Thread(target=asyncio.run, args=(first_loop(),))
    first.start()
    try:
        assert running.wait(10)

        async def second_loop() -> None:
            bus.emit(m().HoldPlaced(2, 1))  # the hybrid route's own emit

        with pytest.raises(OtherEventLoopError) as raised:
            asyncio.run(second_loop())
        assert isinstance(raised.value, NoEventLoopError)
        assert (bus.lender.n, bus.hold_desk.n) == (1, 1)  # no handler ran for book 2

        async def nested_loop() -> None:
            bus.emit(m().BorrowRequested(3, 1))  # its handler's emit is the hybrid one

        # As the README now says: nested in a handler it is that handler's failure (the
        # handler ran, as after a full backlog's refusal), the backlog untouched.
        with pytest.raises(ExceptionGroup) as group:
            asyncio.run(nested_loop())
        assert group.group_contains(OtherEventLoopError)
        assert (bus.lender.n, bus.hold_desk.n) == (2, 1)
    finally:
        release.set()
        first.join(10)
    assert bus.archive.got == [1]


# --- Hybrid backlog: close() and drain() -------------------------------------------------

CHAIN_HANDLERS = HANDLERS + """

class Relay(MessageHandler[OverdueNotice]):
    '''In the background: an overdue notice of n days queues one of n-1 days.'''

    def __init__(self):
        self.seen = []

    async def handle(self, msg):
        await asyncio.sleep(0)
        self.seen.append((msg.book, msg.days))
        if msg.days > 0:
            self.emit(OverdueNotice(msg.book, msg.days - 1))
"""

CHAIN_ROUTING = """
from mycelium_mono import route, routing_config
from lending9.messages import OverdueNotice  # noqa: F401
from lending9.handlers import Clerk, Relay


@routing_config(inline=INLINE)
class NoticeBus:
    OverdueNotice = route(sync=[Clerk], background=[Relay])
"""


def test_close_runs_what_is_queued_and_what_its_handlers_queue_meanwhile(
        tmp_path: Path, build: Build) -> None:
    """README: "`close(timeout)` runs what is queued, the calls its handlers queue meanwhile
    included, and counts the calls it gave up on as `dropped`". Five notices of 3 days each
    chain down to 0 in the background: 20 calls, all run by close(), none dropped."""
    routing = load(tmp_path, build, CHAIN_ROUTING, 38950, CHAIN_HANDLERS)

    async def scenario() -> Any:
        bus = routing.NoticeBus(clerk=h().Clerk(), relay=h().Relay())
        for book in range(5):
            bus.emit(m().OverdueNotice(book, 3))
        await bus.background.close(timeout=10)
        return bus

    bus = asyncio.run(scenario())
    assert sorted(bus.relay.seen) == [(b, d) for b in range(5) for d in (0, 1, 2, 3)]
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.dropped) == (20, 20, 0)


SLOW_HANDLERS = HANDLERS + """

GATE = None


class Slow(MessageHandler[OverdueNotice]):
    def __init__(self):
        self.done = []

    async def handle(self, msg):
        await GATE.wait()
        self.done.append(msg.book)
"""

SLOW_ROUTING = CHAIN_ROUTING.replace("Relay", "Slow")


def test_close_timeout_and_asyncio_run_ending_count_the_calls_not_run_as_dropped(
        tmp_path: Path, build: Build) -> None:
    """README: "... counts the calls it gave up on as `dropped`, as it counts a call cut off
    by `asyncio.run` ending with it in flight". Three calls stuck on a gate: close(0.2)
    drops all three; a second bus whose asyncio.run ends with one in flight and two queued
    counts the one in flight (and the two behind it never run either)."""
    routing = load(tmp_path, build, SLOW_ROUTING, 38955, SLOW_HANDLERS)

    async def closed() -> Any:
        h().GATE = asyncio.Event()
        bus = routing.NoticeBus(clerk=h().Clerk(), slow=h().Slow())
        for book in range(3):
            bus.emit(m().OverdueNotice(book, 1))
        await bus.background.close(timeout=0.2)
        return bus

    bus = asyncio.run(closed())
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.dropped) == (3, 0, 3)

    async def abandoned() -> Any:
        h().GATE = asyncio.Event()
        bus = routing.NoticeBus(clerk=h().Clerk(), slow=h().Slow())
        for book in range(3):
            bus.emit(m().OverdueNotice(book, 1))
        for _ in range(5):
            await asyncio.sleep(0)  # the worker takes the first call and waits on the gate
        return bus

    bus = asyncio.run(abandoned())
    stats = bus.background.stats
    assert bus.slow.done == []
    assert stats.submitted == 3 and stats.completed == 0
    assert stats.dropped >= 1, stats  # the call in flight when asyncio.run ended


WAITING_HANDLERS = HANDLERS + """

BACKLOG = None
RESULTS = []


class Impatient(MessageHandler[OverdueNotice]):
    async def handle(self, msg):
        try:
            if msg.days == 0:
                await BACKLOG.drain()
            elif msg.days == 1:
                await BACKLOG.wait_for_space(room=BACKLOG.maxsize)
            elif msg.days == 2:
                await BACKLOG.close()
            else:
                return
        except BaseException as exc:
            RESULTS.append((msg.days, type(exc).__name__, str(exc)))
            return
        RESULTS.append((msg.days, "returned", ""))
"""

WAITING_ROUTING = CHAIN_ROUTING.replace("Relay", "Impatient")


def test_drain_wait_for_space_and_close_from_inside_a_background_handler_raise(
        tmp_path: Path, build: Build) -> None:
    """README: "Await `drain()`, `wait_for_space()` and `close()` in the producer: a
    background handler runs on the backlog's one task, so from inside one they would wait
    for themselves, and raise `RuntimeError`." (wait_for_space is asked while one more call
    is queued behind the handler's own, on a backlog of 2: it would wait.)"""
    from mycelium_mono import BackgroundBacklog

    routing = load(tmp_path, build, WAITING_ROUTING, 38960, WAITING_HANDLERS)

    async def scenario() -> None:
        backlog = BackgroundBacklog(maxsize=2)
        h().BACKLOG = backlog
        h().RESULTS.clear()
        bus = routing.NoticeBus(clerk=h().Clerk(), impatient=h().Impatient(),
                                background=backlog)
        for days in (0, 1, 2):
            bus.emit(m().OverdueNotice(days, days))
            if days == 1:  # one queued behind it: the backlog is full while it runs
                bus.emit(m().OverdueNotice(9, 9))
            await asyncio.wait_for(backlog.drain(), 5)  # no hang: each refused at once
        await asyncio.wait_for(backlog.close(), 5)

    asyncio.run(scenario())
    results = h().RESULTS
    assert [(d, kind) for d, kind, _ in results] == [
        (0, "RuntimeError"), (1, "RuntimeError"), (2, "RuntimeError")], results


# --- "so are those of a run() that returned or was cancelled" -----------------------------


@pytest.mark.parametrize("how", ["returned", "cancelled"])
def test_a_run_service_that_returned_or_was_cancelled_no_longer_holds_back_publishers(
        tmp_path: Path, how: str) -> None:
    """README: a given-up service's "subscriptions are closed, so a full "block" one no
    longer holds back every publisher of its types; so are those of a `run()` that returned
    or was cancelled". A reading-room service subscribes (maxsize 2, "block") and ends; 20
    overdue notices are then published without waiting."""
    from mycelium_mono import MessageBus, ServiceRuntime, message
    from mycelium_mono.messages import U32, U64

    @message(type_id=38990 if how == "returned" else 38991, topic="lib.room")
    class RoomNotice:
        book: U64
        days: U32

    subscribed = asyncio.Event()

    class ReadingRoom:
        async def run(self, ctx: Any) -> None:
            ctx.subscribe(RoomNotice, maxsize=2, policy="block")
            subscribed.set()
            if how == "cancelled":
                await asyncio.Event().wait()

    async def scenario() -> None:
        bus = MessageBus()
        runtime = ServiceRuntime(bus)
        service = await runtime.spawn_service(ReadingRoom())
        await asyncio.wait_for(subscribed.wait(), 5)
        if how == "cancelled":
            service.task.cancel()
        await asyncio.wait(
            [service.task], timeout=5)
        assert service.done
        publisher = bus.publisher(RoomNotice)
        for book in range(20):
            await asyncio.wait_for(publisher.publish(RoomNotice(book, 1)), 2)
        assert all(sub.closed for sub in service.context.subscriptions)
        await runtime.shutdown()

    asyncio.run(scenario())


# --- Bandit: "a per-order PnL bound ... IMPLAUSIBLE" --------------------------------------


def test_bandit_refuses_a_fill_gaining_or_losing_more_than_the_bound_as_implausible() -> None:
    """examples/bandit/README.md: "a paper fill gaining or losing more than
    `max_order_pnl_usd_e6` is a broken pool or price: `IMPLAUSIBLE`, and every recorded PnL
    fits the trail's I64". A gaining fill and a losing one (fee-on-transfer middle token),
    each over a 1 USD bound, are both refused and booked nowhere; an absurd pool under the
    default bound gives an order the trail can record."""
    from bandit.protocol import ArbitrageSignal, OrderExecution, OrderRequest, RejectReason
    from bandit.services import ExecutionService, RiskConfig, RiskManager
    from bandit.tokens import TOKENS

    from mycelium_mono.handlers import attach_emitter

    e18 = 10**18
    weth, usdc, fot = (next(t for t in TOKENS if t.symbol == s) for s in ("WETH", "USDC", "FOT"))

    def book_signal(oid: int, mid: bytes, mid_reserves: tuple[int, int],
                    amount_in: int = 10 * e18) -> ArbitrageSignal:
        return ArbitrageSignal(
            opportunity_id=oid, source_seq=oid, timestamp_ns=0, deadline_block=9,
            buy_pool=b"\x01" * 20, sell_pool=b"\x02" * 20, token_in=weth.address,
            token_mid=mid, amount_in=amount_in, expected_mid=0, expected_out=0, gas_cost=0,
            buy_reserve_in=1000 * e18, buy_reserve_out=mid_reserves[0],
            sell_reserve_in=mid_reserves[1], sell_reserve_out=1000 * e18)

    risk = RiskManager(RiskConfig(max_order_pnl_usd_e6=10**6))
    requests: list[Any] = []
    attach_emitter(risk, requests.append)
    risk.handle(book_signal(1, usdc.address, (2_100_000 * 10**6, 2_000_000 * 10**6)))  # gains
    risk.handle(book_signal(2, fot.address, (2000 * e18, 2000 * e18)))  # loses fees and tax
    assert [(r.approved, r.reason) for r in requests] == [
        (False, RejectReason.IMPLAUSIBLE), (False, RejectReason.IMPLAUSIBLE)]
    assert isinstance(requests[0], OrderRequest)
    state = risk.state()
    assert (state.approved, state.pnl_usd_e6, state.rejected["IMPLAUSIBLE"]) == (0, 0, 2)
    assert not state.halted  # the loss was never booked

    # A broken pool (a million times the price) under the default bound: refused, and the
    # execution trail records it without overflowing its I64.
    risk, ex = RiskManager(), ExecutionService()
    executions: list[Any] = []
    attach_emitter(risk, ex.handle)
    attach_emitter(ex, executions.append)
    risk.handle(book_signal(3, usdc.address, (2_000_000 * 10**12, 2_000_000 * 10**6)))
    [order] = executions
    assert isinstance(order, OrderExecution)
    assert order.reason == RejectReason.IMPLAUSIBLE
    assert -(2**63) <= order.pnl_usd_e6 < 2**63
