"""Bounds are bounds: a wind farm's telemetry ingestion, held to the README's promises on
back-pressure, overflow policies, counters, memory and shutdown.

Turbines publish ``Reading``s and ``Alarm``s; the ingestion services store them (slowly: a
database driver that sometimes stalls the event loop with ``time.sleep``). Every queue
length is read from outside the consumer, by a sampler task that looks at every loop turn,
and every counter is checked to add up against what was published.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
import tracemalloc
from typing import Any

import pytest
from peers.bounds3_wind import Alarm, Reading
from peers.harness import Peers, until

from mycelium_mono import (
    MessageBus,
    MessageHandler,
    QueueFullError,
    ServiceRuntime,
    service,
)
from mycelium_mono.bus.bus import QueueOverflowError, Subscriber
from mycelium_mono.bus.hybrid import BackgroundBacklog, BacklogFull

pytest_plugins = ["conftest_distributed"]


def reading(turbine: int, seq: int) -> Reading:
    return Reading(turbine=turbine, seq=seq, power_kw=float(seq % 3000))


class Sampler:
    """Looks at queue lengths every loop turn, from outside whoever consumes them."""

    def __init__(self, *queues: Any) -> None:
        self.queues = queues
        self.biggest = [0] * len(queues)
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    def look(self) -> None:
        for i, q in enumerate(self.queues):
            self.biggest[i] = max(self.biggest[i], len(q))

    async def _run(self) -> None:
        while not self._stop:
            self.look()
            await asyncio.sleep(0)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.look()


# -- README: 'A "block" queue never holds more than maxsize' ---------------------------------


async def test_block_bound_holds_with_many_turbines_both_publish_kinds_and_a_stalled_sink() -> None:
    bus = MessageBus()
    store = bus.subscribe(Reading, maxsize=32, name="store")
    alarms_and_readings = bus.subscribe_many((Reading, Alarm), maxsize=8, name="dash")
    await bus.start()
    seen: dict[int, list[int]] = {t: [] for t in range(1, 9)}
    dash_seen = 0
    refused_nowait = 0
    per_turbine = 1_500

    async def turbine(t: int) -> None:
        nonlocal refused_nowait
        pub = bus.publisher(Reading)
        seq = 1
        while seq <= per_turbine:
            msg = reading(t, seq)
            if seq % 2:
                await pub.publish(msg)
            else:
                try:
                    pub.publish_nowait(msg)
                except QueueFullError:
                    refused_nowait += 1
                    await pub.wait_for_space()
                    continue  # nothing was queued: publishing it again cannot duplicate
            seq += 1

    async def sink() -> None:
        n = 0
        async for r in store:
            seen[r.turbine].append(r.seq)
            n += 1
            if n % 700 == 0:
                time.sleep(0.02)  # the database driver blocks the loop

    async def dashboard() -> None:
        nonlocal dash_seen
        async for _ in alarms_and_readings:
            dash_seen += 1
            if dash_seen % 97 == 0:
                await asyncio.sleep(0.001)

    with Sampler(store, alarms_and_readings) as sampler:
        consumers = [asyncio.create_task(sink()), asyncio.create_task(dashboard())]
        await asyncio.wait_for(asyncio.gather(*(turbine(t) for t in seen)), 60)
        await until(lambda: not len(store) and not len(alarms_and_readings))
        store.close()
        alarms_and_readings.close()
        await asyncio.wait_for(asyncio.gather(*consumers), 10)

    assert sampler.biggest[0] <= 32 and sampler.biggest[1] <= 8, sampler.biggest
    assert store.stats.high_water <= 32 and alarms_and_readings.stats.high_water <= 8
    assert refused_nowait > 0  # the nowait half really met full queues
    for t, seqs in seen.items():
        assert seqs == list(range(1, per_turbine + 1)), f"turbine {t}"
    total = 8 * per_turbine
    stats = bus.stats
    assert stats.published == total  # a refused publish_nowait is no publish
    assert stats.delivered == 2 * total and dash_seen == total
    assert stats.dropped == stats.rejected == 0


@pytest.mark.parametrize("policy", ["drop_oldest", "raise"])
async def test_lossy_policies_hold_the_bound_and_every_loss_is_counted(policy: str) -> None:
    bus = MessageBus()
    sub: Subscriber[Reading] = bus.subscribe(Reading, maxsize=16, policy=policy)  # type: ignore[arg-type]
    full = bus.subscribe(Reading, maxsize=100_000)  # sees everything: the reference
    await bus.start()
    pub = bus.publisher(Reading)
    taken: list[int] = []
    raised = 0

    async def slow() -> None:
        async for r in sub:
            taken.append(r.seq)
            if len(taken) % 50 == 0:
                time.sleep(0.005)
            await asyncio.sleep(0)

    with Sampler(sub) as sampler:
        consumer = asyncio.create_task(slow())
        for seq in range(1, 20_001):
            try:
                if seq % 3:
                    pub.publish_nowait(reading(1, seq))
                else:
                    await pub.publish(reading(1, seq))
            except QueueOverflowError:
                raised += 1
            if seq % 64 == 0:
                await asyncio.sleep(0)
        await until(lambda: not len(sub))
        sub.close()
        await asyncio.wait_for(consumer, 10)

    assert sampler.biggest[0] <= 16 and sub.stats.high_water <= 16
    s = sub.stats
    assert len(full) == 20_000
    assert taken == sorted(taken) and len(set(taken)) == len(taken)
    assert s.delivered == len(taken)
    assert s.delivered + s.dropped + s.rejected + s.queued == 20_000, s
    if policy == "raise":
        assert raised == s.rejected > 0 and s.dropped == 0
    else:
        assert raised == 0 and s.dropped > 0 and s.rejected == 0
    assert bus.stats.published == 20_000


async def test_a_restarted_service_keeps_its_bound_while_down_and_loses_nothing() -> None:
    # A run() service with its own subscription, which raises every 400 readings and is
    # restarted with backoff: its queue is the same subscription across restarts, and
    # publishers wait while it is down instead of overfilling it.
    handled: list[int] = []
    sub_seen: list[Subscriber[Any]] = []

    @service
    class Ingest:
        async def run(self, ctx: Any) -> None:
            sub = ctx.subscribe(Reading, maxsize=20)
            sub_seen.append(sub)
            async for r in sub:
                handled.append(r.seq)
                if r.seq % 400 == 0 and handled.count(r.seq) == 1:
                    raise RuntimeError(f"database connection lost at {r.seq}")

    runtime = ServiceRuntime(max_restarts=10, backoff_initial=0.02, backoff_max=0.05)
    running = await runtime.spawn_service(Ingest())
    await until(lambda: bool(sub_seen))
    pub = runtime.bus.publisher(Reading)
    with Sampler(sub_seen[0]) as sampler:
        for seq in range(1, 2_001):
            await asyncio.wait_for(pub.publish(reading(3, seq)), 10)
        await until(lambda: len(handled) >= 2_000)
    await runtime.shutdown(timeout=5)
    assert running.restarts == 5
    assert all(s is sub_seen[0] for s in sub_seen)
    assert sampler.biggest[0] <= 20 and sub_seen[0].stats.high_water <= 20
    assert handled == list(range(1, 2_001))


async def test_the_hybrid_backlog_bound_holds_and_its_counters_add_up() -> None:
    for policy in ("block", "drop_oldest", "raise"):
        backlog = BackgroundBacklog(maxsize=10, policy=policy)  # type: ignore[arg-type]
        stored: list[int] = []

        async def store(r: Reading, stored: list[int] = stored) -> None:
            if r.seq % 100 == 0:
                time.sleep(0.002)
            await asyncio.sleep(0)
            stored.append(r.seq)

        refused = 0
        with Sampler(backlog) as sampler:
            for seq in range(1, 3_001):
                try:
                    backlog.submit(store, reading(2, seq))
                except BacklogFull:
                    refused += 1
                    if policy == "block":
                        await backlog.wait_for_space()
                        backlog.submit(store, reading(2, seq))
                sampler.look()
                if seq % 7 == 0:
                    await asyncio.sleep(0)
            await asyncio.wait_for(backlog.drain(), 10)
        s = backlog.stats
        assert sampler.biggest[0] <= 10, (policy, sampler.biggest)
        assert s.submitted == s.completed + s.dropped + s.queued, (policy, s)
        assert s.completed == len(stored) and stored == sorted(stored)
        if policy == "block":
            assert stored == list(range(1, 3_001)) and refused > 0
        elif policy == "raise":
            assert s.submitted + refused == 3_000 and refused > 0
        else:
            assert s.submitted == 3_000 and s.dropped > 0
        await backlog.close()


# -- memory stays flat --------------------------------------------------------------------


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_memory_is_flat_over_200k_readings_through_a_slow_bounded_sink() -> None:
    bus = MessageBus()
    sink = bus.subscribe(Reading, maxsize=64)
    latest = bus.subscribe(Reading, maxsize=8, policy="drop_oldest")
    await bus.start()
    pub = bus.publisher(Reading)
    count = 0

    async def slow() -> None:
        nonlocal count
        async for _ in sink:
            count += 1
            if count % 64 == 0:
                await asyncio.sleep(0)

    consumer = asyncio.create_task(slow())
    tracemalloc.start()
    try:
        marks = []
        for seq in range(1, 200_001):
            await pub.publish(reading(seq % 50, seq))
            if seq in (50_000, 200_000):
                marks.append(_traced())
    finally:
        tracemalloc.stop()
    await until(lambda: count == 200_000, timeout=30)
    sink.close()
    await consumer
    assert marks[1] - marks[0] < 256 * 1024, marks
    assert latest.stats.dropped + latest.stats.queued == 200_000


async def test_subscribing_and_closing_again_and_again_does_not_grow_the_bus() -> None:
    # A per-command subscription (subscribe, wait for one reply, close) in a long-running
    # maintenance service: the bus kept every closed subscription, with what it had queued.
    bus = MessageBus()
    await bus.start()
    pub = bus.publisher(Reading)

    def churn(n: int) -> None:
        for i in range(n):
            sub = bus.subscribe(Reading, maxsize=4)
            pub.publish_nowait(reading(7, i))
            pub.publish_nowait(reading(7, i))
            sub.recv_nowait()  # took the reply; one left queued in a closed subscription
            sub.close()

    churn(1_000)
    tracemalloc.start()
    try:
        before = _traced()
        churn(20_000)
        after = _traced()
    finally:
        tracemalloc.stop()
    assert after - before < 512 * 1024, f"grew {(after - before) // 1024} KiB"
    stats = bus.stats
    assert stats.published == 42_000
    assert stats.delivered == 21_000  # the counters of closed subscriptions are kept
    assert stats.subscribers == 0


# -- shutdown and drain -----------------------------------------------------------------


async def test_two_workers_on_one_subscription_both_end_when_it_closes() -> None:
    # Two database writers sharing one queue of readings (a worker pool, as on an
    # asyncio.Queue): closing the subscription must end both `async for` loops.
    bus = MessageBus()
    sub = bus.subscribe(Reading, maxsize=10)
    await bus.start()
    pub = bus.publisher(Reading)
    got: list[int] = []

    async def writer() -> None:
        async for r in sub:
            got.append(r.seq)

    writers = [asyncio.create_task(writer()) for _ in range(2)]
    await asyncio.sleep(0)  # both parked in recv on the empty queue
    for seq in range(1, 21):
        await pub.publish(reading(4, seq))
        await asyncio.sleep(0)
    await until(lambda: len(got) == 20)
    sub.close()
    _done, pending = await asyncio.wait(writers, timeout=2)
    for task in pending:
        task.cancel()
    assert not pending, "a writer stayed parked on a closed, empty subscription"
    assert sorted(got) == list(range(1, 21))


async def test_two_workers_on_one_subscription_both_get_messages() -> None:
    # Parked together, the second waiter used to replace the first: only one was ever woken.
    bus = MessageBus()
    sub = bus.subscribe(Reading, maxsize=10)
    await bus.start()
    pub = bus.publisher(Reading)
    got: dict[int, list[int]] = {0: [], 1: []}

    async def writer(i: int) -> None:
        while True:
            r = await sub.recv()
            got[i].append(r.seq)
            await asyncio.sleep(0.005)  # a slow write: the other worker must take the next

    writers = [asyncio.create_task(writer(i)) for i in range(2)]
    await asyncio.sleep(0)
    for seq in range(1, 41):
        await pub.publish(reading(4, seq))
        await asyncio.sleep(0.001)
    await until(lambda: len(got[0]) + len(got[1]) == 40)
    for task in writers:
        task.cancel()
    await asyncio.gather(*writers, return_exceptions=True)
    assert sorted(got[0] + got[1]) == list(range(1, 41))
    assert got[0] and got[1], got


class SlowStore(MessageHandler[Reading]):
    def __init__(self) -> None:
        self.seqs: list[int] = []

    async def handle(self, r: Reading) -> None:
        if r.seq % 25 == 0:
            time.sleep(0.002)  # the driver blocks the loop now and then
        await asyncio.sleep(0)
        self.seqs.append(r.seq)


async def test_graceful_shutdown_drains_a_full_queue_behind_a_slow_sink() -> None:
    @service
    class Turbine:
        async def run(self, ctx: Any) -> None:
            for seq in range(1, 3_001):
                await ctx.emit(reading(5, seq))

    runtime = ServiceRuntime(maxsize=50)
    store = SlowStore()
    sink = await runtime.spawn_service(store)
    producer = await runtime.spawn_service(Turbine())
    [queue] = sink.context.subscriptions
    with Sampler(queue) as sampler:
        await asyncio.wait_for(producer.task, 30)  # type: ignore[arg-type]
        assert len(store.seqs) < 3_000  # the sink is behind: shutdown has work to wait for
        started = time.monotonic()
        await runtime.shutdown(timeout=20)
    assert time.monotonic() - started < 20
    assert sampler.biggest[0] <= 50
    assert store.seqs == list(range(1, 3_001))  # every queue drained first
    assert queue.stats.delivered == 3_000 and runtime.bus.stats.published == 3_000


async def test_shutdown_with_a_stuck_producer_and_a_slow_sink_ends_within_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @service
    class Turbine:
        async def run(self, ctx: Any) -> None:
            seq = 0
            while True:  # a live feed that ignores ctx.shutting_down
                seq += 1
                await ctx.emit(reading(6, seq))

    class VerySlow(MessageHandler[Reading]):
        def __init__(self) -> None:
            self.seqs: list[int] = []

        async def handle(self, r: Reading) -> None:
            await asyncio.sleep(0.01)
            self.seqs.append(r.seq)

    runtime = ServiceRuntime(maxsize=20)
    store = VerySlow()
    sink = await runtime.spawn_service(store)
    await runtime.spawn_service(Turbine())
    [queue] = sink.context.subscriptions
    with Sampler(queue) as sampler:
        await until(lambda: len(store.seqs) >= 10)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="mycelium_mono.runtime"):
            await asyncio.wait_for(runtime.shutdown(timeout=0.5), 10)
        took = time.monotonic() - started
    assert took < 2.0, took
    assert "still busy" in caplog.text and "Turbine" in caplog.text
    assert sampler.biggest[0] <= 20
    assert store.seqs == list(range(1, len(store.seqs) + 1))  # no repeat, no reorder


# -- ZeroMQ: a hostile peer, a slow remote sink ---------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_hostile_zmq_peer_is_dropped_counted_and_cannot_grow_the_subscriber(
    tmp_path: Any,
) -> None:
    import pickle

    import zmq

    from mycelium_mono.bus.transports.wire import FLAG_ACK, HEADER, MAGIC, VERSION, wire_type

    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (open, (str(marker), "w"))

    ctx = zmq.Context()
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.SNDHWM, 0)
    raw.setsockopt(zmq.XPUB_NODROP, 1)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    bus = MessageBus.with_tcp("127.0.0.1:0")
    sub = bus.subscribe(Reading, maxsize=64)
    records = _Records()
    logging.getLogger("mycelium_mono").addHandler(records)
    taken: list[tuple[int, int]] = []

    async def take() -> None:
        async for r in sub:
            taken.append((r.turbine, r.seq))

    consumer = asyncio.create_task(take())
    try:
        await bus.start()
        await bus.connect_to(f"127.0.0.1:{port}")
        raw.setsockopt(zmq.RCVTIMEO, 5000)
        assert (await asyncio.to_thread(raw.recv)).startswith(b"\x01")  # its subscription
        wt = wire_type(Reading)
        body = reading(8, 1).to_bytes()  # what the forged incarnations send

        def header(fp: int, pub: int, seq: int, flags: int = 0) -> bytes:
            return HEADER.pack(MAGIC, VERSION, flags, wt.type_id, fp, pub, seq)

        honest = secrets.randbits(63) | 1
        evil = pickle.dumps(Evil())
        bad = [
            wt.prefix + b"garbage",                                        # truncated
            wt.prefix + header(wt.fingerprint, honest, 1)[:20],             # truncated header
            wt.prefix + header(wt.fingerprint, honest, 1) + body[:-1],      # wrong length
            wt.prefix + header(wt.fingerprint, honest, 1) + body + b"x" * 70_000,  # oversize
            wt.prefix + evil,                                               # a bare pickle
            wt.prefix + b"XX" + header(wt.fingerprint, honest, 1)[2:] + body,  # bad magic
        ]
        frames = [
            wt.prefix + header(wt.fingerprint, honest, 1) + reading(1, 1).to_bytes(),
            *bad,
            wt.prefix + header(wt.fingerprint, honest, 1) + reading(1, 1).to_bytes(),  # replay
            wt.prefix + header(wt.fingerprint, honest, 2) + reading(1, 2).to_bytes(),
            # A pickle where the layout goes: decoded as a Reading's bytes, never unpickled.
            wt.prefix + header(wt.fingerprint, secrets.randbits(63) | 1, 1)
            + evil[: len(body)].ljust(len(body), b"\0"),
        ]
        # Then a flood of forged incarnations: valid frames, wrong fingerprints and forged
        # subscription acknowledgements, each under a new random publisher id.
        flood = 30_000
        for i in range(flood):
            forged = secrets.randbits(63) | 1
            kind = i % 3
            if kind == 0:
                frames.append(wt.prefix + header(wt.fingerprint, forged, 1) + body)
            elif kind == 1:
                frames.append(wt.prefix + header(wt.fingerprint ^ 0xBAD, forged, 1) + body)
            else:
                frames.append(wt.prefix + header(wt.fingerprint, forged, 0, FLAG_ACK))
        frames.append(wt.prefix + header(wt.fingerprint, honest, 3) + reading(1, 3).to_bytes())
        await asyncio.to_thread(lambda: [raw.send(f) for f in frames])
        t = bus.transport
        await until(lambda: (1, 3) in taken, timeout=60)

        assert not marker.exists()  # nothing was unpickled
        assert [s for turbine, s in taken if turbine == 1] == [1, 2, 3]
        assert sum(1 for turbine, _ in taken if turbine == 8) == flood // 3
        assert len(taken) == 3 + 1 + flood // 3  # each forged valid frame once, the pickle too
        assert t.stats.dropped_malformed == len(bad), t.stats
        assert t.stats.extra["duplicates"] == 1  # the replayed seq 1
        assert t.stats.extra["drop_fingerprint_mismatch"] == flood // 3
        # Bounded: what the subscriber keeps per publisher, and what it logs, must not grow
        # with the number of forged incarnations.
        inbound = t._in  # type: ignore[attr-defined]
        assert len(inbound.tracker._last) <= 5_000
        assert len(inbound.mismatches) <= 100
        assert max(len(v) for v in t._acks.values()) <= 1_100  # type: ignore[attr-defined]
        errors = [r for r in records.records if r.levelno >= logging.ERROR]
        assert len(errors) <= 110, f"{len(errors)} error lines for one hostile peer"
        assert sub.stats.high_water <= 64
    finally:
        logging.getLogger("mycelium_mono").removeHandler(records)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await bus.close()
        raw.close(0)
        ctx.term()


def test_a_slow_remote_sink_keeps_its_bound_and_flat_memory_over_200k_readings(
    peers: Peers,
) -> None:
    async def main() -> dict[str, Any]:
        bus = MessageBus.with_tcp("127.0.0.1:0", hwm=1000)
        await bus.start()
        address = bus.transport.address  # type: ignore[attr-defined]
        total = 200_000
        sink = peers.spawn(
            "bounds3_sink", "--connect", address, "--maxsize", "64", "--hwm", "1000",
            "--expect", str(total), "--stall-every", "20000", "--stall-s", "0.2",
        )
        await sink.aexpect("READY", 30)
        await bus.wait_for_subscribers(1, Reading)
        pub = bus.publisher(Reading)
        tracemalloc.start()
        try:
            marks = []
            for seq in range(1, total + 1):
                await pub.publish(reading(9, seq))
                if seq in (total // 4, total):
                    marks.append(_traced())
        finally:
            tracemalloc.stop()
        result = await sink.aresult(120)
        sink.send("QUIT")
        await bus.close()
        result["publisher_growth"] = marks[1] - marks[0]
        result["backlog_peak"] = bus.transport.stats.extra.get("backlog_peak", 0)
        return result

    result = asyncio.run(main())
    assert result["count"] == 200_000 and result["in_order"], result
    assert result["biggest"] <= 64 and result["high_water"] <= 64, result
    assert result["rss_end"] - result["rss_quarter"] < 8 * 1024, result  # KiB
    assert result["publisher_growth"] < 1024 * 1024, result
    assert result["backlog_peak"] <= 1000, result  # lossless: waits, never hoards


def test_the_sequence_tracker_stays_bounded_across_endless_incarnations() -> None:
    # Turbine controllers restarted again and again: each restart is a new incarnation.
    from mycelium_mono.bus.transports.wire import MAX_TRACKED, SequenceTracker

    tracker = SequenceTracker()
    live = 1
    assert tracker.observe(live, 9301, 1)
    for incarnation in range(2, 3 * MAX_TRACKED):
        assert tracker.observe(incarnation * 2 + 1, 9301, 1)
        assert tracker.observe(incarnation * 2 + 1, 9301, 2)
        if incarnation % 100 == 0:
            assert tracker.observe(live, 9301, incarnation // 100 + 1)  # still in sequence
    assert len(tracker._last) <= MAX_TRACKED and len(tracker.publishers) <= MAX_TRACKED
    assert tracker.publishers_seen == 3 * MAX_TRACKED - 1
    assert tracker.gaps == tracker.duplicates == 0
    assert not tracker.observe(live, 9301, 1)  # the live one was kept: a replay is refused


async def test_a_hostile_nats_publisher_is_dropped_counted_and_bounded(shared_nats: str) -> None:
    import nats

    from mycelium_mono.bus.transports.wire import HEADER, MAGIC, VERSION, wire_type

    bus = MessageBus.with_nats(shared_nats)
    sub = bus.subscribe(Alarm, maxsize=32)
    await bus.ready()
    raw = await nats.connect(shared_nats)
    taken: list[int] = []

    async def take() -> None:
        async for a in sub:
            taken.append(a.seq)

    consumer = asyncio.create_task(take())
    try:
        wt = wire_type(Alarm)
        body = Alarm(turbine=2, code=7, seq=0).to_bytes()
        flood = 6_000
        for i in range(flood):
            forged = secrets.randbits(63) | 1
            fp = wt.fingerprint if i % 2 == 0 else wt.fingerprint ^ 0xBAD
            await raw.publish(wt.subject, HEADER.pack(MAGIC, VERSION, 0, wt.type_id, fp, forged, 1)
                              + body)
            if i % 500 == 0:
                await raw.publish(wt.subject, b"\x80\x04garbage" * 3)  # a pickle-ish body
                await raw.flush()
        honest = bus.publisher(Alarm)
        await honest.publish(Alarm(turbine=2, code=1, seq=99))
        await raw.flush()
        await until(lambda: len(taken) >= flood // 2 + 1, timeout=30)
        t = bus.transport
        assert len(taken) == flood // 2 + 1
        assert t.stats.dropped_malformed == flood // 500
        assert t.stats.extra["drop_fingerprint_mismatch"] == flood // 2
        inbound = t._in  # type: ignore[attr-defined]
        assert len(inbound.tracker._last) <= 5_000 and len(inbound.mismatches) <= 100
        assert sub.stats.high_water <= 32
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await raw.close()
        await bus.close()
