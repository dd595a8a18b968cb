"""The bus over real transports: what one bus publishes, a peer bus's subscribers receive.

The transports themselves are tested in their own suites; these check the bus's side of the
contract (start, subscribe, ready, deliver, close) against the real engines on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from types import TracebackType

import pytest
from peers.harness import free_port

from mycelium_mono import U64, MessageBus, message
from mycelium_mono.bus import Subscriber


@message(type_id=5071, topic="bus_remote_test")
class Reading:
    seq: U64


def _require_nats() -> None:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as exc:
        pytest.fail(
            f"NATS is not reachable at 127.0.0.1:4222 ({exc})\n"
            "help: start it with `nats-server -js -a 127.0.0.1 -p 4222 &`"
        )


class ZeroMQPair:
    """A producer bus and a consumer bus over ZeroMQ on free 127.0.0.1 ports, closed on exit."""

    def __init__(self) -> None:
        self.producer_address = f"127.0.0.1:{free_port()}"
        self.producer = MessageBus.with_tcp(self.producer_address)
        self.consumer = MessageBus.with_tcp(f"127.0.0.1:{free_port()}")

    async def link(self) -> None:
        """Start the producer, connect the consumer to it, wait until its subscriptions hold."""
        await self.producer.start()
        await self.consumer.connect_to(self.producer_address)
        await self.consumer.ready()

    async def __aenter__(self) -> ZeroMQPair:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.producer.close()
        await self.consumer.close()


async def publish_and_receive(producer: MessageBus, sub: Subscriber[Reading]) -> Sequence[int]:
    """Publish ``Reading(seq=0..499)`` on ``producer``; the seqs ``sub`` receives, in order."""
    pub = producer.publisher(Reading)
    for i in range(500):
        await pub.publish(Reading(seq=i))
    return [(await asyncio.wait_for(sub.recv(), 10)).seq for _ in range(500)]


@pytest.mark.network
async def test_over_zeromq_a_peer_receives_everything_in_order() -> None:
    async with ZeroMQPair() as pair:
        sub = pair.consumer.subscribe(Reading)
        await pair.link()
        got = await publish_and_receive(pair.producer, sub)
    assert got == list(range(500))
    assert pair.consumer.stats.received_remote == 500
    assert pair.producer.stats.no_local_subscriber == 500


@pytest.mark.network
async def test_over_nats_a_peer_receives_everything_in_order() -> None:
    _require_nats()
    producer = MessageBus.with_nats("nats://127.0.0.1:4222")
    consumer = MessageBus.with_nats("nats://127.0.0.1:4222")
    try:
        sub = consumer.subscribe(Reading)
        await consumer.ready()
        got = await publish_and_receive(producer, sub)
    finally:
        await producer.close()
        await consumer.close()
    assert got == list(range(500))
    assert consumer.stats.received_remote == 500


@pytest.mark.network
async def test_local_and_remote_subscribers_both_receive() -> None:
    async with ZeroMQPair() as pair:
        local = pair.producer.subscribe(Reading)
        remote = pair.consumer.subscribe(Reading)
        await pair.link()
        await pair.producer.publisher(Reading).publish(Reading(seq=7))
        assert (await asyncio.wait_for(remote.recv(), 10)).seq == 7
        assert local.recv_nowait().seq == 7


@pytest.mark.network
async def test_over_zeromq_a_producer_waits_for_its_peer_subscriber() -> None:
    async with ZeroMQPair() as pair:
        await pair.producer.start()
        waiting = asyncio.create_task(pair.producer.wait_for_subscribers(1, Reading, timeout=10))
        await asyncio.sleep(0.05)
        assert not waiting.done(), "no peer has subscribed yet"
        sub = pair.consumer.subscribe(Reading)
        await pair.consumer.connect_to(pair.producer_address)
        await asyncio.wait_for(waiting, 15)
        # The wait is what makes the first message safe to publish: ZeroMQ would drop it
        # for a subscriber whose subscription has not reached the publisher yet.
        await pair.producer.publisher(Reading).publish(Reading(seq=1))
        assert (await asyncio.wait_for(sub.recv(), 10)).seq == 1


@pytest.mark.network
async def test_over_zeromq_waiting_for_absent_subscribers_times_out_with_a_count() -> None:
    async with ZeroMQPair() as pair:
        with pytest.raises(TimeoutError, match="0 of 1 subscribers to Reading"):
            await pair.producer.wait_for_subscribers(1, Reading, timeout=0.2)


@pytest.mark.network
async def test_over_nats_waiting_for_subscribers_is_refused_with_what_to_use() -> None:
    _require_nats()
    bus = MessageBus.with_nats("nats://127.0.0.1:4222")
    try:
        with pytest.raises(NotImplementedError, match="jetstream=True"):
            await bus.wait_for_subscribers(1, Reading, timeout=1)
    finally:
        await bus.close()
