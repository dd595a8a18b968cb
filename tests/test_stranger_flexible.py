"""The flexible bus, the hybrid backlog and ZeroMQ, used as a stranger who read only the README.

A parcel-tracking pipeline: depots publish ``Scan``s, services flag ``Delayed`` parcels.
Each test says which README promise it holds the code to, and counts lost, repeated and
reordered messages against exactly that promise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from peers.common import memory_kib
from peers.harness import Peer, Peers, free_port, until
from peers.stranger_parcels import Delayed, Scan

from mycelium_mono import MessageBus, MessageHandler, ServiceRuntime, service
from mycelium_mono.bus.hybrid import BackgroundBacklog

pytest_plugins = ["conftest_distributed"]


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


async def test_a_service_that_calls_shutdown_itself_finishes_promptly_and_closes_the_bus(
    caplog: pytest.LogCaptureFixture,
) -> None:
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
    assert depot.task is not None
    with caplog.at_level(logging.WARNING, logger="mycelium_mono.runtime"):
        await asyncio.wait_for(asyncio.shield(depot.task), 10)
    # Waiting for itself, it used to run out its 4 s timeout, then cancel itself.
    assert "still busy" not in caplog.text, caplog.text
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


# -- README "Flexible": bounded per-subscriber queues; every drop is counted --------------


async def _depots_against_one_sorter(policy: str, seed: int) -> None:
    """Eight depot tasks mixing ``await publish`` and ``publish_nowait`` into one small queue.

    The bound is checked after every single operation; at the end every scan is accounted
    for exactly once (received, or counted as dropped / rejected / refused), and what was
    received keeps each depot's order.
    """
    import random

    from mycelium_mono import QueueFullError
    from mycelium_mono.bus.bus import QueueOverflowError

    rng = random.Random(seed)
    bus = MessageBus()
    maxsize = 7
    sorter = bus.subscribe(Scan, maxsize=maxsize, policy=policy)  # type: ignore[arg-type]
    per_depot = 400
    refused_nowait = 0
    overflowed = 0
    received: list[Scan] = []
    worst = 0

    def check() -> None:
        nonlocal worst
        worst = max(worst, len(sorter))
        assert len(sorter) <= maxsize, f"{policy}: {len(sorter)} queued > maxsize {maxsize}"

    async def depot(hub: int) -> None:
        nonlocal refused_nowait, overflowed
        pub = bus.publisher(Scan)
        for n in range(1, per_depot + 1):
            msg = scan(n, hub)
            try:
                if rng.random() < 0.5:
                    pub.publish_nowait(msg)
                else:
                    await pub.publish(msg)
            except QueueFullError:
                refused_nowait += 1   # nothing queued anywhere: the depot could retry
            except QueueOverflowError:
                overflowed += 1
            check()
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    async def consumer() -> None:
        while True:
            try:
                if rng.random() < 0.5:
                    received.append(await sorter.recv())
                else:
                    received.extend(await sorter.recv_batch())
            except Exception:
                return
            check()
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)

    eater = asyncio.create_task(consumer())
    async with asyncio.timeout(30):
        await asyncio.gather(*(depot(h) for h in range(1, 9)))
        while len(sorter):
            await asyncio.sleep(0)
    sorter.close()
    await asyncio.wait_for(eater, 5)
    stats = sorter.stats
    sent = 8 * per_depot
    assert worst == maxsize   # the queue did fill: the bound was really tested
    assert stats.high_water <= maxsize
    assert len(received) == stats.delivered
    assert len(received) + stats.dropped + stats.rejected + refused_nowait == sent
    assert len(set(received)) == len(received)   # no scan twice
    for hub in range(1, 9):
        seqs = [s.seq for s in received if s.hub == hub]
        assert seqs == sorted(seqs), f"{policy}: depot {hub} reordered"
    if policy == "block":
        assert stats.dropped == stats.rejected == 0 and refused_nowait > 0
    elif policy == "drop_oldest":
        assert refused_nowait == stats.rejected == 0 and stats.dropped > 0
    else:
        assert refused_nowait == stats.dropped == 0 and stats.rejected == overflowed > 0
    assert bus.stats.published == sent - refused_nowait
    await bus.close()


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "raise"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_depots_never_overfill_a_sorter_and_every_scan_is_counted(
    policy: str, seed: int
) -> None:
    await _depots_against_one_sorter(policy, seed)


# -- README "Across processes" / "Delivery guarantees", ZeroMQ lossless -----------------------
#
# Promised: every frame a connected subscriber's prefix matches, per-publisher order; a crash
# loses "frames in the dead process's queues and sockets"; a restarted process is a new
# incarnation, so its seq 1 is new, not a replay; a full "block" subscriber holds the
# publisher's `await publish` (the subscriber never exceeds maxsize).


def _split_incarnations(seqs: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for s in seqs:
        if s == 1 or not runs:
            runs.append([])
        runs[-1].append(s)
    return runs


@pytest.mark.network
async def test_ready_hears_a_late_depot_while_an_early_one_has_filled_the_sorter() -> None:
    # README: subscribe, connect_to every peer, `await bus.ready()`, then consume; publishers
    # `wait_for_subscribers`. The first depot starts as soon as it hears the sorter, fills
    # its queue, and the SUB stops reading (back-pressure): ready() must still hear the
    # second depot's acknowledgement instead of timing out behind the first one's scans.
    early = MessageBus.with_tcp("127.0.0.1:0")
    await early.start()
    late_port = free_port()
    sorter = MessageBus.with_tcp("127.0.0.1:0", ready_timeout_s=5)
    bins = sorter.subscribe(Scan, maxsize=10)
    await sorter.start()

    async def flood() -> None:
        await early.wait_for_subscribers(1, Scan)
        pub = early.publisher(Scan)
        for n in range(1, 201):
            await pub.publish(scan(n, hub=1))

    flooding = asyncio.create_task(flood())
    late = MessageBus.with_tcp(f"127.0.0.1:{late_port}")
    try:
        await sorter.connect_to(early.transport.address)  # type: ignore[attr-defined]
        await sorter.connect_to(f"127.0.0.1:{late_port}")   # not bound yet: starts later
        await until(lambda: len(bins) == 10, timeout=10)      # full: the SUB is parked
        await late.start()
        await sorter.ready()
        got = []
        async with asyncio.timeout(10):
            while len(got) < 200:
                got.extend(await bins.recv_batch())
        await asyncio.wait_for(flooding, 10)
        assert [s.seq for s in got] == list(range(1, 201))
        assert bins.stats.high_water <= 10
    finally:
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)
        for bus in (early, late, sorter):
            await bus.close()


@pytest.mark.network
async def test_three_depots_one_killed_and_restarted_mid_stream_into_a_slow_sorter(
    peers: Peers,
) -> None:
    count, maxsize = 20_000, 50
    ports = {hub: free_port() for hub in (1, 2, 3)}

    def depot(hub: int) -> Peer:
        return peers.spawn(
            "stranger_depot", "--bind", f"127.0.0.1:{ports[hub]}", "--hub", str(hub),
            "--count", str(count), "--hwm", "1000", "--yield-every", "20", name=f"depot{hub}",
        )

    depots = {hub: depot(hub) for hub in (1, 2, 3)}
    addresses = {hub: await p.aexpect("READY") for hub, p in depots.items()}
    sorter = MessageBus.with_tcp("127.0.0.1:0", hwm=1000)
    bins = sorter.subscribe(Scan, maxsize=maxsize)
    await sorter.start()
    for hub in (1, 2, 3):
        await sorter.connect_to(addresses[hub])
    await sorter.ready()
    got: list[Scan] = []
    worst = 0

    async def sort_slowly() -> None:
        nonlocal worst
        async for s in bins:
            worst = max(worst, len(bins) + 1)
            got.append(s)
            if len(got) % 50 == 0:
                await asyncio.sleep(0.001)

    sorting = asyncio.create_task(sort_slowly())
    try:
        await until(lambda: sum(s.hub == 2 for s in got) >= 3_000, timeout=60)
        depots[2].kill()                                       # SIGKILL mid-stream
        restarted = depot(2)
        assert await restarted.aexpect("READY") == addresses[2]   # same port, new process
        results = {hub: await depots[hub].aresult() for hub in (1, 3)}
        results[2] = await restarted.aresult()

        def restarted_done() -> bool:
            runs = _split_incarnations([s.seq for s in got if s.hub == 2])
            return len(runs) == 2 and len(runs[1]) == count

        await until(
            lambda: restarted_done() and all(
                sum(s.hub == h for s in got) == count for h in (1, 3)), timeout=60)
        await asyncio.sleep(0.2)   # anything extra (a repeat) would arrive now
    finally:
        for p in (*depots.values(), *peers.started):
            p.stop()
        await sorter.close()
        await asyncio.wait_for(sorting, 10)

    for hub in (1, 3):   # the survivors: nothing lost, repeated or reordered
        assert [s.seq for s in got if s.hub == hub] == list(range(1, count + 1))
        assert results[hub]["sent"] == results[hub]["published"] == count
    first, second = _split_incarnations([s.seq for s in got if s.hub == 2])
    assert first == list(range(1, len(first) + 1)), "the killed depot lost a frame mid-stream"
    assert 3_000 <= len(first) <= count   # paced at <= 20k/s: usually killed well before the end
    assert second == list(range(1, count + 1))
    assert results[2]["sent"] == count
    stats = sorter.transport.stats
    assert stats.received == len(got) == sorter.stats.received_remote
    assert stats.sequence_gaps == 0 and stats.dropped_malformed == 0
    assert stats.extra.get("duplicates", 0) == 0
    assert stats.extra["publishers_seen"] == 4   # three depots, one of them twice
    assert worst <= maxsize and bins.stats.high_water <= maxsize


# -- README "Hybrid": drain() waits for the backlog; close(timeout) stops it ------------------


async def test_drain_returns_after_close_gave_up_on_a_stuck_background_handler() -> None:
    # close(timeout=...) stops a backlog whose handler hangs (a dead database): a drain()
    # waiting meanwhile, and one called afterwards, must return, and the calls that never
    # ran must be counted, not left "queued" forever.
    backlog = BackgroundBacklog(maxsize=10)
    stored: list[int] = []

    async def store(s: Scan) -> None:
        if s.seq == 2:
            await asyncio.sleep(3600)   # the database never answers
        stored.append(s.seq)

    for n in range(1, 6):
        backlog.submit(store, scan(n))
    waiting = asyncio.create_task(backlog.drain())
    await asyncio.sleep(0.05)
    await asyncio.wait_for(backlog.close(timeout=0.2), 5)
    await asyncio.wait_for(waiting, 2)            # a TimeoutError here: drain() hung
    await asyncio.wait_for(backlog.drain(), 2)
    stats = backlog.stats
    assert stored == [1]
    assert stats.queued == 0
    assert stats.completed == 1 and stats.dropped == 4     # 2 (cut off) and 3, 4, 5 (never run)
    assert stats.completed + stats.dropped == stats.submitted == 5


@pytest.mark.network
async def test_memory_stays_flat_on_both_sides_while_a_slow_sorter_holds_back_a_depot(
    peers: Peers,
) -> None:
    # README: a full "block" subscriber stops reading, the HWM holds the publisher's
    # `await publish`. So neither side should buffer the stream: measured, in both processes,
    # while 200,000 scans (about 13 MB of frames) go through a sorter ~5x slower than the depot.
    count, maxsize = 200_000, 100
    depot = peers.spawn("stranger_depot", "--bind", "127.0.0.1:0", "--hub", "1",
                        "--count", str(count), "--hwm", "1000")
    address = await depot.aexpect("READY")
    sorter = MessageBus.with_tcp("127.0.0.1:0", hwm=1000)
    bins = sorter.subscribe(Scan, maxsize=maxsize)
    await sorter.start()
    await sorter.connect_to(address)
    await sorter.ready()
    received = 0
    in_order = True
    samples: dict[str, list[int]] = {"depot": [], "sorter": []}
    try:
        async with asyncio.timeout(120):
            while received < count:
                for s in await bins.recv_batch():
                    received += 1
                    in_order = in_order and s.seq == received
                if received >= 20_000 and received // 20_000 > len(samples["depot"]):
                    samples["depot"].append(memory_kib(pid=depot.proc.pid))
                    samples["sorter"].append(memory_kib())
                await asyncio.sleep(0.002)   # the slow consumer
        result = await depot.aresult()
    finally:
        depot.stop()
        await sorter.close()
    assert in_order and received == count
    assert result["sent"] == result["published"] == count
    assert result.get("hwm_waits", 0) > 0, "the depot was never held back: the test proves nothing"
    assert bins.stats.high_water <= maxsize
    for side, kib in samples.items():
        assert len(kib) >= 8, samples
        growth = max(kib) - kib[0]
        assert growth < 6 * 1024, f"{side} RSS grew {growth} KiB under back-pressure: {kib}"


class StallingSorter(MessageHandler[Scan]):
    """Sorts scans; once, its sync handler blocks the event loop for 1.5 s (a slow disk)."""

    def __init__(self) -> None:
        self.seqs: dict[int, list[int]] = {1: [], 2: []}

    def handle(self, s: Scan) -> None:
        self.seqs[s.hub].append(s.seq)
        if s.hub == 1 and s.seq == 500:
            time.sleep(1.5)
        if s.seq % 97 == 0:
            self.emit(Delayed(parcel=s.parcel, hours=s.hub))


@pytest.mark.network
async def test_a_runtime_handler_stalling_its_loop_loses_nothing_from_two_depots(
    peers: Peers,
) -> None:
    count = 10_000
    depots = [
        peers.spawn("stranger_depot", "--bind", "127.0.0.1:0", "--hub", str(hub),
                    "--count", str(count), "--hwm", "500", name=f"depot{hub}")
        for hub in (1, 2)
    ]
    addresses = [await d.aexpect("READY") for d in depots]
    runtime = ServiceRuntime(MessageBus.with_tcp("127.0.0.1:0", hwm=500), maxsize=100)
    sorter = StallingSorter()
    alerts = runtime.bus.subscribe(Delayed, maxsize=1_000)
    running = await runtime.spawn_service(sorter)
    for address in addresses:
        await runtime.bus.connect_to(address)
    await runtime.bus.ready()
    try:
        await until(lambda: all(len(v) == count for v in sorter.seqs.values()), timeout=60)
        results = [await d.aresult() for d in depots]
    finally:
        for d in depots:
            d.stop()
        await runtime.shutdown(timeout=5)
    for hub in (1, 2):
        assert sorter.seqs[hub] == list(range(1, count + 1)), f"depot {hub}: lost or reordered"
    assert running.handled == 2 * count and running.errors == 0
    assert all(r["sent"] == count and r["dropped_overflow"] == 0 for r in results)
    flagged = alerts.drain()
    assert len(flagged) == 2 * (count // 97)
    stats = runtime.bus.transport.stats
    assert stats.received == 2 * count and stats.sequence_gaps == 0
    assert stats.extra.get("duplicates", 0) == 0


async def test_a_service_awaiting_shutdown_already_under_way_is_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # main() shuts down (a SIGTERM); meanwhile a service also asks for shutdown (it found
    # its carrier feed gone). It is waiting for that very shutdown: waiting for it in turn
    # used to hold the shutdown for its whole timeout, then cancel the service.
    runtime = ServiceRuntime(MessageBus())
    watch = DelayWatch()
    await runtime.spawn_service(watch)
    feed_gone = asyncio.Event()

    @service
    class CarrierFeed:
        async def run(self, ctx: object) -> None:
            await runtime.bus.publisher(Scan).publish(scan(1))
            await feed_gone.wait()
            await runtime.shutdown(timeout=4)

    feed = await runtime.spawn_service(CarrierFeed())
    await asyncio.sleep(0.01)
    main_shutdown = asyncio.create_task(runtime.shutdown(timeout=4))
    await asyncio.sleep(0.01)
    feed_gone.set()
    with caplog.at_level(logging.WARNING, logger="mycelium_mono.runtime"):
        await asyncio.wait_for(main_shutdown, 10)
        assert feed.task is not None
        await asyncio.wait_for(asyncio.shield(feed.task), 10)
    # Waiting for the service that waits for it, it used to run out its 4 s timeout.
    assert "still busy" not in caplog.text, caplog.text
    assert not feed.task.cancelled() and feed.failure is None
    assert watch.seen == [1]


@pytest.mark.network
async def test_a_lossless_close_that_runs_out_of_time_reports_what_libzmq_dropped() -> None:
    # README: close() flushes for up to close_timeout_s, "then reports what it could not
    # send (stats.extra["undelivered_at_close"], "close_linger_expired", an error log)".
    # The sorter is alive but stuck; whatever the depot counted as sent and the sorter never
    # got must show up in that report, not only the depot's own backlog.
    depot = MessageBus.with_tcp("127.0.0.1:0", hwm=100, close_timeout_s=0.5)
    await depot.start()
    sorter = MessageBus.with_tcp("127.0.0.1:0", hwm=100)
    bins = sorter.subscribe(Scan, maxsize=10)
    await sorter.start()
    await sorter.connect_to(depot.transport.address)  # type: ignore[attr-defined]
    await sorter.ready()
    await depot.wait_for_subscribers(1, Scan)
    pub = depot.publisher(Scan)
    seq = 0
    try:
        # Publish until one publish is held back (the sorter is full and stuck, the kernel's
        # buffers too): a fixed second did not always fill them on a loaded machine, and then
        # the close below sent everything in time and had nothing to report.
        async with asyncio.timeout(60):
            while True:
                seq += 1
                try:
                    await asyncio.wait_for(pub.publish(scan(seq)), 0.5)
                except TimeoutError:
                    break   # like the cut-short publish before: it stays in the backlog
        from mycelium_mono import QueueFullError

        with pytest.raises(QueueFullError):   # then fill the depot's own backlog too
            while True:
                pub.publish_nowait(scan(seq + 1))
                seq += 1
        async with asyncio.timeout(3):         # close_timeout_s=0.5 bounds it
            await depot.close()
        got: list[Scan] = []
        while True:                            # the sorter wakes up and takes what reached it
            try:
                async with asyncio.timeout(1):
                    got.extend(await bins.recv_batch())
            except TimeoutError:
                break
    finally:
        await depot.close()
        await sorter.close()
    t = depot.transport.stats
    assert [s.seq for s in got] == list(range(1, len(got) + 1))   # a prefix, in order
    assert t.sent + t.extra["undelivered_at_close"] == depot.stats.published
    assert t.extra["undelivered_at_close"] > 0
    assert len(got) < t.sent                      # frames libzmq held were lost at close...
    assert t.extra["close_linger_expired"] == 1   # ...and the report says so


@pytest.mark.network
async def test_a_mesh_where_every_depot_connects_to_every_address_delivers_each_scan_once() -> None:
    # One address list for the whole cluster, each depot connecting to all of it (itself
    # included), is the obvious way to configure a mesh. A depot must not hear itself: its
    # local subscribers already have what it published.
    depots = [MessageBus.with_tcp("127.0.0.1:0") for _ in range(3)]
    boards = [d.subscribe(Scan) for d in depots]
    try:
        for d in depots:
            await d.start()
        cluster = [d.transport.address for d in depots]  # type: ignore[attr-defined]
        for d in depots:
            for address in cluster:
                await d.connect_to(address)
        for d in depots:
            await asyncio.wait_for(d.ready(), 10)
            await d.wait_for_subscribers(2, Scan)
        for hub, d in enumerate(depots, 1):
            pub = d.publisher(Scan)
            for n in range(1, 101):
                await pub.publish(scan(n, hub))
        await until(lambda: all(len(b) >= 300 for b in boards), timeout=10)
        await asyncio.sleep(0.2)   # a repeat would arrive now
        for board in boards:
            got = board.drain()
            assert len(got) == 300
            for hub in (1, 2, 3):
                assert [s.seq for s in got if s.hub == hub] == list(range(1, 101))
    finally:
        for d in depots:
            await d.close()


async def test_a_handler_is_free_for_a_new_runtime_once_its_runtime_shut_down() -> None:
    # A supervisor rebuilds the runtime (new bus, same service objects, their state kept).
    # HandlerOwnedError's help says to free the handler from its first owner, but a runtime
    # has no detach(): once it has shut down it must not own anything any more.
    counter = ScanCounter()
    first = ServiceRuntime(MessageBus())
    await first.spawn_service(counter)
    await first.bus.publisher(Scan).publish(scan(1))
    await first.shutdown(timeout=2)
    second = ServiceRuntime(MessageBus())
    await second.spawn_service(counter)
    await second.bus.publisher(Scan).publish(scan(2))
    await second.shutdown(timeout=2)
    assert counter.seqs == [1, 2]


_UNPICKLED: list[str] = []


class _Trap:
    """Unpickling this records it: a frame carrying it must never be unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_UNPICKLED.append, ("unpickled!",))


