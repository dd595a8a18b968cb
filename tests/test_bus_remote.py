"""The bus over real transports: what one bus publishes, a peer bus's subscribers receive.

The transports themselves are tested in their own suites; these check the bus's side of the
contract (start, subscribe, ready, deliver, close) against the real engines on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from mycelium_mono import U64, MessageBus, message


@message(type_id=5071, topic="bus_remote_test")
class Reading:
    seq: U64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require_nats() -> None:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as exc:
        pytest.fail(
            f"NATS is not reachable at 127.0.0.1:4222 ({exc})\n"
            "help: start it with `nats-server -js -a 127.0.0.1 -p 4222 &`"
        )


@pytest.mark.network
async def test_over_zeromq_a_peer_receives_everything_in_order() -> None:
    producer_address = f"127.0.0.1:{_free_port()}"
    producer = MessageBus.with_tcp(producer_address)
    consumer = MessageBus.with_tcp(f"127.0.0.1:{_free_port()}")
    try:
        sub = consumer.subscribe(Reading)
        await producer.start()
        await consumer.connect_to(producer_address)
        await consumer.ready()
        pub = producer.publisher(Reading)
        for i in range(500):
            await pub.publish(Reading(seq=i))
        got = [(await asyncio.wait_for(sub.recv(), 10)).seq for _ in range(500)]
    finally:
        await producer.close()
        await consumer.close()
    assert got == list(range(500))
    assert consumer.stats.received_remote == 500
    assert producer.stats.no_local_subscriber == 500


@pytest.mark.network
async def test_over_nats_a_peer_receives_everything_in_order() -> None:
    _require_nats()
    producer = MessageBus.with_nats("nats://127.0.0.1:4222")
    consumer = MessageBus.with_nats("nats://127.0.0.1:4222")
    try:
        sub = consumer.subscribe(Reading)
        await consumer.ready()
        pub = producer.publisher(Reading)
        for i in range(500):
            await pub.publish(Reading(seq=i))
        got = [(await asyncio.wait_for(sub.recv(), 10)).seq for _ in range(500)]
    finally:
        await producer.close()
        await consumer.close()
    assert got == list(range(500))
    assert consumer.stats.received_remote == 500


@pytest.mark.network
async def test_local_and_remote_subscribers_both_receive() -> None:
    producer_address = f"127.0.0.1:{_free_port()}"
    producer = MessageBus.with_tcp(producer_address)
    consumer = MessageBus.with_tcp(f"127.0.0.1:{_free_port()}")
    try:
        local = producer.subscribe(Reading)
        remote = consumer.subscribe(Reading)
        await producer.start()
        await consumer.connect_to(producer_address)
        await consumer.ready()
        await producer.publisher(Reading).publish(Reading(seq=7))
        assert (await asyncio.wait_for(remote.recv(), 10)).seq == 7
        assert local.recv_nowait().seq == 7
    finally:
        await producer.close()
        await consumer.close()
