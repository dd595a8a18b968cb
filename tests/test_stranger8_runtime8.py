"""A stranger's attack on the in-process MessageBus, ServiceRuntime and the hybrid backlog.

README promises under test: a "block" queue never holds more than ``maxsize`` and nothing is
lost ("every drop is counted"); ``publish_nowait`` refuses with nothing queued anywhere; a
handler that raises is logged and counted and the service goes on; ``await bus.close()``
under a running runtime still handles what is queued and counts the refused emits; a
background handler that raises does not stop the others and ``drain()`` raises it.

Every run is bounded (``asyncio.timeout``), and counts lost, repeated and reordered messages
against what the publishers were told.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
import tracemalloc
from collections import defaultdict

import pytest

from mycelium_mono import (
    U64,
    MessageBus,
    MessageHandler,
    QueueOverflowError,
    ServiceContext,
    ServiceRuntime,
    message,
)
from mycelium_mono.bus import QueueFullError
from mycelium_mono.bus.bus import Subscriber
from mycelium_mono.bus.hybrid import BackgroundBacklog


@message(type_id=8801, topic="stranger8.runtime8")
class Tick:
    src: U64
    seq: U64


@message(type_id=8802, topic="stranger8.runtime8")
class Seed:
    src: U64
    seq: U64


class Boom(BaseException):
    """A library's BaseException that is no Exception (pytest.fail's Failed is one)."""


def seqs(sub: Subscriber[Tick]) -> list[tuple[int, int]]:
    return [(m.src, m.seq) for m in sub.drain()]


def check_per_source_order(got: list[tuple[int, int]]) -> None:
    """No repeat, and each source's messages in the order it published them."""
    assert len(got) == len(set(got)), "a message was delivered twice"
    last: dict[int, int] = {}
    for src, seq in got:
        assert seq > last.get(src, -1), f"source {src}: {seq} after {last[src]}"
        last[src] = seq


# -- cancellation: all or nothing ------------------------------------------------------------


async def test_a_publish_cancelled_at_a_full_block_subscriber_is_queued_nowhere() -> None:
    """``asyncio.wait_for(publish(m), t)`` timing out at the second, full subscriber used to
    leave ``m`` with the first one: a = [0, 1], b = [0], published=2, dropped=0 — lost to b
    and counted nowhere, and the caller's retry would hand a a duplicate."""
    bus = MessageBus()
    a = bus.subscribe(Tick, maxsize=5, name="a")
    b = bus.subscribe(Tick, maxsize=1, name="b")
    pub = bus.publisher(Tick)
    await pub.publish(Tick(src=0, seq=0))  # b is full now
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pub.publish(Tick(src=0, seq=1)), 0.05)
    assert seqs(a) == [(0, 0)], "the cancelled publish reached a but not b"
    assert seqs(b) == [(0, 0)]
    assert bus.stats.published == 1, "a publish queued nowhere was counted as published"
    # The caller's retry now delivers it once to each.
    await asyncio.wait_for(pub.publish(Tick(src=0, seq=1)), 5)
    assert seqs(a) == [(0, 1)] and seqs(b) == [(0, 1)]
    stats = bus.stats
    assert (stats.published, stats.delivered, stats.dropped) == (2, 4, 0)


async def test_publishers_cancelled_at_random_deliver_each_message_to_all_or_none() -> None:
    """Eight publishers, each publish under a random deadline, into three "block" queues one
    slow consumer each: every message is in all three or in none, and a publish that
    returned is in all three."""
    bus = MessageBus()
    subs = [bus.subscribe(Tick, maxsize=m, name=f"s{m}") for m in (3, 7, 50)]
    rng = random.Random(8)
    returned: set[tuple[int, int]] = set()
    got: dict[str, list[tuple[int, int]]] = defaultdict(list)
    stop = asyncio.Event()

    async def produce(src: int) -> None:
        pub = bus.publisher(Tick)
        for seq in range(300):
            try:
                await asyncio.wait_for(pub.publish(Tick(src=src, seq=seq)), rng.random() / 500)
                returned.add((src, seq))
            except TimeoutError:
                pass

    async def consume(sub: Subscriber[Tick], pause: float) -> None:
        while not (stop.is_set() and not len(sub)):
            if len(sub):
                got[sub.name].extend((m.src, m.seq) for m in sub.drain())
            await asyncio.sleep(pause)

    pauses = (0.001, 0, 0.002)
    consumers = [asyncio.create_task(consume(s, p)) for s, p in zip(subs, pauses, strict=True)]
    async with asyncio.timeout(30):
        await asyncio.gather(*(produce(src) for src in range(8)))
        stop.set()
        await asyncio.gather(*consumers)
    sets = [set(got[s.name]) for s in subs]
    for name in got:
        check_per_source_order(got[name])
    assert sets[0] == sets[1] == sets[2], (
        f"half-delivered: {len(sets[0] ^ sets[1])} and {len(sets[1] ^ sets[2])} differ")
    assert returned <= sets[0]
    assert bus.stats.published == len(sets[0]), "published counts messages queued nowhere"
    assert all(s.stats.high_water <= s.maxsize for s in subs)