@pytest.mark.network
async def test_garbage_from_a_raw_socket_is_counted_while_the_sorter_is_full_and_never_unpickled(
) -> None:
    # README: malformed frames (truncated, oversize, unknown type, wrong fingerprint,
    # garbage) are dropped and counted in bus.transport.stats; nothing is unpickled. Here
    # they arrive mixed into a valid stream while the sorter's queue is full (the SUB is
    # held back), and ready() is awaited meanwhile.
    import pickle
    import random

    import zmq

    from mycelium_mono.bus.transports.wire import HEADER, Outbound, WireMismatchError, wire_type

    wt = wire_type(Scan)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind("tcp://127.0.0.1:0")
    sorter = MessageBus.with_tcp("127.0.0.1:0")
    bins = sorter.subscribe(Scan, maxsize=5)
    out = Outbound(publisher=4242)
    rng = random.Random(7)
    try:
        await sorter.start()
        await sorter.connect_to(raw.getsockopt_string(zmq.LAST_ENDPOINT))
        raw.setsockopt(zmq.RCVTIMEO, 10_000)
        assert await asyncio.to_thread(raw.recv) == b"\x01" + wt.prefix
        raw.send(out.ack(wt.prefix, Scan.TYPE_ID))
        await sorter.ready()

        def header(type_id: int = Scan.TYPE_ID, fp: int = wt.fingerprint, seq: int = 1,
                   magic: bytes = b"MY") -> bytes:
            return HEADER.pack(magic, 1, 0, type_id, fp, 999, seq)

        malformed = [
            wt.prefix + b"\x01\x02",                                        # truncated
            wt.prefix + header() + b"\0" * 70_000,                           # oversize
            wt.prefix + header(magic=b"PK") + scan(1).to_bytes(),           # bad magic
            wt.prefix + header() + scan(1).to_bytes()[:-3],                  # wrong length
            wt.prefix + pickle.dumps(_Trap()),                               # a pickle
            wt.prefix + rng.randbytes(46),                                   # random bytes
            wt.prefix + header(type_id=65_000) + scan(1).to_bytes(),         # unknown type
        ]
        frames = [out.frame(scan(n, hub=4)) for n in range(1, 21)]
        stream = []
        for i, frame in enumerate(frames):
            stream.append(frame)
            if i < len(malformed):
                stream.append(malformed[i])
        stream.insert(12, frames[2])                                         # a replay
        for frame in stream:
            raw.send(frame)
        await until(lambda: len(bins) == 5, timeout=10)   # full: the SUB is held back
        await sorter.ready()                               # reads on, holding the stream
        got: list[Scan] = []
        async with asyncio.timeout(10):
            while len(got) < 20:
                got.extend(await bins.recv_batch())
        raw.send(out.frame(scan(21, hub=4)))               # still alive afterwards
        async with asyncio.timeout(10):
            got.extend(await bins.recv_batch())
        stats = sorter.transport.stats
        assert [s.seq for s in got] == list(range(1, 22))
        assert stats.received == 21 and stats.extra["duplicates"] == 1
        assert stats.dropped_malformed == 6, stats
        assert stats.dropped_unknown_type == 1, stats
        assert _UNPICKLED == []
        assert bins.stats.high_water <= 5
        # A peer defining Scan differently: dropped, counted, and ready() says so loudly.
        raw.send(wt.prefix + header(fp=wt.fingerprint ^ 1, seq=22) + scan(22).to_bytes())
        await until(lambda: stats.extra.get("drop_fingerprint_mismatch", 0) == 1, timeout=10)
        with pytest.raises(WireMismatchError, match="layout fingerprint"):
            await sorter.ready()
        assert len(bins) == 0
    finally:
        await sorter.close()
        raw.close(0)
        ctx.term()


