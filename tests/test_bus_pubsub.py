"""MessageBus in one process: fan-out, order, consuming styles, closing, counters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mycelium_mono import U32, U64, MessageBus, SubscriptionClosed, message
from mycelium_mono.bus import BusClosedError
from mycelium_mono.bus.transports.base import Inlet, Transport, TransportStats


@message(type_id=5001, topic="bus_test")
class Tick:
    seq: U64


@message(type_id=5002, topic="bus_test")
class Tock:
    seq: U32


async def test_every_subscriber_of_a_type_gets_every_message_in_order() -> None:
    bus = MessageBus()
    subs = [bus.subscribe(Tick) for _ in range(3)]
    pub = bus.publisher(Tick)
    for i in range(100):
        await pub.publish(Tick(seq=i))
    for sub in subs:
        assert [m.seq for m in sub.drain()] == list(range(100))


async def test_subscribers_of_another_type_receive_nothing() -> None:
    bus = MessageBus()
    ticks, tocks = bus.subscribe(Tick), bus.subscribe(Tock)
    await bus.publisher(Tick).publish(Tick(seq=1))
    assert len(ticks) == 1
    assert len(tocks) == 0


async def test_publishing_with_no_subscriber_is_counted_not_an_error() -> None:
    bus = MessageBus()
    pub = bus.publisher(Tick)
    await pub.publish(Tick(seq=1))
    pub.publish_nowait(Tick(seq=2))
    assert bus.stats.published == 2
    assert bus.stats.no_local_subscriber == 2


async def test_a_subscriber_added_after_the_publisher_still_receives() -> None:
    bus = MessageBus()
    pub = bus.publisher(Tick)
    sub = bus.subscribe(Tick)
    pub.publish_nowait(Tick(seq=7))
    assert (await sub.recv()).seq == 7


async def test_a_producer_can_wait_until_its_consumers_have_subscribed() -> None:
    bus = MessageBus()
    waiting = asyncio.create_task(bus.wait_for_subscribers(2, Tick, timeout=5))
    await asyncio.sleep(0)
    bus.subscribe(Tock)  # another type does not count
    bus.subscribe(Tick)
    await asyncio.sleep(0)
    assert not waiting.done()
    bus.subscribe(Tick)
    await asyncio.wait_for(waiting, 1)
    await bus.wait_for_subscribers(2, Tick)  # already there: returns at once


async def test_waiting_for_subscribers_that_never_come_says_how_many_did() -> None:
    bus = MessageBus()
    bus.subscribe(Tick)
    with pytest.raises(TimeoutError, match="1 of 3 subscribers to Tick") as caught:
        await bus.wait_for_subscribers(3, Tick, timeout=0.05)
    assert "help:" in str(caught.value)


async def test_closing_the_bus_ends_a_wait_for_subscribers() -> None:
    bus = MessageBus()
    waiting = asyncio.create_task(bus.wait_for_subscribers(1, Tick, timeout=5))
    await asyncio.sleep(0)
    await bus.close()
    with pytest.raises(BusClosedError, match="closed while waiting"):
        await asyncio.wait_for(waiting, 1)


async def test_recv_waits_until_a_message_is_published() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    receiver = asyncio.create_task(sub.recv())
    await asyncio.sleep(0)
    assert not receiver.done()
    await bus.publisher(Tick).publish(Tick(seq=42))
    assert (await asyncio.wait_for(receiver, 5)).seq == 42


async def test_recv_batch_returns_everything_queued_after_one_wake_up() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    batch_task = asyncio.create_task(sub.recv_batch())
    await asyncio.sleep(0)
    pub = bus.publisher(Tick)
    for i in range(5):
        pub.publish_nowait(Tick(seq=i))
    batch = await asyncio.wait_for(batch_task, 5)
    assert [m.seq for m in batch] == [0, 1, 2, 3, 4]


async def test_async_for_ends_after_close_once_the_queue_is_drained() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    pub = bus.publisher(Tick)
    for i in range(3):
        pub.publish_nowait(Tick(seq=i))
    sub.close()
    pub.publish_nowait(Tick(seq=99))  # after close: not queued for this subscriber
    received = [m.seq async for m in sub]
    assert received == [0, 1, 2]


async def test_close_wakes_a_consumer_parked_in_async_for() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)

    async def consume() -> list[int]:
        return [m.seq async for m in sub]

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    bus.publisher(Tick).publish_nowait(Tick(seq=1))
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(consumer, 5) == [1]


async def test_recv_on_a_closed_drained_subscription_raises_with_help() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    sub.close()
    with pytest.raises(SubscriptionClosed, match="async for"):
        await sub.recv()


async def test_recv_nowait_raises_queue_empty_when_nothing_is_queued() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    with pytest.raises(asyncio.QueueEmpty):
        sub.recv_nowait()
    bus.publisher(Tick).publish_nowait(Tick(seq=3))
    assert sub.recv_nowait().seq == 3


async def test_one_queue_for_several_types_keeps_publish_order() -> None:
    bus = MessageBus()
    sub = bus.subscribe_many([Tick, Tock])
    ticks, tocks = bus.publisher(Tick), bus.publisher(Tock)
    ticks.publish_nowait(Tick(seq=1))
    tocks.publish_nowait(Tock(seq=2))
    ticks.publish_nowait(Tick(seq=3))
    assert [(type(m).__name__, m.seq) for m in sub.drain()] == [
        ("Tick", 1),
        ("Tock", 2),
        ("Tick", 3),
    ]


async def test_a_publisher_refuses_a_message_of_another_type() -> None:
    bus = MessageBus()
    with pytest.raises(TypeError, match=r"bus.publisher\(Tock\)"):
        await bus.publisher(Tick).publish(Tock(seq=1))  # type: ignore[arg-type]


async def test_unknown_policy_and_bad_maxsize_are_refused_at_subscribe() -> None:
    bus = MessageBus()
    with pytest.raises(ValueError, match="drop_oldest"):
        bus.subscribe(Tick, policy="drop_newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        bus.subscribe(Tick, maxsize=0)


async def test_closed_bus_closes_subscriptions_and_refuses_awaiting_publish() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    pub = bus.publisher(Tick)
    await pub.publish(Tick(seq=1))
    await bus.close()
    assert sub.closed
    assert [m.seq async for m in sub] == [1]
    with pytest.raises(BusClosedError):
        await pub.publish(Tick(seq=2))
    with pytest.raises(BusClosedError):  # not counted as published to nobody
        pub.publish_nowait(Tick(seq=3))
    assert bus.stats.published == 1


async def test_async_with_starts_and_closes_the_bus() -> None:
    async with MessageBus() as bus:
        sub = bus.subscribe(Tick)
        await bus.publisher(Tick).publish(Tick(seq=5))
    assert sub.closed
    assert (await sub.recv()).seq == 5


async def test_delivered_counts_what_consumers_took() -> None:
    bus = MessageBus()
    sub = bus.subscribe(Tick)
    pub = bus.publisher(Tick)
    for i in range(4):
        pub.publish_nowait(Tick(seq=i))
    await sub.recv()
    sub.recv_nowait()
    assert sub.stats.delivered == 2
    assert sub.stats.queued == 2
    assert bus.stats.delivered == 2


class LoopbackTransport(Transport):
    """A real (if trivial) transport: remembers what it sent, delivers what a peer sends."""

    def __init__(self) -> None:
        self.stats = TransportStats()
        self.sent: list[Any] = []
        self.interests: list[type[Any]] = []
        self.inlet: Inlet | None = None
        self.started = 0
        self.closed = 0

    async def start(self, inlet: Inlet) -> None:
        self.started += 1
        self.inlet = inlet

    async def publish(self, msg: Any) -> None:
        self.sent.append(msg)

    def publish_nowait(self, msg: Any) -> None:
        self.sent.append(msg)

    def subscribe(self, message_type: type[Any]) -> None:
        self.interests.append(message_type)

    async def close(self) -> None:
        self.closed += 1


async def test_published_messages_go_to_the_transport_and_received_ones_fan_out() -> None:
    transport = LoopbackTransport()
    bus = MessageBus(transport)
    sub = bus.subscribe(Tick)
    assert transport.interests == [Tick]
    await bus.publisher(Tick).publish(Tick(seq=1))
    assert transport.started == 1
    assert [m.seq for m in transport.sent] == [1]
    assert transport.inlet is not None
    assert transport.inlet.offer(Tick(seq=2))  # as if a peer had published it
    assert [m.seq for m in sub.drain()] == [1, 2]
    assert bus.stats.received_remote == 1
    await bus.close()
    assert transport.closed == 1


async def test_start_is_idempotent_and_lazy() -> None:
    transport = LoopbackTransport()
    bus = MessageBus(transport)
    assert transport.started == 0
    await asyncio.gather(bus.start(), bus.start(), bus.start())
    await bus.publisher(Tick).publish(Tick(seq=1))
    assert transport.started == 1


async def test_publish_nowait_before_a_remote_transport_started_says_how_to_fix() -> None:
    bus = MessageBus(LoopbackTransport())
    with pytest.raises(RuntimeError, match=r"await bus.start\(\)"):
        bus.publisher(Tick).publish_nowait(Tick(seq=1))