# -- bounds and counts under every policy and every publish path ---------------------------


class Relay(MessageHandler[Seed]):
    """A handler whose sync ``self.emit`` publishes into the subscriber under test."""

    def handle(self, seed: Seed) -> None:
        self.emit(Tick(src=seed.src, seq=seed.seq))


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "raise"])
async def test_bounds_hold_and_counts_add_up_under_three_publish_paths(policy: str) -> None:
    """Four `await publish` tasks, two `publish_nowait` tasks, and a handler's sync
    `self.emit` all into one maxsize=8 subscriber read slowly: its length never passes 8,
    and for it published = taken + dropped + rejected, exactly; what was taken is in order
    per source, with no repeat."""
    maxsize = 8
    runtime = ServiceRuntime(maxsize=16)
    await runtime.spawn_service(Relay())
    bus = runtime.bus
    sub = bus.subscribe(Tick, maxsize=maxsize, policy=policy, name="slow")  # type: ignore[arg-type]
    taken: list[tuple[int, int]] = []
    told_published: list[tuple[int, int]] = []
    done = asyncio.Event()
    worst = 0

    async def awaiting(src: int) -> None:
        pub = bus.publisher(Tick)
        for seq in range(400):
            with contextlib.suppress(QueueOverflowError):  # "raise": rejected, yet published
                await pub.publish(Tick(src=src, seq=seq))
            told_published.append((src, seq))

    async def nowait(src: int) -> None:
        pub = bus.publisher(Tick)
        for seq in range(400):
            try:
                pub.publish_nowait(Tick(src=src, seq=seq))
                told_published.append((src, seq))
            except QueueFullError:
                await pub.wait_for_space()  # "block": nothing queued, not published
            except QueueOverflowError:
                told_published.append((src, seq))
            await asyncio.sleep(0)

    async def seeding() -> None:
        pub = bus.publisher(Seed)
        for seq in range(400):
            await pub.publish(Seed(src=9, seq=seq))

    async def consume() -> None:
        nonlocal worst
        while not (done.is_set() and not len(sub)):
            worst = max(worst, len(sub))
            if len(sub):
                m = sub.recv_nowait()
                taken.append((m.src, m.seq))
            await asyncio.sleep(0)

    reader = asyncio.create_task(consume())
    async with asyncio.timeout(40):
        await asyncio.gather(*(awaiting(s) for s in range(4)), nowait(4), nowait(5), seeding())
        await runtime.shutdown(timeout=10, close_bus=False)  # every seed relayed
        done.set()
        await reader
    stats = sub.stats
    check_per_source_order(taken)
    relayed = sum(1 for src, _ in taken if src == 9)
    # A relayed Tick is published by the bus whatever the policy; not one of told_published.
    published_ticks = bus.stats.published - 400
    assert worst <= maxsize and stats.high_water == maxsize, (worst, stats)  # it did fill
    assert stats.overfilled == 0
    assert published_ticks == stats.delivered + stats.dropped + stats.rejected, stats
    assert stats.delivered == len(taken)
    assert len(told_published) <= published_ticks
    if policy == "block":
        assert stats.dropped == stats.rejected == 0
        assert relayed == 400 and set(told_published) <= set(taken)
        assert published_ticks == len(taken) == len(told_published) + 400
    await bus.close()


