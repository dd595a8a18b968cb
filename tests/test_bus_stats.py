"""Subscriber statistics say what happened to the queue (issue 15 item 10)."""

from __future__ import annotations

from mycelium_mono import U64, MessageBus, message


@message(type_id=5301, topic="stats_test")
class Tick:
    n: U64


async def test_high_water_is_the_burst_a_subscriber_drained_in_one_batch() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick, maxsize=2_000)
    pub = bus.publisher(Tick)
    for n in range(1_000):
        pub.publish_nowait(Tick(n=n))
    assert len(await sub.recv_batch()) == 1_000
    assert sub.stats.delivered == 1_000
    assert sub.stats.high_water == 1_000
    await bus.close()


async def test_high_water_counts_the_deepest_queue_when_received_one_by_one() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick, maxsize=2_000)
    pub = bus.publisher(Tick)
    for n in range(300):
        pub.publish_nowait(Tick(n=n))
    received = [(await sub.recv()).n for _ in range(300)]
    for n in range(5):
        await pub.publish(Tick(n=n))
        await sub.recv()
    assert received == list(range(300))
    assert sub.stats.high_water == 300
    await bus.close()


async def test_high_water_is_one_when_each_message_is_taken_before_the_next() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    pub = bus.publisher(Tick)
    for n in range(1_000):
        await pub.publish(Tick(n=n))
        assert sub.recv_nowait().n == n
    assert sub.stats.delivered == 1_000
    assert sub.stats.high_water == 1
    await bus.close()