@pytest.mark.network
async def test_a_stuck_sorter_sigkilled_releases_the_depot_and_a_restarted_one_joins_cleanly(
    peers: Peers,
) -> None:
    # Lossless: a stuck sorter holds the depot's `await publish` (README: the HWM holds the
    # publisher). Killing it must release the depot — the other sorter then gets the whole
    # stream — and a sorter started in its place is a new subscriber: from where it joined,
    # every scan once, in order (no replay).
    count = 300_000   # ~20 MB of frames: more than the stuck sorter's socket buffers hold
    depot = MessageBus.with_tcp("127.0.0.1:0", hwm=200)
    await depot.start()
    address = depot.transport.address  # type: ignore[attr-defined]
    fast = peers.spawn("stranger_sorter", "--connect", address, name="fast")
    stuck = peers.spawn("stranger_sorter", "--connect", address, "--stuck", "--maxsize", "50",
                        "--hwm", "200", name="stuck")
    await fast.aexpect("READY")
    await stuck.aexpect("READY")
    await depot.wait_for_subscribers(2, Scan)
    pub = depot.publisher(Scan)
    published = 0

    async def run_depot() -> None:
        nonlocal published
        for n in range(1, count + 1):
            await pub.publish(scan(n))
            published = n

    running = asyncio.create_task(run_depot())
    try:
        await until(lambda: published > 0)
        # Held back means: the depot stops moving while the stream is unfinished. How soon
        # depends on how fast a loaded machine fills the stuck sorter's socket buffers, so
        # poll for a 0.5 s window with fewer than 100 publishes (bounded: 60 s).
        for _ in range(120):
            before = published
            await asyncio.sleep(0.5)
            if published - before < 100:
                break
        held_at = published
        assert held_at < count, "the stuck sorter never held the depot back"
        assert published - before < 100, "the depot kept going past a stuck lossless sorter"
        stuck.kill()
        await until(lambda: published > held_at + 1_000, timeout=15)   # released
        late = peers.spawn("stranger_sorter", "--connect", address, name="late")
        await late.aexpect("READY")
        joined_at = published
        await asyncio.wait_for(running, 120)

        async def report(sorter: Peer) -> dict[str, Any]:
            for _ in range(300):   # until the sorter has the depot's last scan (<= 30 s)
                sorter.send("REPORT")
                result = await sorter.aresult()
                if result["last"] == count:
                    await asyncio.sleep(0.3)   # a repeat would arrive now
                    sorter.send("REPORT")
                    return await sorter.aresult()
                await asyncio.sleep(0.1)
            raise AssertionError(f"{sorter.name} never got scan {count}: {result}")

        fast_result, late_result = await report(fast), await report(late)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        for p in peers.started:
            p.stop()
        await depot.close()
    assert fast_result == {"first": 1, "last": count, "count": count, "in_order": True}
    assert late_result["in_order"] and late_result["last"] == count
    assert late_result["count"] == count - late_result["first"] + 1
    assert late_result["first"] <= joined_at + 1 or joined_at == count
    assert depot.transport.stats.dropped_overflow == 0