async def test_memory_stays_flat_for_200k_messages_through_a_slow_block_consumer() -> None:
    """200,000 messages through maxsize=100 read a few at a time: the traced memory after
    the first 20,000 grows by less than 256 KiB, and none is lost or reordered."""
    bus = MessageBus()
    sub = bus.subscribe(Tick, maxsize=100)
    pub = bus.publisher(Tick)
    total = 200_000
    seen = 0
    ordered = True

    async def consume() -> None:
        nonlocal seen, ordered
        while seen < total:
            for _ in range(7):  # slower than the publisher: it waits on every batch
                msg = await sub.recv()
                ordered &= msg.seq == seen
                seen += 1
                if seen == total:
                    return
            await asyncio.sleep(0)

    reader = asyncio.create_task(consume())
    tracemalloc.start()
    try:
        async with asyncio.timeout(60):
            for seq in range(total):
                await pub.publish(Tick(src=0, seq=seq))
                if seq == 20_000:
                    gc.collect()
                    base, _ = tracemalloc.get_traced_memory()
            await reader
        gc.collect()
        now, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == total and ordered
    assert sub.stats.high_water <= 100
    assert now - base < 256 * 1024, f"grew {now - base} bytes"


# -- handlers that raise -----------------------------------------------------------------------


class Fussy(MessageHandler[Tick]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, tick: Tick) -> None:
        if tick.seq in (3, 30):
            raise Boom(f"tick {tick.seq}")
        self.seen.append(tick.seq)


class Steady(MessageHandler[Tick]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, tick: Tick) -> None:
        self.seen.append(tick.seq)


async def test_a_handler_raising_a_base_exception_is_counted_and_the_service_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It used to end the service's task silently (failure None, errors 0, no log): its full
    "block" queue then held every publisher of Tick for good (6 of 50 published, then
    stuck), the other service starved with it."""
    runtime = ServiceRuntime(maxsize=3)
    fussy, steady = Fussy(), Steady()
    running = await runtime.spawn_service(fussy)
    await runtime.spawn_service(steady)
    pub = runtime.bus.publisher(Tick)
    with caplog.at_level(logging.ERROR, logger="mycelium_mono.runtime"):
        async with asyncio.timeout(10):
            for seq in range(50):
                await pub.publish(Tick(src=0, seq=seq))
            await runtime.shutdown(timeout=5)
    assert steady.seen == list(range(50))
    assert fussy.seen == [n for n in range(50) if n not in (3, 30)]
    assert running.errors == 2 and running.handled == 50
    assert caplog.text.count("Fussy.handle raised") == 2, caplog.text


def test_a_service_left_pending_on_a_closed_loop_is_not_called_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop closed with a handler still awaiting: collecting its task closes the coroutine
    (GeneratorExit at the handler's await). Taken for the handler's failure, it was logged as
    one, the consumer loop awaited again and died of "no running event loop", and the
    service was logged as given up: three errors for what is no error of the service."""

    class Waiter(MessageHandler[Tick]):
        async def handle(self, t: Tick) -> None:
            await asyncio.Event().wait()

    async def start() -> None:
        runtime = ServiceRuntime()
        await runtime.spawn_service(Waiter())
        await runtime.bus.publisher(Tick).publish(Tick(src=0, seq=0))
        await asyncio.sleep(0.05)  # the handler is awaiting now

    loop = asyncio.new_event_loop()
    with caplog.at_level(logging.ERROR, logger="mycelium_mono"):
        loop.run_until_complete(start())
        loop.close()
        del loop
        gc.collect()
    ours = [r for r in caplog.records if r.name.startswith("mycelium_mono")]
    assert ours == [], [r.getMessage() for r in ours]


async def test_a_run_service_raising_a_base_exception_is_restarted() -> None:
    starts = 0

    class Feed:
        async def run(self, ctx: object) -> None:
            nonlocal starts
            starts += 1
            if starts == 1:
                raise Boom("first start")

    runtime = ServiceRuntime(backoff_initial=0.01)
    running = await runtime.spawn_service(Feed())
    async with asyncio.timeout(10):
        await asyncio.shield(running.task)
        await runtime.shutdown(timeout=2)
    assert starts == 2 and running.restarts == 1 and isinstance(running.exceptions[0], Boom)


