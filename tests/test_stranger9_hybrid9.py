"""Stranger round 9 (hybrid9): real-time ad bidding on a hybrid bus.

A bid request is answered on the sync critical path (the bidder prices it and emits a bid
decision, which billing books inline); analytics (async, slow), fraud logging (sync) and a
re-bidder run as background handlers on the backlog. Every test counts calls submitted vs
run vs dropped vs failed, and compares with the same handlers called by hand in order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from mycelium_mono import (
    U32,
    U64,
    BackgroundBacklog,
    BacklogFull,
    MessageHandler,
    message,
    route,
    routing_config,
)
from mycelium_mono.bus import NoEventLoopError
from mycelium_mono.bus.hybrid import BacklogClosedError

LOG: list[str] = []


@message(type_id=39700, topic="ads.bid_request")
class BidRequest:
    req: U64
    floor: U32


@message(type_id=39701, topic="ads.bid_decision")
class BidDecision:
    req: U64
    price: U32


class Bidder(MessageHandler[BidRequest]):
    """Sync critical path; ``busy_on`` spins the CPU for ``busy_s`` (the loop stalls)."""

    busy_on = -1
    busy_s = 0.0

    def handle(self, r: BidRequest) -> None:
        if r.req == self.busy_on:
            end = time.monotonic() + self.busy_s
            while time.monotonic() < end:  # a CPU-bound section, no await anywhere
                pass
        LOG.append(f"bid {r.req}")
        self.emit(BidDecision(r.req, price=r.floor + 1))


class Billing(MessageHandler[BidDecision]):
    def handle(self, d: BidDecision) -> None:
        LOG.append(f"bill {d.req}")


class Analytics(MessageHandler[BidDecision]):
    """Background, async, slower than the sync path (``delay`` s per call)."""

    delay = 0.0
    gate: asyncio.Event | None = None

    async def handle(self, d: BidDecision) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        LOG.append(f"analytics {d.req}")


class FraudLog(MessageHandler[BidDecision]):
    """Background, sync."""

    def handle(self, d: BidDecision) -> None:
        LOG.append(f"fraud {d.req}")


@routing_config
class AdBus:
    BidRequest = [Bidder]
    BidDecision = route(sync=[Billing], background=[Analytics, FraudLog])


def _bus(**options: Any) -> Any:
    LOG.clear()
    return AdBus(bidder=Bidder(), billing=Billing(), analytics=Analytics(), fraud_log=FraudLog(),
                 **options)  # fmt: skip


def _of(prefix: str) -> list[int]:
    return [int(line.split()[1]) for line in LOG if line.split()[0] == prefix]


def _by_hand(accepted: list[int], refused: list[int]) -> tuple[list[str], list[str]]:
    """The sync lines and the background lines the handlers give called by hand in order:
    a refused request bid (its nested emit was refused) but was never billed."""
    sync = []
    for req in sorted(accepted + refused):
        sync.append(f"bid {req}")
        if req in accepted:
            sync.append(f"bill {req}")
    background = [line for req in accepted for line in (f"analytics {req}", f"fraud {req}")]
    return sync, background


def _split() -> tuple[list[str], list[str]]:
    sync = [line for line in LOG if line.split()[0] in ("bid", "bill")]
    return sync, [line for line in LOG if line.split()[0] in ("analytics", "fraud")]


# -- findings ----------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["asyncio.run", "loop left open"])
def test_a_call_cut_off_when_its_loop_ends_is_dropped_and_the_next_drain_returns(
        ending: str) -> None:  # fmt: skip
    # An app that ends asyncio.run without draining (a request handler's loop, a test) with a
    # background call in flight: asyncio.run cancels the worker inside that call. The call was
    # counted nowhere (not completed, not dropped), so drain() in the next asyncio.run waited
    # for it for good: TimeoutError, with every other call already run. The same with a loop
    # run by run_until_complete and left open (its worker is never cancelled there).
    bus = _bus()
    bus.analytics.delay = 0.05

    async def first() -> None:
        for req in range(5):
            bus.emit(BidRequest(req, floor=10))
        while not LOG or "bill 4" not in LOG:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)  # the worker is inside analytics(0)

    async def second() -> None:
        bus.analytics.delay = 0.0
        bus.emit(BidRequest(99, floor=10))
        await asyncio.wait_for(bus.background.drain(), 5)

    loop = asyncio.new_event_loop()
    try:
        if ending == "asyncio.run":
            loop.close()
            asyncio.run(first())
            assert bus.background.stats.dropped == 1
        else:
            loop.run_until_complete(first())
        stats = bus.background.stats
        assert (stats.submitted, stats.completed, stats.queued) == (5, 0, 4)
        asyncio.run(second())
    finally:
        if not loop.is_closed():
            loop.run_until_complete(asyncio.sleep(0))  # the old worker takes its cancel
            loop.close()
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.dropped, stats.failed) == (6, 5, 1, 0)
    assert _of("analytics") == [1, 2, 3, 4, 99]  # the queued ones ran in the next loop, once
    assert _of("fraud") == [1, 2, 3, 4, 99]  # the cut-off call's second handler never ran
    assert _of("bill") == [0, 1, 2, 3, 4, 99]


@pytest.mark.parametrize("call", ["drain", "wait_for_space", "close"])
async def test_waiting_on_the_backlog_from_a_background_handler_raises_instead_of_hanging(
        call: str) -> None:  # fmt: skip
    # A background handler runs on the backlog's one worker: waiting inside it for the
    # backlog to be empty / have room / be closed waited for itself. It hung for good, and
    # every call behind it with it (drain() timed out with 0 of 3 calls completed).
    backlog = BackgroundBacklog(maxsize=2, on_error=lambda exc: failures.append(exc))
    failures: list[BaseException] = []
    ran: list[int] = []

    filled = asyncio.Event()

    async def flush_analytics(n: int) -> None:  # what a handler author might write
        await filled.wait()
        if call == "drain":
            await backlog.drain()
        elif call == "wait_for_space":
            await backlog.wait_for_space()
        else:
            await backlog.close()
        ran.append(n)

    async def record(n: int) -> None:
        ran.append(n)

    backlog.submit(flush_analytics, 0)
    await asyncio.sleep(0)  # the worker is inside flush_analytics(0)
    backlog.submit(record, 1)
    backlog.submit(record, 2)  # full now: wait_for_space() would wait for room
    filled.set()
    await asyncio.wait_for(backlog.drain(), 5)
    assert ran == [1, 2]
    assert [type(exc) for exc in failures] == [RuntimeError]
    assert "from inside a background handler (" in str(failures[0])
    assert "flush_analytics" in str(failures[0])
    stats = backlog.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.dropped) == (3, 3, 1, 0)


async def test_wait_for_space_in_a_background_handler_with_room_just_returns() -> None:
    backlog = BackgroundBacklog(maxsize=4)
    ran: list[int] = []

    async def polite(n: int) -> None:
        await backlog.wait_for_space()  # room: nothing to wait for, no error
        ran.append(n)

    for n in range(3):
        backlog.submit(polite, n)
    await asyncio.wait_for(backlog.drain(), 5)
    assert ran == [0, 1, 2]


async def test_a_second_thread_running_its_own_loop_is_refused_and_loses_nothing() -> None:
    # Two threads each running an event loop emitted on one bus: each submit from the other
    # loop restarted the worker there and cancelled the one in flight. 10 of 20 calls were
    # cut off uncounted and drain() hung in both threads. The README says to hand the
    # message to the loop's thread; the backlog now refuses with that help.
    bus = _bus()
    bus.analytics.delay = 0.001
    errors: list[BaseException] = []
    started = threading.Event()
    go_on = threading.Event()

    async def other_thread() -> None:
        started.set()
        await asyncio.to_thread(go_on.wait, 5)
        try:
            bus.emit(BidRequest(100, floor=1))
        except ExceptionGroup as group:  # the bidder's nested emit was refused
            errors.append(group)

    thread = threading.Thread(target=asyncio.run, args=(other_thread(),))
    thread.start()
    try:
        assert await asyncio.to_thread(started.wait, 5)
        for req in range(10):
            bus.emit(BidRequest(req, floor=1))
        go_on.set()
        await asyncio.to_thread(thread.join, 5)
        # The handed-over way the README gives: onto this loop, from the other thread.
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(loop.call_soon_threadsafe, bus.emit, BidRequest(101, floor=1))
        while "bill 101" not in LOG:
            await asyncio.sleep(0.001)
        await asyncio.wait_for(bus.background.drain(), 5)
    finally:
        go_on.set()
        thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], ExceptionGroup)
    refused = errors[0].subgroup(NoEventLoopError)
    assert refused is not None
    assert "call_soon_threadsafe(bus.emit, msg)" in str(refused.exceptions[0])
    assert _of("bid") == [*range(10), 100, 101] and 100 not in _of("bill")
    assert _of("analytics") == _of("fraud") == [*range(10), 101]
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.dropped, stats.failed) == (11, 11, 0, 0)


class Rebidder(MessageHandler[BidDecision]):
    """Background: a decision under the floor 5 is re-bid once (back through the sync path)."""

    async def handle(self, d: BidDecision) -> None:
        await asyncio.sleep(0.001)
        LOG.append(f"rebid {d.req}")
        if d.req < 100:
            self.emit(BidRequest(d.req + 100, floor=5))


@routing_config
class RebidBus:
    BidRequest = [Bidder]
    BidDecision = route(sync=[Billing], background=[Rebidder])


async def test_close_runs_what_the_queued_background_handlers_queue() -> None:
    # close() "runs what is queued"; drain() includes the calls handlers queue meanwhile.
    # close() refused those: each re-bid failed with BacklogClosedError (5 of 5 calls
    # failed, close() raised them), and each chain was left half run: the re-bid request
    # was bid on the sync path but never billed. Now close() runs them, as drain() does.
    bus = RebidBus(bidder=Bidder(), billing=Billing(), rebidder=Rebidder())
    LOG.clear()
    for req in range(5):
        bus.emit(BidRequest(req, floor=1))
    await asyncio.wait_for(bus.background.close(), 5)
    assert _of("bid") == _of("bill") == [*range(5), *range(100, 105)]
    assert _of("rebid") == [*range(5), *range(100, 105)]
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.dropped) == (10, 10, 0, 0)
    with pytest.raises(ExceptionGroup) as caught:  # closed now: the producer is refused
        bus.emit(BidRequest(7, floor=1))
    assert caught.group_contains(BacklogClosedError)


async def test_close_with_a_timeout_drops_a_handler_chain_that_never_ends() -> None:
    # A background handler that re-emits forever: close(timeout) still returns, counting
    # the cut-off call and the queued one as dropped; nothing runs after it.

    class Forever(MessageHandler[BidDecision]):
        async def handle(self, d: BidDecision) -> None:
            await asyncio.sleep(0.001)
            LOG.append(f"rebid {d.req}")
            self.emit(BidRequest(d.req + 1, floor=1))

    @routing_config
    class ForeverBus:
        BidRequest = [Bidder]
        BidDecision = route(sync=[Billing], background=[Forever])

    bus = ForeverBus(bidder=Bidder(), billing=Billing(), forever=Forever())
    LOG.clear()
    bus.emit(BidRequest(0, floor=1))
    began = time.monotonic()
    await asyncio.wait_for(bus.background.close(timeout=0.2), 5)
    assert time.monotonic() - began < 2
    stats = bus.background.stats
    assert stats.completed + stats.dropped == stats.submitted and stats.queued == 0
    assert 1 <= stats.dropped <= 2 and stats.failed == 0
    rebids = _of("rebid")
    await asyncio.sleep(0.05)
    assert _of("rebid") == rebids == list(range(len(rebids)))


# -- promises that held (pinned down here) -----------------------------------------------


@pytest.mark.parametrize("policy", ["block", "raise", "drop_oldest"])
async def test_each_policy_under_a_slow_handler_keeps_the_bound_and_counts_exactly(
        policy: str) -> None:  # fmt: skip
    bus = _bus(background=BackgroundBacklog(maxsize=16, policy=policy))  # type: ignore[arg-type]
    bus.analytics.delay = 0.0005
    accepted: list[int] = []
    refused: list[int] = []
    peak = 0
    for req in range(2_000):
        try:
            bus.emit(BidRequest(req, floor=1))
            accepted.append(req)
        except* BacklogFull:
            refused.append(req)
        peak = max(peak, len(bus.background))
        if req % 50 == 0:
            await asyncio.sleep(0.001)
    await asyncio.wait_for(bus.background.drain(), 15)
    stats = bus.background.stats
    assert peak <= 16
    assert stats.queued == 0 and stats.failed == 0
    if policy == "drop_oldest":
        assert not refused and stats.rejected == 0
        assert stats.submitted == 2_000 == stats.completed + stats.dropped
        assert stats.dropped > 1_000  # the handler is far slower than the sync path
        ran = _of("analytics")
        assert ran == _of("fraud") == sorted(ran) and len(ran) == stats.completed
        assert ran[-16:] == list(range(2_000 - 16, 2_000))  # the newest were kept
        assert _of("bill") == list(range(2_000))
    else:
        assert refused and stats.rejected == len(refused)
        assert stats.submitted == stats.completed == len(accepted)
        assert stats.dropped == 0
        assert _split() == _by_hand(accepted, refused)


async def test_a_cpu_bound_sync_handler_stalls_the_loop_and_loses_or_reorders_nothing() -> None:
    bus = _bus(background=BackgroundBacklog(maxsize=8))
    bus.bidder.busy_on = 5
    bus.bidder.busy_s = 0.5
    bus.analytics.delay = 0.001
    began = time.monotonic()
    for req in range(40):
        await bus.background.wait_for_space()
        bus.emit(BidRequest(req, floor=1))
        assert len(bus.background) <= 8
    await asyncio.wait_for(bus.background.drain(), 10)
    assert time.monotonic() - began >= 0.5
    assert _split() == _by_hand(list(range(40)), [])
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.dropped, stats.failed) == (40, 40, 0, 0)


class Halt(BaseException):
    """Not an Exception: what a test framework's fail() or a custom stop signal raises."""


