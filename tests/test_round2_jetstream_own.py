"""Round 2 attacks on a JetStream bus delivering its own publishes from the stream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from peers.harness import NatsServer
from peers.messages import Fill

from mycelium_mono.bus import MessageBus

pytest_plugins = ["conftest_distributed"]
pytestmark = pytest.mark.network


async def drain(sub: Any, n: int, timeout: float = 20.0) -> list[int]:
    got: list[int] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.append((await sub.recv()).seq)
    return got


@pytest.mark.parametrize("durable", [None, "late"])
async def test_a_subscription_made_on_a_started_bus_gets_the_next_publish(
    nats_server: NatsServer, stream_name: str, durable: str | None
) -> None:
    # subscribe() is sync; its JetStream consumer is created in the background. A publish
    # right after it used to reach the subscriber in memory; from the stream it must too.
    bus = MessageBus.with_nats(nats_server.url, jetstream=True, stream=stream_name,
                               durable=durable)  # fmt: skip
    try:
        await bus.start()
        sub = bus.subscribe(Fill)
        pub = bus.publisher(Fill)
        for n in range(1, 4):
            await pub.publish(Fill(seq=n, qty=n))
        assert await drain(sub, 3, timeout=10) == [1, 2, 3]
    finally:
        await bus.close()


async def test_a_subscription_made_on_a_started_bus_gets_the_next_publish_nowait(
    nats_server: NatsServer, stream_name: str
) -> None:
    bus = MessageBus.with_nats(nats_server.url, jetstream=True, stream=stream_name)
    try:
        await bus.start()
        sub = bus.subscribe(Fill)
        pub = bus.publisher(Fill)
        for n in range(1, 4):
            pub.publish_nowait(Fill(seq=n, qty=n))
        assert await drain(sub, 3, timeout=10) == [1, 2, 3]
    finally:
        await bus.close()


@pytest.mark.parametrize("durable", [None, "many"])
async def test_several_subscribers_of_an_own_type_each_get_each_message_once(
    nats_server: NatsServer, stream_name: str, durable: str | None
) -> None:
    count = 200
    bus = MessageBus.with_nats(nats_server.url, jetstream=True, stream=stream_name,
                               durable=durable, ack_wait_s=1.0)  # fmt: skip
    try:
        plain = bus.subscribe(Fill)
        small = bus.subscribe(Fill, maxsize=2, policy="block")
        lossy = bus.subscribe(Fill, maxsize=3, policy="drop_oldest")
        await bus.start()
        pub = bus.publisher(Fill)
        small_got: list[int] = []

        async def slow() -> None:
            while len(small_got) < count:
                small_got.append((await small.recv()).seq)
                await asyncio.sleep(0.001)

        reader = asyncio.ensure_future(slow())
        for n in range(1, count + 1):
            if n % 2:
                await pub.publish(Fill(seq=n, qty=n))
            else:
                while True:
                    try:
                        pub.publish_nowait(Fill(seq=n, qty=n))
                        break
                    except Exception:  # the transport's outbox full: wait, then again
                        await asyncio.sleep(0.01)
        assert await drain(plain, count) == list(range(1, count + 1))
        await asyncio.wait_for(reader, 30)
        assert small_got == list(range(1, count + 1))
        assert len(small) <= 2
        await asyncio.sleep(0.5)  # a second copy of anything would arrive now
        assert len(plain) == 0 and len(small) == 0
        rest = []
        while len(lossy):
            rest.append(lossy.recv_nowait().seq)
        # drop_oldest kept the newest ones, in order, within its bound, no repeats
        assert rest == sorted(set(rest)) and len(rest) <= 3 and rest[-1] == count
        # every message reached it once: delivered to the queue, then kept or dropped
        assert lossy.stats.delivered + lossy.stats.dropped == count
        assert lossy.stats.dropped == count - len(rest)
        for sub in (plain, small, lossy):
            sub.ack()  # "auto" acks a message when the next is asked for: the last ones now
        await asyncio.sleep(1.5)  # past ack_wait: anything left unsettled is redelivered
        assert len(plain) == 0 and len(small) == 0 and len(lossy) == 0
        assert bus.transport.stats.extra.get("redelivered", 0) == 0
        assert bus.stats.no_local_subscriber == 0
    finally:
        await bus.close()


async def test_a_type_published_and_not_subscribed_is_not_fetched_back(
    nats_server: NatsServer, stream_name: str
) -> None:
    bus = MessageBus.with_nats(nats_server.url, jetstream=True, stream=stream_name)
    try:
        await bus.start()
        pub = bus.publisher(Fill)
        for n in range(1, 21):
            await pub.publish(Fill(seq=n, qty=n))
        await bus.transport.flush()  # type: ignore[attr-defined]
        assert bus.stats.no_local_subscriber == 20
        assert bus.transport.stats.received == 0
        assert bus.transport.consumers == []  # type: ignore[attr-defined]
    finally:
        await bus.close()


async def test_wait_for_space_waits_for_a_full_transport_send_queue(
    nats_server: NatsServer, stream_name: str
) -> None:
    # QueueFullError's help: "await publisher.wait_for_space() before publish_nowait". With
    # the transport's send queue full and no full "block" subscriber (on JetStream an own
    # type has no local one any more), wait_for_space returned at once without yielding:
    # the retry loop spun forever, the sender never ran.
    from mycelium_mono import QueueFullError

    bus = MessageBus.with_nats(nats_server.url, jetstream=True, stream=stream_name,
                               max_in_flight=4)  # fmt: skip
    try:
        sub = bus.subscribe(Fill)
        await bus.start()
        pub = bus.publisher(Fill)
        refusals = 0
        for n in range(1, 101):
            for _attempt in range(1000):  # bounded: a spinning retry fails instead of hanging
                try:
                    pub.publish_nowait(Fill(seq=n, qty=n))
                    break
                except QueueFullError:
                    refusals += 1
                    await pub.wait_for_space()
            else:
                raise AssertionError(f"Fill {n}: still refused after wait_for_space, 1000 times")
        assert refusals > 0  # the send queue did fill up
        assert await drain(sub, 100) == list(range(1, 101))
    finally:
        await bus.close()