async def test_a_handler_stuck_at_shutdown_is_cancelled_and_the_others_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One handler never returns: shutdown(timeout=0.3) cancels it, names it, and every
    other service has handled all 200 messages by then."""
    gate = asyncio.Event()  # never set

    class Stuck(MessageHandler[Tick]):
        async def handle(self, tick: Tick) -> None:
            if tick.seq == 5:
                await gate.wait()

    runtime = ServiceRuntime(maxsize=500)
    stuck = await runtime.spawn_service(Stuck())
    steady = Steady()
    await runtime.spawn_service(steady)
    pub = runtime.bus.publisher(Tick)
    for seq in range(200):
        await pub.publish(Tick(src=0, seq=seq))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mycelium_mono.runtime"):
        async with asyncio.timeout(10):
            await runtime.shutdown(timeout=0.3)
    assert time.monotonic() - started < 3
    assert steady.seen == list(range(200))
    assert stuck.task.cancelled() and stuck.handled == 5
    assert "cancelled ['Stuck']" in caplog.text, caplog.text


# -- shutdown and close under load ------------------------------------------------------------


async def test_concurrent_shutdowns_while_producers_are_blocked_lose_nothing() -> None:
    """Three producer services blocked on a slow handler's full queue; two shutdown() calls
    at once, a third after: all return, and every message a producer was told it emitted
    was handled exactly once, in its producer's order."""
    seen: list[tuple[int, int]] = []
    told: list[tuple[int, int]] = []

    class Slow(MessageHandler[Tick]):
        async def handle(self, tick: Tick) -> None:
            await asyncio.sleep(0.0005)
            seen.append((tick.src, tick.seq))

    class Producer:
        def __init__(self, src: int) -> None:
            self.src = src

        async def run(self, ctx: ServiceContext) -> None:
            seq = 0
            while not ctx.shutting_down:
                await ctx.emit(Tick(src=self.src, seq=seq))
                told.append((self.src, seq))
                seq += 1

    runtime = ServiceRuntime(maxsize=4)
    await runtime.spawn_service(Slow())
    producers = [await runtime.spawn_service(Producer(src)) for src in range(3)]
    await asyncio.sleep(0.05)
    async with asyncio.timeout(20):
        await asyncio.gather(runtime.shutdown(timeout=5), runtime.shutdown(timeout=5))
        await runtime.shutdown(timeout=5)
    assert all(p.done and p.failure is None for p in producers)
    check_per_source_order(seen)
    assert len(told) > 30 and sorted(seen) == sorted(told), len(set(told) ^ set(seen))
    stats = runtime.bus.stats
    assert stats.dropped == stats.no_local_subscriber == 0 and stats.delivered == len(told)


class Stage(MessageHandler[Seed]):
    def __init__(self) -> None:
        self.handled: list[int] = []

    def handle(self, seed: Seed) -> None:
        self.handled.append(seed.seq)
        self.emit(Tick(src=seed.src, seq=seed.seq))


