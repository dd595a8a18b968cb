"""The flexible bus, the hybrid backlog and ZeroMQ, used as a stranger who read only the README.

A parcel-tracking pipeline: depots publish ``Scan``s, services flag ``Delayed`` parcels.
Each test says which README promise it holds the code to, and counts lost, repeated and
reordered messages against exactly that promise.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from peers.stranger_parcels import Delayed, Scan

from mycelium_mono import MessageBus, MessageHandler, ServiceRuntime, service
from mycelium_mono.bus.hybrid import BackgroundBacklog


def scan(seq: int, hub: int = 1) -> Scan:
    return Scan(hub=hub, seq=seq, parcel=1_000_000 + seq)


# -- README "Hybrid": "A background handler that raises does not stop the others" ----------


async def test_a_background_handler_raising_cancelled_error_does_not_stop_the_backlog() -> None:
    # A handler's own CancelledError (an awaited call that was cancelled elsewhere) is a
    # failure of that call, not a cancellation of the backlog's worker.
    backlog = BackgroundBacklog()
    stored: list[int] = []

    async def store(s: Scan) -> None:
        if s.seq == 3:
            raise asyncio.CancelledError("the database client was cancelled")
        stored.append(s.seq)

    for n in range(1, 7):
        backlog.submit(store, scan(n))
    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(backlog.drain(), 5)   # a TimeoutError here: drain() hung
    [failure] = raised.value.exceptions
    assert isinstance(failure.__cause__, asyncio.CancelledError), failure
    assert stored == [1, 2, 4, 5, 6]
    assert backlog.stats.completed == 6 and backlog.stats.failed == 1
    assert backlog.stats.queued == 0
    await backlog.close()


# -- README "Flexible"/runtime: a handler that raises is logged and keeps handling ---------


class DelayWatch(MessageHandler[Scan]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def handle(self, s: Scan) -> None:
        if s.seq == 3:
            raise asyncio.CancelledError("a lookup this handler awaited was cancelled")
        self.seen.append(s.seq)


async def test_a_handler_raising_cancelled_error_keeps_the_service_handling() -> None:
    runtime = ServiceRuntime(MessageBus())
    watch = DelayWatch()
    running = await runtime.spawn_service(watch)
    pub = runtime.bus.publisher(Scan)
    for n in range(1, 7):
        await pub.publish(scan(n))
    async with asyncio.timeout(5):
        await runtime.shutdown(timeout=3)
    assert watch.seen == [1, 2, 4, 5, 6]
    assert running.errors == 1 and running.handled == 6


# -- ServiceRuntime lifecycle: shutdown requested from inside a service ---------------------


async def test_a_service_that_calls_shutdown_itself_finishes_promptly_and_closes_the_bus() -> None:
    runtime = ServiceRuntime(MessageBus())
    watch = DelayWatch()
    await runtime.spawn_service(watch)

    @service
    class Depot:
        async def run(self, ctx: object) -> None:
            for n in (1, 2, 4):
                await runtime.bus.publisher(Scan).publish(scan(n))
            await runtime.shutdown(timeout=4)   # the feed is over: stop everything

    depot = await runtime.spawn_service(Depot())
    started = time.monotonic()
    assert depot.task is not None
    await asyncio.wait_for(asyncio.shield(depot.task), 10)
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"shutdown from inside a service waited {elapsed:.1f}s for itself"
    assert depot.failure is None and not depot.task.cancelled()
    assert watch.seen == [1, 2, 4]
    assert all(s.done for s in runtime.services)
    assert runtime.bus.stats.subscribers == 0
    assert runtime.bus._closed


# -- README "Across processes": publish_nowait before start ------------------------------


async def test_publish_nowait_before_a_tcp_bus_started_queues_nothing_locally() -> None:
    # The error says "await bus.start() first"; a caller who does so and retries must not
    # hand the local subscriber the same parcel twice.
    bus = MessageBus.with_tcp("127.0.0.1:0")
    alerts = bus.subscribe(Delayed)
    pub = bus.publisher(Delayed)
    try:
        pub.publish_nowait(Delayed(parcel=7, hours=30))
    except RuntimeError:
        pass
    else:
        raise AssertionError("publish_nowait before start did not refuse")
    assert len(alerts) == 0 and bus.stats.published == 0
    await bus.start()
    pub.publish_nowait(Delayed(parcel=7, hours=30))
    assert alerts.drain() == [Delayed(parcel=7, hours=30)]
    await bus.close()


async def test_a_run_service_raising_its_own_cancelled_error_is_restarted() -> None:
    runtime = ServiceRuntime(MessageBus(), backoff_initial=0.01)
    alerts = runtime.bus.subscribe(Delayed)

    @service
    class Tracker:
        attempts = 0

        async def run(self, ctx: object) -> None:
            Tracker.attempts += 1
            if Tracker.attempts == 1:
                raise asyncio.CancelledError("the carrier API call was cancelled")
            await runtime.bus.publisher(Delayed).publish(Delayed(parcel=9, hours=48))

    tracker = await runtime.spawn_service(Tracker())
    assert tracker.task is not None
    await asyncio.wait_for(asyncio.shield(tracker.task), 5)
    assert not tracker.task.cancelled() and tracker.restarts == 1
    assert alerts.drain() == [Delayed(parcel=9, hours=48)]
    await runtime.shutdown(timeout=2)


# -- README: "A MessageHandler instance belongs to one bus or runtime" ------------------------


class ScanCounter(MessageHandler[Scan]):
    def __init__(self) -> None:
        self.seqs: list[int] = []

    def handle(self, s: Scan) -> None:
        self.seqs.append(s.seq)


async def test_spawning_one_handler_instance_twice_on_a_runtime_is_refused() -> None:
    from mycelium_mono import HandlerOwnedError

    runtime = ServiceRuntime(MessageBus())
    counter = ScanCounter()
    await runtime.spawn_service(counter, name="counter")
    with pytest.raises(HandlerOwnedError, match=r"already running on this ServiceRuntime as "
                       r"service 'counter'"):
        await runtime.spawn_service(counter)
    pub = runtime.bus.publisher(Scan)
    for n in (1, 2, 3):
        await pub.publish(scan(n))
    await runtime.shutdown(timeout=2)
    assert counter.seqs == [1, 2, 3]   # each parcel counted once
    assert len(runtime.services) == 1