class Requeue(MessageHandler[Scan]):
    """A scan that failed to sort is scanned again, up to seq 3 (a retry via its own queue)."""

    def __init__(self) -> None:
        self.chains: dict[int, list[int]] = {}

    def handle(self, s: Scan) -> None:
        self.chains.setdefault(s.parcel, []).append(s.seq)
        if s.seq < 3:
            self.emit(s.replace(seq=s.seq + 1))


async def test_a_handler_requeueing_into_its_own_full_queue_does_not_wait_for_itself() -> None:
    # README: a handler's sync self.emit into a full "block" queue is held and published
    # before the handler's next message. When the full queue is the handler's own, waiting
    # for space means waiting for itself: the service (and the feed behind it) used to hang
    # for good. It must keep its bound and still get through every retry.
    runtime = ServiceRuntime(MessageBus(), maxsize=5)
    requeue = Requeue()
    running = await runtime.spawn_service(requeue)
    [own] = running.context.subscriptions
    pub = runtime.bus.publisher(Scan)
    worst = 0

    async def feed() -> None:
        nonlocal worst
        for parcel in range(20):
            await pub.publish(Scan(hub=1, seq=1, parcel=parcel))
            worst = max(worst, len(own))

    feeding = asyncio.create_task(feed())
    try:
        await asyncio.wait_for(asyncio.shield(feeding), 5)
        await until(lambda: sum(map(len, requeue.chains.values())) == 60, timeout=5)
    finally:
        feeding.cancel()
        await runtime.shutdown(timeout=2)
    assert requeue.chains == {parcel: [1, 2, 3] for parcel in range(20)}
    assert worst <= 5 and own.stats.high_water <= 5
    assert running.errors == 0