async def test_bus_close_under_a_runtime_still_handles_the_batch_and_counts_held_emits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler's sync emits are held by a full downstream queue when `bus.close()` comes.
    The held emit's refusal used to escape the service's task: the rest of its batch went
    unhandled (handled [0, 1, 2] of 4, errors 0) and the log said only "this MessageBus is
    closed". README: queued messages are still handled, their refused emits logged and
    counted, the error naming the service and shutdown()."""
    runtime = ServiceRuntime(maxsize=4)
    stage = Stage()
    running = await runtime.spawn_service(stage)
    bus = runtime.bus
    downstream = bus.subscribe(Tick, maxsize=2)  # nobody reads it
    pub = bus.publisher(Seed)
    for seq in range(4):
        await pub.publish(Seed(src=0, seq=seq))
    async with asyncio.timeout(10):
        while len(downstream) < 2 or len(stage.handled) < 3:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # seed 2's Tick held, its release waiting for room
        with caplog.at_level(logging.ERROR, logger="mycelium_mono.runtime"):
            await bus.close()
            while not running.done:
                await asyncio.sleep(0.001)
    assert running.task.exception() is None
    assert stage.handled == [0, 1, 2, 3]
    assert running.handled == 4 and running.errors == 2  # seeds 2 and 3: their Tick refused
    assert "service 'Stage' emitted Tick, which was not published" in caplog.text
    assert "runtime.shutdown()" in caplog.text
    # Seed 2's handler returned; only its held emit failed, and the log says which it was.
    assert "Stage.handle returned, but what it emitted was refused, on Seed(" in caplog.text
    await runtime.shutdown(timeout=1)


# -- a stalled loop with back-pressure ---------------------------------------------------------


async def test_a_handler_stalling_the_loop_keeps_every_publishers_order_for_every_subscriber(
) -> None:
    """A handler that time.sleep()s now and then, behind maxsize=5 queues: four publishers
    into it and into two raw subscribers; nothing lost, nothing repeated, order per
    publisher for all three."""
    seen: list[tuple[int, int]] = []

    class Staller(MessageHandler[Tick]):
        def handle(self, tick: Tick) -> None:
            if tick.seq % 97 == 0:
                time.sleep(0.01)  # blocks the whole event loop
            seen.append((tick.src, tick.seq))

    runtime = ServiceRuntime(maxsize=5)
    await runtime.spawn_service(Staller())
    bus = runtime.bus
    raw = [bus.subscribe(Tick, maxsize=5, name=f"raw{i}") for i in range(2)]
    got: dict[str, list[tuple[int, int]]] = defaultdict(list)

    async def produce(src: int) -> None:
        pub = bus.publisher(Tick)
        for seq in range(1000):
            await pub.publish(Tick(src=src, seq=seq))

    async def consume(sub: Subscriber[Tick]) -> None:
        async for m in sub:  # until the shutdown's bus close, and drained
            got[sub.name].append((m.src, m.seq))
            if m.seq % 89 == 0:
                time.sleep(0.005)  # a raw consumer stalls the loop too

    readers = [asyncio.create_task(consume(s)) for s in raw]
    async with asyncio.timeout(40):
        await asyncio.gather(*(produce(src) for src in range(4)))
        await runtime.shutdown(timeout=10)  # closes the raw subscriptions too (bus close)
        await asyncio.gather(*readers)
    everything = {(src, seq) for src in range(4) for seq in range(1000)}
    for received in (seen, got["raw0#2"], got["raw1#3"]):
        check_per_source_order(received)
        assert set(received) == everything, len(everything - set(received))


# -- the hybrid backlog ---------------------------------------------------------------------


async def test_a_background_handler_raising_a_base_exception_does_not_stop_the_backlog() -> None:
    """It used to end the backlog's worker: the calls behind it never ran and drain() waited
    for them for good (ran [0, 1] of 5, queued 2, the drain timed out)."""
    backlog = BackgroundBacklog(maxsize=10)
    ran: list[int] = []

    async def store(n: int) -> None:
        if n == 2:
            raise Boom("disk")
        ran.append(n)

    for n in range(5):
        backlog.submit(store, n)
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(backlog.drain(), 5)
    assert ran == [0, 1, 3, 4]
    (failure,) = info.value.exceptions
    assert "raised Boom" in str(failure) and isinstance(failure.__cause__, Boom)
    stats = backlog.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.dropped) == (5, 5, 1, 0)
    await backlog.close(1)


async def test_backlog_close_with_a_timeout_counts_exactly_what_it_gave_up_on() -> None:
    """One call stuck, nine behind it, a full "raise" backlog refusing two more:
    close(timeout) drops the stuck one and the nine, and every counter adds up."""
    backlog = BackgroundBacklog(maxsize=10, policy="raise")
    ran: list[int] = []
    gate = asyncio.Event()

    async def work(n: int) -> None:
        if n == 3:
            await gate.wait()  # never set
        ran.append(n)

    for n in range(4):
        backlog.submit(work, n)
    async with asyncio.timeout(5):
        while len(ran) < 3:
            await asyncio.sleep(0.001)
    for n in range(4, 14):
        backlog.submit(work, n)
    refused = 0
    for n in (14, 15):
        try:
            backlog.submit(work, n)
        except Exception:
            refused += 1
    await asyncio.wait_for(backlog.close(timeout=0.1), 5)
    stats = backlog.stats
    assert ran == [0, 1, 2] and refused == 2
    assert (stats.submitted, stats.completed, stats.dropped, stats.rejected) == (14, 3, 11, 2)
    assert stats.queued == 0
    await asyncio.wait_for(backlog.drain(), 1)  # returns: nothing is left to wait for