class FlakyFraud(MessageHandler[BidDecision]):
    mode = "once"
    raised = 0

    def handle(self, d: BidDecision) -> None:
        if self.mode == "always" or (self.mode == "once" and self.raised == 0):
            self.raised += 1
            raise (Halt if d.req % 2 else ValueError)(f"fraud log down at {d.req}")
        LOG.append(f"fraud {d.req}")


@routing_config
class FlakyBus:
    BidRequest = [Bidder]
    BidDecision = route(sync=[Billing], background=[Analytics, FlakyFraud])


@pytest.mark.parametrize("mode", ["once", "always"])
async def test_a_background_handler_raising_exceptions_and_base_exceptions(mode: str) -> None:
    bus = FlakyBus(bidder=Bidder(), billing=Billing(), analytics=Analytics(),
                   flaky_fraud=FlakyFraud())  # fmt: skip
    bus.flaky_fraud.mode = mode
    LOG.clear()
    for req in range(1, 11):  # req 1 raises Halt first
        bus.emit(BidRequest(req, floor=1))
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(bus.background.drain(), 5)
    failed = 1 if mode == "once" else 10
    assert len(caught.value.exceptions) == failed
    first = caught.value.exceptions[0]
    assert isinstance(first, RuntimeError) and isinstance(first.__cause__, Halt)
    if mode == "always":
        assert sum(isinstance(e, ValueError) for e in caught.value.exceptions) == 5
    await asyncio.wait_for(bus.background.drain(), 5)  # raised once, then returns
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.dropped) == (10, 10, failed, 0)
    assert _of("analytics") == list(range(1, 11))  # the calls after a failure still ran
    assert _of("fraud") == ([] if mode == "always" else list(range(2, 11)))