@pytest.mark.network
async def test_ready_still_waits_for_an_absent_depot_after_another_depot_restarted() -> None:
    # README: `await bus.ready()` waits for the acknowledgements of every connected peer.
    # A restarted peer acknowledges again under its new incarnation id; that must not pass
    # for the acknowledgement of another peer that never came up.
    port_a, port_b = free_port(), free_port()
    a = MessageBus.with_tcp(f"127.0.0.1:{port_a}")
    await a.start()
    sorter = MessageBus.with_tcp("127.0.0.1:0", ready_timeout_s=1.5)
    sorter.subscribe(Scan)
    await sorter.start()
    a2 = MessageBus.with_tcp(f"127.0.0.1:{port_a}")
    b = MessageBus.with_tcp(f"127.0.0.1:{port_b}")
    try:
        await sorter.connect_to(f"127.0.0.1:{port_a}")
        await sorter.connect_to(f"127.0.0.1:{port_b}")   # depot b is not running yet
        with pytest.raises(TimeoutError, match=rf"127\.0\.0\.1:{port_b}"):
            await sorter.ready()
        await a.close()
        await a2.start()                                   # depot a restarted, same port
        await a2.wait_for_subscribers(1, Scan)
        with pytest.raises(TimeoutError):
            await sorter.ready()                           # b has still not answered
        await b.start()
        # now both have (the SUB's reconnect to b has backed off to 2 s: allow for it)
        await sorter.transport.ready(timeout=10)  # type: ignore[call-arg]
    finally:
        for bus in (a, a2, b, sorter):
            await bus.close()


