"""Stranger round 6 (hybrid6): a ride-hailing dispatcher audits hybrid mode and the runtime.

The critical path (match a driver, price the trip, post it to the ledger) runs on the
monolith bus; push notifications, analytics and a surge monitor are background handlers on
the backlog. The README promises checked here: what ``on_error`` and ``drain()`` receive
from a failing background handler, what the backlog's stats count, the bounds of the
backlog and of a runtime's subscriber, and identical side effects in every mode.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mycelium_mono import (
    U32,
    U64,
    BackgroundBacklog,
    MessageHandler,
    message,
    route,
    routing_config,
)

LOG: list[str] = []


@message(type_id=4661, topic="rides.requested")
class RideRequest:
    ride_id: U64
    zone: U32


@message(type_id=4662, topic="rides.assigned")
class DriverAssigned:
    ride_id: U64
    driver: U32


@message(type_id=4663, topic="rides.billed")
class TripBilled:
    ride_id: U64
    cents: U64


class Matcher(MessageHandler[RideRequest]):
    def handle(self, req: RideRequest) -> None:
        LOG.append(f"match {req.ride_id}")
        self.emit(DriverAssigned(req.ride_id, driver=req.zone * 10 + 1))


class Pricing(MessageHandler[DriverAssigned]):
    def handle(self, assigned: DriverAssigned) -> None:
        LOG.append(f"price {assigned.ride_id}")
        self.emit(TripBilled(assigned.ride_id, cents=1_000 + assigned.ride_id))


class Ledger(MessageHandler[TripBilled]):
    def handle(self, bill: TripBilled) -> None:
        LOG.append(f"ledger {bill.ride_id}")


class PushNotifier(MessageHandler[DriverAssigned]):
    """Background, async: fails for odd rides when ``failing`` (a push gateway outage)."""

    failing = False

    async def handle(self, assigned: DriverAssigned) -> None:
        await asyncio.sleep(0)
        if self.failing and assigned.ride_id % 2:
            raise ConnectionError(f"push gateway refused ride {assigned.ride_id}")
        LOG.append(f"push {assigned.ride_id}")


class TripAnalytics(MessageHandler[DriverAssigned]):
    """Background, sync: fails for odd rides when ``failing``."""

    failing = False

    def handle(self, assigned: DriverAssigned) -> None:
        if self.failing and assigned.ride_id % 2:
            raise ValueError(f"analytics rejected ride {assigned.ride_id}")
        LOG.append(f"analytics {assigned.ride_id}")


class FareArchive(MessageHandler[TripBilled]):
    """Background, async: stores the fare; ``delay`` s per call, or blocks the whole event
    loop (``time.sleep``) for ``stall_s`` on ride ``stall_on``."""

    delay = 0.0
    stall_on = -1
    stall_s = 0.0

    async def handle(self, bill: TripBilled) -> None:
        if bill.ride_id == self.stall_on:
            time.sleep(self.stall_s)  # a blocking driver call: the loop itself stalls
        await asyncio.sleep(self.delay)
        LOG.append(f"archive {bill.ride_id}")


@routing_config
class DispatchBus:
    RideRequest = [Matcher]
    DriverAssigned = route(sync=[Pricing], background=[PushNotifier, TripAnalytics])
    TripBilled = route(sync=[Ledger], background=[FareArchive])


@routing_config(inline=True)
class InlineDispatchBus:
    RideRequest = [Matcher]
    DriverAssigned = route(sync=[Pricing], background=[PushNotifier, TripAnalytics])
    TripBilled = route(sync=[Ledger], background=[FareArchive])


BUILDS = pytest.mark.parametrize("inline", [False, True], ids=["calls", "inline"])


def _dispatch(inline: bool, *, failing: bool = False, **options: Any) -> Any:
    LOG.clear()
    cls: Any = InlineDispatchBus if inline else DispatchBus
    bus = cls(matcher=Matcher(), pricing=Pricing(), ledger=Ledger(),
              push_notifier=PushNotifier(), trip_analytics=TripAnalytics(),
              fare_archive=FareArchive(), **options)  # fmt: skip
    bus.push_notifier.failing = failing
    bus.trip_analytics.failing = failing
    return bus


# -- what a failing background handler reports ------------------------------------------


@BUILDS
async def test_backlog_on_error_receives_each_handlers_own_exception(inline: bool) -> None:
    # README: "BackgroundBacklog(on_error=callback) hands each failure to the callback".
    # It used to get the bus's ExceptionGroup around them, one per call: a callback written
    # as `isinstance(exc, ConnectionError)` (retry the push) never matched.
    reported: list[BaseException] = []
    bus = _dispatch(inline, failing=True, background=BackgroundBacklog(on_error=reported.append))
    for ride in range(4):
        bus.emit(RideRequest(ride, zone=3))
    await asyncio.wait_for(bus.background.drain(), 5)
    assert [type(exc) for exc in reported] == [ConnectionError, ValueError] * 2
    assert [str(exc) for exc in reported] == [
        "push gateway refused ride 1", "analytics rejected ride 1",
        "push gateway refused ride 3", "analytics rejected ride 3",
    ]  # fmt: skip
    assert "raised in" in reported[0].__notes__[0]  # where it came from is still noted
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.failed) == (8, 8, 2)  # calls, not handlers
    assert LOG.count("push 0") == LOG.count("analytics 2") == 1


@BUILDS
async def test_drain_raises_the_handlers_exceptions_in_one_flat_group(inline: bool) -> None:
    # README: "its failure is logged and then raised, with every other one since the last
    # drain, as an ExceptionGroup by the next drain()": the failures themselves, not a group
    # of the bus's groups, so `except* ConnectionError` and `.exceptions` see them.
    bus = _dispatch(inline, failing=True)
    for ride in range(4):
        bus.emit(RideRequest(ride, zone=3))
    with pytest.raises(ExceptionGroup, match=r"2 background calls failed \(4 handler failures\)"
                       ) as caught:  # fmt: skip
        await asyncio.wait_for(bus.background.drain(), 5)
    assert [type(exc) for exc in caught.value.exceptions] == [ConnectionError, ValueError] * 2
    await asyncio.wait_for(bus.background.drain(), 5)  # raised once
    assert bus.background.stats.failed == 2


@BUILDS
async def test_a_call_the_bus_on_error_took_is_still_counted_as_failed(inline: bool) -> None:
    # MonolithBus(on_error=...) receives background failures too; the backlog then counted
    # the call as a success (stats.failed stayed 0 while the callback saw every failure).
    seen: list[tuple[str, str, int]] = []
    bus = _dispatch(inline, failing=True,
                    on_error=lambda exc, where, msg: seen.append((type(exc).__name__, where,
                                                                   msg.ride_id)))
    for ride in range(5):
        bus.emit(RideRequest(ride, zone=1))
    await asyncio.wait_for(bus.background.drain(), 5)  # the bus's on_error took them
    assert seen == [("ConnectionError", "push_notifier.handle", 1),
                    ("ValueError", "trip_analytics.handle", 1),
                    ("ConnectionError", "push_notifier.handle", 3),
                    ("ValueError", "trip_analytics.handle", 3)]  # fmt: skip
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.failed) == (10, 10, 2)


@BUILDS
async def test_awaiting_the_background_emit_yourself_still_raises_its_group(inline: bool) -> None:
    # The backlog takes only the failures of the call its worker runs: an emit_*_async the
    # application awaits itself raises as the README's monolith emits do, even while the
    # worker is busy with the very same message.
    bus = _dispatch(inline, failing=True)
    gate = asyncio.Event()

    async def hold(_: object) -> None:
        await gate.wait()

    assigned = DriverAssigned(7, driver=1)
    bus.background.submit(hold, assigned)
    await asyncio.sleep(0)  # the worker is now inside hold(assigned)
    with pytest.raises(ExceptionGroup, match="2 handler") as caught:
        await bus.emit_driver_assigned_async(assigned)
    assert caught.group_contains(ConnectionError) and caught.group_contains(ValueError)
    gate.set()
    await asyncio.wait_for(bus.background.drain(), 5)  # nothing of it was kept for drain()
    assert bus.background.stats.failed == 0


# -- bounds: a nested refusal, room for a whole chain, memory --------------------------


def _vm_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@BUILDS
async def test_a_nested_refusal_fails_the_emitting_handler_after_the_earlier_calls(
        inline: bool) -> None:  # fmt: skip
    # README (Hybrid): a call a sync handler makes and the full backlog refuses is that
    # handler's failure, inside the outer emit's group, after what came before it was queued.
    from mycelium_mono import BacklogFull

    bus = _dispatch(inline, background=BackgroundBacklog(maxsize=3))
    bus.emit(RideRequest(0, zone=1))  # queues 2 calls: DriverAssigned's, TripBilled's
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit(RideRequest(1, zone=1))  # DriverAssigned's fits, TripBilled's is refused
    assert caught.group_contains(BacklogFull, match="emit_trip_billed_async")
    assert LOG == ["match 0", "price 0", "ledger 0", "match 1", "price 1"]
    await asyncio.wait_for(bus.background.drain(), 5)
    assert "push 1" in LOG and "archive 1" not in LOG and "ledger 1" not in LOG
    assert bus.background.stats.rejected == 1


@BUILDS
async def test_a_producer_waiting_for_room_for_its_chain_is_never_cut_short(inline: bool) -> None:
    # Each ride queues two background calls; waiting for room=2 before each emit keeps
    # every chain whole under a slow archive, and the backlog never holds more than maxsize.
    # Memory stays flat over 20,000 rides (VmRSS, sampled after warm-up).
    bus = _dispatch(inline, background=BackgroundBacklog(maxsize=50))
    bus.fare_archive.delay = 0.0
    backlog = bus.background
    peak = 0
    archived = 0
    rss_after_warmup = 0
    for ride in range(20_000):
        await backlog.wait_for_space(room=2)
        bus.emit(RideRequest(ride, zone=ride % 7))
        peak = max(peak, len(backlog))
        if len(LOG) > 5_000:
            archived += sum(1 for line in LOG if line.startswith("archive"))
            LOG.clear()
        if ride == 2_000:
            rss_after_warmup = _vm_rss_kib()
    await asyncio.wait_for(backlog.drain(), 30)
    archived += sum(1 for line in LOG if line.startswith("archive"))
    grown = _vm_rss_kib() - rss_after_warmup
    assert peak <= 50, peak
    assert archived == 20_000
    stats = backlog.stats
    assert (stats.submitted, stats.completed, stats.rejected, stats.dropped) == (40_000,) * 2 + (
        0, 0)
    assert grown < 8_192, f"VmRSS grew {grown} KiB over 18,000 rides"
    with pytest.raises(ValueError, match=r"room must be an int in 1\.\.50"):
        await backlog.wait_for_space(room=51)


# -- a stalled loop, close() with work queued ------------------------------------------


async def test_a_background_handler_that_blocks_the_loop_for_2_s_loses_and_repeats_nothing(
        ) -> None:  # fmt: skip
    bus = _dispatch(False, background=BackgroundBacklog(maxsize=20))
    bus.fare_archive.stall_on = 3
    bus.fare_archive.stall_s = 2.0
    began = time.monotonic()
    for ride in range(40):
        await bus.background.wait_for_space(room=2)
        bus.emit(RideRequest(ride, zone=2))
        assert len(bus.background) <= 20
    await asyncio.wait_for(bus.background.drain(), 10)
    assert time.monotonic() - began >= 2.0  # the stall happened
    archives = [line for line in LOG if line.startswith("archive")]
    assert archives == [f"archive {ride}" for ride in range(40)]  # in order, each once
    assert [line for line in LOG if line.startswith("ledger")] == [
        f"ledger {ride}" for ride in range(40)]


async def test_close_with_work_queued_counts_what_it_gave_up_and_runs_nothing_twice() -> None:
    backlog = BackgroundBacklog(maxsize=100)
    bus = _dispatch(False, background=backlog)
    bus.fare_archive.delay = 0.02
    for ride in range(30):
        bus.emit(RideRequest(ride, zone=1))
    await asyncio.wait_for(backlog.close(timeout=0.2), 5)
    archives = [int(line.split()[1]) for line in LOG if line.startswith("archive")]
    assert archives == list(range(len(archives))) and 0 < len(archives) < 30
    stats = backlog.stats
    assert stats.completed + stats.dropped == stats.submitted == 60
    assert stats.queued == 0
    await asyncio.wait_for(backlog.drain(), 1)  # released, not waiting for the dropped
    await asyncio.sleep(0.1)
    assert [int(line.split()[1]) for line in LOG if line.startswith("archive")] == archives


# -- the same app in every mode; the runtime's shutdown and bounds ----------------------

PREFIXES = ("match", "price", "ledger", "push", "analytics", "archive")
RIDES = [RideRequest(ride, zone=ride % 5) for ride in range(60)]


def _per_handler() -> dict[str, list[str]]:
    return {p: [line for line in LOG if line.split()[0] == p] for p in PREFIXES}


def _services() -> list[object]:
    return [Matcher(), Pricing(), Ledger(), PushNotifier(), TripAnalytics(), FareArchive()]


async def _run_on_the_bus(maxsize: int, archive_delay: float) -> dict[str, list[str]]:
    from mycelium_mono import MessageBus, ServiceRuntime, service

    LOG.clear()

    @service
    class RideFeed:
        async def run(self, ctx: Any) -> None:
            for req in RIDES:
                await ctx.emit(req)

    runtime = ServiceRuntime(MessageBus(), maxsize=maxsize)
    handlers = _services()
    for handler in handlers:
        if isinstance(handler, FareArchive):
            handler.delay = archive_delay
        await runtime.spawn_service(handler)
    feed = await runtime.spawn_service(RideFeed())
    await asyncio.wait_for(feed.task, 20)  # everything published; much still queued
    await asyncio.wait_for(runtime.shutdown(timeout=20), 25)
    assert sum(s.errors for s in runtime.services) == 0
    return _per_handler()


@pytest.mark.parametrize("maxsize", [3, 10_000])
async def test_monolith_hybrid_and_the_bus_give_each_handler_the_same_sequence(
        maxsize: int) -> None:  # fmt: skip
    # README: results agree whenever each message type has one producer (here each has).
    # The bus run shuts down right after the feed ends, with (at maxsize=3) a slow archive
    # still behind: shutdown() drains every queue, nothing lost and nothing handled twice.
    expected = {p: [f"{p} {req.ride_id}" for req in RIDES] for p in PREFIXES}
    for inline in (False, True):
        bus = _dispatch(inline, background=BackgroundBacklog(maxsize=max(maxsize, 2)))
        for req in RIDES:
            await bus.background.wait_for_space(room=2)
            bus.emit(req)
        await asyncio.wait_for(bus.background.drain(), 10)
        assert _per_handler() == expected, f"hybrid inline={inline}"
    assert await _run_on_the_bus(maxsize, archive_delay=0.002) == expected


async def test_a_runtime_handler_has_at_most_twice_maxsize_published_and_unhandled() -> None:
    # README (Flexible): a service takes everything queued as one batch, so besides the
    # maxsize its queue holds, up to one batch (maxsize) is in its hands: a producer gets at
    # most 2 * maxsize ahead of a slow "block" consumer, never more.
    from mycelium_mono import MessageBus, ServiceRuntime, service

    LOG.clear()
    published = 0

    @service
    class BillingFeed:
        async def run(self, ctx: Any) -> None:
            nonlocal published
            for ride in range(200):
                await ctx.emit(TripBilled(ride, cents=ride))
                published += 1

    runtime = ServiceRuntime(MessageBus(), maxsize=8)
    archive = FareArchive()
    archive.delay = 0.001
    await runtime.spawn_service(archive)
    feed = await runtime.spawn_service(BillingFeed())
    ahead = 0
    while not feed.task.done():
        ahead = max(ahead, published - len(LOG))
        await asyncio.sleep(0)
    await asyncio.wait_for(runtime.shutdown(timeout=10), 15)
    archived = [int(line.split()[1]) for line in LOG]
    assert archived == list(range(200))
    assert 8 < ahead <= 16, ahead


# -- a background handler emitting back into the sync path ------------------------------


class Rebooker(MessageHandler[TripBilled]):
    """Background: rebooks rides 0-2 (a new RideRequest, back through the sync path), then
    fails on ride 1 after its emit."""

    async def handle(self, bill: TripBilled) -> None:
        await asyncio.sleep(0)
        if bill.ride_id < 3:
            self.emit(RideRequest(bill.ride_id + 100, zone=1))
        if bill.ride_id == 1:
            raise KeyError(f"no seat for ride {bill.ride_id}")


@routing_config
class RebookBus:
    RideRequest = [Matcher]
    DriverAssigned = route(sync=[Pricing], background=[PushNotifier])
    TripBilled = route(sync=[Ledger], background=[Rebooker])


async def test_a_background_handler_emitting_into_the_sync_path_is_drained_and_reported(
        ) -> None:  # fmt: skip
    LOG.clear()
    reported: list[BaseException] = []
    bus = RebookBus(matcher=Matcher(), pricing=Pricing(), ledger=Ledger(),
                    push_notifier=PushNotifier(), rebooker=Rebooker(),
                    background=BackgroundBacklog(on_error=reported.append))  # fmt: skip
    for ride in range(3):
        bus.emit(RideRequest(ride, zone=1))
    await asyncio.wait_for(bus.background.drain(), 5)  # the rebooked rides' calls included
    assert [line for line in LOG if line.startswith("ledger")] == [
        f"ledger {ride}" for ride in (0, 1, 2, 100, 101, 102)]
    assert [line for line in LOG if line.startswith("push")] == [
        f"push {ride}" for ride in (0, 1, 2, 100, 101, 102)]
    assert [type(exc) for exc in reported] == [KeyError]  # the handler's, not a group
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.failed) == (12, 12, 1)