class Pacer(MessageHandler[BidDecision]):
    """Background, async: awaits the analytics of the same decision itself."""

    bus: Any = None

    async def handle(self, d: BidDecision) -> None:
        if d.req < 1_000:
            await self.bus.emit_bid_decision_async(BidDecision(d.req + 1_000, price=d.price))
        LOG.append(f"pacer {d.req}")


async def test_two_buses_share_one_backlog_and_handlers_await_each_other() -> None:
    backlog = BackgroundBacklog(maxsize=64)
    first = _bus(background=backlog)
    LOG.clear()

    @routing_config
    class PacedBus:
        BidRequest = [Bidder]
        BidDecision = route(sync=[Billing], background=[Analytics, Pacer])

    pacer = Pacer()
    second = PacedBus(bidder=Bidder(), billing=Billing(), analytics=Analytics(), pacer=pacer,
                      background=backlog)  # fmt: skip
    pacer.bus = second
    for req in range(20):
        (first if req % 2 else second).emit(BidRequest(req, floor=1))
    await asyncio.wait_for(backlog.drain(), 5)
    stats = backlog.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.dropped) == (20, 20, 0, 0)
    expected: list[str] = []
    for req in range(20):
        if req % 2:
            expected += [f"analytics {req}", f"fraud {req}"]
        else:  # Pacer ran the nested emit's handlers (its analytics, then itself) inline
            expected += [f"analytics {req}", f"analytics {req + 1_000}",
                         f"pacer {req + 1_000}", f"pacer {req}"]
    assert [line for line in LOG if line.split()[0] in ("analytics", "fraud", "pacer")
            ] == expected  # fmt: skip
    assert _of("bill") == list(range(20))