@pytest.mark.network
@pytest.mark.parametrize("policy", ["drop_oldest", "raise"])
async def test_over_zeromq_a_lossy_policy_subscriber_counts_every_scan_it_did_not_keep(
    policy: str,
) -> None:
    # README: "drop_oldest"/"raise" drop or refuse and count. Scans from a peer cannot be
    # refused back to anyone: each is either queued or counted, exactly, and the transport
    # never holds the stream back for such a subscriber.
    count, maxsize = 5_000, 10
    depot = MessageBus.with_tcp("127.0.0.1:0")
    await depot.start()
    sorter = MessageBus.with_tcp("127.0.0.1:0")
    board = sorter.subscribe(Scan, maxsize=maxsize, policy=policy)  # type: ignore[arg-type]
    try:
        await sorter.start()
        await sorter.connect_to(depot.transport.address)  # type: ignore[attr-defined]
        await sorter.ready()
        await depot.wait_for_subscribers(1, Scan)
        pub = depot.publisher(Scan)
        for n in range(1, count + 1):
            await pub.publish(scan(n))
        await until(lambda: sorter.stats.received_remote == count, timeout=20)
        kept = board.drain()
        stats = board.stats
        if policy == "drop_oldest":
            assert [s.seq for s in kept] == list(range(count - maxsize + 1, count + 1))
            assert stats.dropped == count - maxsize and stats.rejected == 0
        else:
            assert [s.seq for s in kept] == list(range(1, maxsize + 1))
            assert stats.rejected == count - maxsize and stats.dropped == 0
        assert sorter.transport.stats.extra.get("backpressure_waits", 0) == 0
        assert sorter.transport.stats.received == count
    finally:
        await depot.close()
        await sorter.close()


