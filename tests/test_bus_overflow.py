"""Overflow policies: every subscription says what happens when it is full, and counts it."""

from __future__ import annotations

import asyncio

import pytest

from mycelium_mono import U64, MessageBus, QueueOverflowError, message
from mycelium_mono.bus import QueueFullError


@message(type_id=5011, topic="bus_overflow_test")
class Level:
    n: U64


async def test_drop_oldest_keeps_the_newest_and_counts_every_drop() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=3, policy="drop_oldest")
    pub = bus.publisher(Level)
    for i in range(10):
        await pub.publish(Level(n=i))
    assert [m.n for m in sub.drain()] == [7, 8, 9]
    assert sub.stats.dropped == 7
    assert bus.stats.dropped == 7


async def test_drop_oldest_applies_to_publish_nowait_too() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=2, policy="drop_oldest")
    pub = bus.publisher(Level)
    for i in range(5):
        pub.publish_nowait(Level(n=i))
    assert [m.n for m in sub.drain()] == [3, 4]
    assert sub.stats.dropped == 3


async def test_raise_refuses_with_a_clear_error_and_counts_the_refusal() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=2, policy="raise")
    pub = bus.publisher(Level)
    await pub.publish(Level(n=0))
    await pub.publish(Level(n=1))
    with pytest.raises(QueueOverflowError, match="maxsize=2") as info:
        await pub.publish(Level(n=2))
    assert "help:" in str(info.value)
    assert info.value.subscribers == [sub]
    with pytest.raises(QueueOverflowError):
        pub.publish_nowait(Level(n=3))
    assert [m.n for m in sub.drain()] == [0, 1]
    assert sub.stats.rejected == 2
    assert bus.stats.rejected == 2


async def test_raise_on_one_subscriber_still_delivers_to_the_others() -> None:
    bus = MessageBus()
    strict = bus.subscribe(Level, maxsize=1, policy="raise")
    roomy = bus.subscribe(Level, maxsize=10, policy="raise")
    pub = bus.publisher(Level)
    await pub.publish(Level(n=0))
    with pytest.raises(QueueOverflowError):
        await pub.publish(Level(n=1))
    assert [m.n for m in strict.drain()] == [0]
    assert [m.n for m in roomy.drain()] == [0, 1]


async def test_block_makes_the_publisher_wait_until_the_consumer_makes_room() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=2, policy="block")
    pub = bus.publisher(Level)
    await pub.publish(Level(n=0))
    await pub.publish(Level(n=1))
    third = asyncio.create_task(pub.publish(Level(n=2)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done(), "publisher should be blocked on a full 'block' subscriber"
    assert len(sub) == 2
    assert (await sub.recv()).n == 0
    await asyncio.wait_for(third, 5)
    assert [m.n for m in sub.drain()] == [1, 2]
    assert sub.stats.blocked == 1
    assert sub.stats.dropped == 0


async def test_block_never_loses_a_message_with_a_slow_consumer() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=8, policy="block")
    pub = bus.publisher(Level)
    received: list[int] = []

    async def slow_consumer() -> None:
        async for m in sub:
            received.append(m.n)
            if m.n % 5 == 0:
                await asyncio.sleep(0)

    consumer = asyncio.create_task(slow_consumer())
    for i in range(2000):
        await pub.publish(Level(n=i))
    sub.close()
    await asyncio.wait_for(consumer, 10)
    assert received == list(range(2000))
    assert sub.stats.high_water <= 8


async def test_block_publisher_is_released_when_the_subscriber_closes() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=1, policy="block")
    pub = bus.publisher(Level)
    await pub.publish(Level(n=0))
    blocked = asyncio.create_task(pub.publish(Level(n=1)))
    await asyncio.sleep(0)
    sub.close()
    await asyncio.wait_for(blocked, 5)
    assert [m.n for m in sub.drain()] == [0]


async def test_publish_nowait_on_a_full_block_subscriber_raises_queue_full() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=2, policy="block")
    pub = bus.publisher(Level)
    pub.publish_nowait(Level(n=0))
    pub.publish_nowait(Level(n=1))
    with pytest.raises(QueueFullError, match=r"(?s)full.*wait_for_space") as info:
        pub.publish_nowait(Level(n=2))
    assert isinstance(info.value, asyncio.QueueFull)
    assert [m.n for m in sub.drain()] == [0, 1]
    assert bus.stats.published == 2


async def test_queue_full_is_all_or_nothing_across_subscribers() -> None:
    bus = MessageBus()
    roomy = bus.subscribe(Level, maxsize=10, policy="block")
    full = bus.subscribe(Level, maxsize=1, policy="block")
    pub = bus.publisher(Level)
    pub.publish_nowait(Level(n=0))
    with pytest.raises(QueueFullError) as info:
        pub.publish_nowait(Level(n=1))
    assert info.value.subscribers == [full]
    assert [m.n for m in roomy.drain()] == [0], "the refused message reached one subscriber"
    assert [m.n for m in full.drain()] == [0]


async def test_wait_for_space_after_queue_full_lets_the_same_message_in() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=2, policy="block")
    pub = bus.publisher(Level)
    for i in range(2):
        pub.publish_nowait(Level(n=i))
    with pytest.raises(QueueFullError):
        pub.publish_nowait(Level(n=2))
    waiter = asyncio.create_task(pub.wait_for_space())
    await asyncio.sleep(0)
    assert not waiter.done()
    sub.recv_nowait()
    await asyncio.wait_for(waiter, 5)
    pub.publish_nowait(Level(n=2))
    assert [m.n for m in sub.drain()] == [1, 2]


async def test_drops_of_a_closed_subscription_stay_in_the_bus_totals() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Level, maxsize=1, policy="drop_oldest")
    pub = bus.publisher(Level)
    for i in range(4):
        pub.publish_nowait(Level(n=i))
    sub.close()
    assert bus.stats.dropped == 3
    assert bus.stats.subscribers == 0