class SlowCarrier(MessageHandler[Scan]):
    async def handle(self, s: Scan) -> None:
        await asyncio.sleep(3)   # a carrier API that takes its time


async def test_a_shutdown_cut_short_by_its_caller_is_done_again_by_the_next_call() -> None:
    # main() bounds its shutdown (`asyncio.wait_for(runtime.shutdown(), 0.5)`), gives up,
    # and calls shutdown() again with a short timeout to be sure: that call must really
    # shut down, not return at once because a shutdown "happened".
    runtime = ServiceRuntime(MessageBus())
    carrier = await runtime.spawn_service(SlowCarrier())
    await runtime.bus.publisher(Scan).publish(scan(1))
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runtime.shutdown(timeout=5), 0.5)
    await asyncio.wait_for(runtime.shutdown(timeout=0.5), 5)
    assert carrier.done and runtime.bus._closed
    await asyncio.wait_for(runtime.shutdown(), 1)   # and once done, done


@pytest.mark.network
async def test_a_close_cut_short_by_its_caller_still_frees_the_port_and_reports() -> None:
    # A lossless close with a stuck sorter waits up to close_timeout_s (10 s). A caller who
    # bounds it (`asyncio.wait_for(bus.close(), 0.5)`) must still get the port back, as
    # must one who calls close() again; and what was not sent is reported.
    import zmq

    from mycelium_mono.bus.transports.wire import wire_type

    port = free_port()
    depot = MessageBus.with_tcp(f"127.0.0.1:{port}", hwm=10)
    await depot.start()
    ctx = zmq.Context()
    stuck = ctx.socket(zmq.SUB)   # subscribed, connected, never reads
    stuck.setsockopt(zmq.RCVHWM, 10)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt(zmq.SUBSCRIBE, wire_type(Scan).prefix)
    stuck.connect(f"tcp://127.0.0.1:{port}")
    again = MessageBus.with_tcp(f"127.0.0.1:{port}")
    try:
        await depot.wait_for_subscribers(1, Scan)
        pub = depot.publisher(Scan)
        # Publish until a publish is held back (the sorter's buffers and the kernel's are
        # full): a fixed second was not always enough to fill them on a loaded machine, and
        # then the close below had nothing to wait for.
        async with asyncio.timeout(60):
            for n in range(1, 10**7):
                try:
                    await asyncio.wait_for(pub.publish(scan(n)), 0.5)
                except TimeoutError:
                    break
        pub.publish_nowait(scan(10**7))            # the backlog is not empty
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(depot.close(), 0.5)
        await asyncio.wait_for(depot.close(), 2)   # a second close finishes, promptly
        extra = depot.transport.stats.extra
        assert extra["undelivered_at_close"] >= 1 and extra["close_linger_expired"] == 1
        await again.start()                         # the port is free again
    finally:
        await again.close()
        await depot.close()
        stuck.close(0)
        ctx.term()
