"""NatsTransport against real servers: core fan-out, JetStream durability, fuzz, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from helpers_fuzz import accounted, on_a_new_loop, throw_storm
from peers.harness import NatsServer, free_port, until
from peers.inlet import ListInlet
from peers.messages import Fill, Quote, Tick, tick

from mycelium_mono.bus import MessageBus
from mycelium_mono.bus.transports.nats import NatsTransport
from mycelium_mono.bus.transports.wire import Outbound

pytest_plugins = ["conftest_distributed"]
pytestmark = pytest.mark.network


async def started(url: str, got: list[Any] | None = None, **options: Any) -> NatsTransport:
    t = NatsTransport(url, **options)
    await t.start(ListInlet(got))
    return t


async def publish_ticks(t: NatsTransport, seqs: range) -> None:
    """``await publish`` a Tick for each of ``seqs``, then flush: all of them reach the server."""
    for seq in seqs:
        await t.publish(tick(seq))
    await t.flush()


@pytest.fixture
async def core_pair(
    shared_nats: str,
) -> AsyncIterator[tuple[NatsTransport, NatsTransport, list[Any]]]:
    got: list[Any] = []
    pub = await started(shared_nats)
    sub = await started(shared_nats, got)
    sub.subscribe(Tick)
    await sub.ready()
    try:
        yield pub, sub, got
    finally:
        await pub.close()
        await sub.close()


async def test_core_messages_arrive_in_order(core_pair: Any) -> None:
    pub, sub, got = core_pair
    for seq in range(1, 2001):
        await pub.publish(tick(seq))
    await until(lambda: len(got) == 2000)
    assert [m.seq for m in got] == list(range(1, 2001))
    assert sub.stats.received == 2000 and sub.stats.sequence_gaps == 0


async def test_core_does_not_echo_a_process_its_own_messages(core_pair: Any) -> None:
    pub, sub, got = core_pair
    own: list[Any] = []
    pub._inlet = ListInlet(own)
    pub.subscribe(Tick)
    await pub.ready()
    await sub.publish(tick(1))  # from the other side: pub must get this one
    await pub.publish(tick(2))
    await until(lambda: len(own) == 1 and len(got) == 1)
    assert own == [tick(1)] and got == [tick(2)]


async def test_publish_nowait_keeps_order_with_publish(core_pair: Any) -> None:
    pub, _, got = core_pair
    pub.publish_nowait(tick(1))
    pub.publish_nowait(tick(2))
    await pub.publish(tick(3))
    await pub.flush()
    await until(lambda: len(got) == 3)
    assert [m.seq for m in got] == [1, 2, 3]


async def test_an_unreachable_server_fails_with_how_to_start_one() -> None:
    t = NatsTransport(f"nats://127.0.0.1:{free_port()}", connect_timeout_s=1)
    with pytest.raises(ConnectionError, match=r"start-stop-daemon[\s\S]*nats-server"):
        await t.start(ListInlet())


async def test_message_bus_with_nats_carries_messages_between_buses(shared_nats: str) -> None:
    left = MessageBus.with_nats(shared_nats)
    right = MessageBus.with_nats(shared_nats)
    async with left, right:
        inbox = right.subscribe(Quote)
        await right.ready()
        await left.publisher(Quote).publish(Quote(seq=1, price=2.5))
        assert await asyncio.wait_for(inbox.recv(), 10) == Quote(seq=1, price=2.5)


async def test_core_slow_consumer_loses_messages_and_counts_them(shared_nats: str) -> None:
    got: list[Any] = []
    pub = await started(shared_nats)
    sub = await started(shared_nats, got, pending_limit=100)
    try:
        sub.subscribe(Tick)
        await sub.ready()
        # No await between publishes, and the flush lands 5000 messages at once on a
        # subscriber whose client buffer holds 100.
        for seq in range(1, 5001):
            pub.publish_nowait(tick(seq))
        await pub.flush()
        # The tail of the burst may be lost too: send more until one arrives, so the loss
        # inside the burst shows as a gap before it.
        seq = 5000
        while not got or got[-1].seq <= 5000:
            seq += 1
            await pub.publish(tick(seq))
            await asyncio.sleep(0.02)  # bounded by the assert below; not a timing assertion
            assert seq < 5500, "nothing after the burst arrived"
        assert sub.stats.dropped_overflow > 0
        seqs = [m.seq for m in got]
        assert seqs == sorted(seqs)
        assert sub.stats.extra["messages_missed"] == seqs[-1] - len(seqs) > 0
    finally:
        await pub.close()
        await sub.close()


async def test_a_subscriber_nobody_reads_holds_a_bounded_buffer_and_closes_at_once(
    shared_nats: str,
) -> None:
    """200,000 ticks at a bus whose one subscription (maxsize 16) is never read. The client
    buffers at most ``pending_limit`` of them and drops the rest, counted: with nats-py's
    default (524,288) it held all of them, 64 MiB of Python objects here; the default now
    holds 65,536. And close() returns at once: the callback waiting for room in the closed
    subscription used to hold drain() for its whole 5 s timeout."""
    import tracemalloc

    from mycelium_mono.bus.transports.nats import DEFAULT_PENDING_LIMIT

    count = 200_000
    bus = MessageBus.with_nats(shared_nats)
    bus.subscribe(Tick, maxsize=16)
    await bus.start()
    await bus.ready()
    pub = await started(shared_nats)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(1, count + 1):
            pub.publish_nowait(tick(seq))
            if seq % 10_000 == 0:
                await pub.flush()
        await pub.flush()
        stats = bus.transport.stats
        await until(lambda: stats.dropped_overflow + DEFAULT_PENDING_LIMIT + 17 >= count,
                    timeout=60)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        await pub.close()
    assert held < 40 * 2**20, f"{held / 2**20:.1f} MiB held for a subscription nobody reads"
    assert count - DEFAULT_PENDING_LIMIT - 100 <= stats.dropped_overflow, stats
    loop = asyncio.get_running_loop()
    began = loop.time()
    await bus.close()
    assert loop.time() - began < 2.0, "close() sat out drain's timeout"


# -- JetStream (a private server per test: streams, restarts) -------------------------------


async def test_jetstream_creates_the_stream_with_one_subject_per_topic(
    nats_server: NatsServer, stream_name: str
) -> None:
    t = await started(nats_server.url, jetstream=True, stream=stream_name)
    try:
        await t.publish(tick(1))
        await t.publish(Quote(seq=1, price=1.0))
        await t.flush()
        nc = await nats.connect(nats_server.url)
        info = await nc.jetstream().stream_info(stream_name)
        await nc.close()
        assert sorted(info.config.subjects or []) == ["dist_chain.*", "dist_test.*"]
        assert info.state.messages == 2
    finally:
        await t.close()


async def test_jetstream_durable_consumer_gets_what_it_missed_after_a_restart(
    nats_server: NatsServer, stream_name: str
) -> None:
    options = {"jetstream": True, "stream": stream_name, "durable": "audit"}
    pub = await started(nats_server.url, **options)
    first: list[Any] = []
    sub = await started(nats_server.url, first, **options)
    sub.subscribe(Tick)
    await sub.ready()
    await publish_ticks(pub, range(1, 101))
    await until(lambda: len(first) == 100)
    await sub.close()
    await publish_ticks(pub, range(101, 201))  # published while the consumer is down
    second: list[Any] = []
    sub = await started(nats_server.url, second, **options)
    try:
        sub.subscribe(Tick)
        await sub.ready()
        await until(lambda: len(second) == 100)
        assert [m.seq for m in second] == list(range(101, 201))
    finally:
        await sub.close()
        await pub.close()


async def test_jetstream_delivers_a_process_its_own_messages_from_the_stream(
    nats_server: NatsServer, stream_name: str
) -> None:
    # The stored copy is the one delivered (and acknowledged once handled): the bus does not
    # deliver its own publishes locally as well, so a crash cannot lose them in memory.
    own: list[Any] = []
    t = await started(nats_server.url, own, jetstream=True, stream=stream_name, durable="self")
    other = await started(nats_server.url, jetstream=True, stream=stream_name)
    try:
        assert t.delivers_own_messages and not NatsTransport(nats_server.url).delivers_own_messages
        t.subscribe(Fill)
        await t.ready()
        await t.publish(Fill(seq=1, qty=1))
        await other.publish(Fill(seq=1, qty=2))
        await t.flush()
        await other.flush()
        await until(lambda: len(own) == 2)
        assert sorted(own, key=lambda f: f.qty) == [Fill(seq=1, qty=1), Fill(seq=1, qty=2)]
    finally:
        await t.close()
        await other.close()


async def test_a_jetstream_bus_hands_each_subscriber_its_own_publish_once(
    nats_server: NatsServer, stream_name: str
) -> None:
    bus = MessageBus.with_nats(nats_server.url, jetstream=True, stream=stream_name,
                               durable="own-once")
    try:
        sub = bus.subscribe(Fill)
        await bus.start()
        pub = bus.publisher(Fill)
        for n in range(1, 51):
            await pub.publish(Fill(seq=n, qty=n))
        got: list[int] = []
        async with asyncio.timeout(20):
            while len(got) < 50:
                got.append((await sub.recv()).seq)
        await asyncio.sleep(0.3)  # a second copy would arrive now
        assert got == list(range(1, 51)) and len(sub) == 0
        assert bus.stats.no_local_subscriber == 0
    finally:
        await bus.close()


async def test_jetstream_survives_a_server_restart_without_losing_messages(
    nats_server: NatsServer, stream_name: str
) -> None:
    options = {"jetstream": True, "stream": stream_name, "durable": "restart"}
    got: list[Any] = []
    pub = await started(nats_server.url, **options)
    sub = await started(nats_server.url, got, **options)
    try:
        sub.subscribe(Tick)
        await sub.ready()
        await publish_ticks(pub, range(1, 501))
        nats_server.kill()
        nats_server.start()  # same port, same store directory
        await until(lambda: pub._nc is not None and pub._nc.is_connected, timeout=20)
        await publish_ticks(pub, range(501, 1001))
        await until(lambda: len({m.seq for m in got}) == 1000, timeout=30)
        assert sorted({m.seq for m in got}) == list(range(1, 1001))
    finally:
        await pub.close()
        await sub.close()


# -- fuzz: payloads published straight onto the subscribed subject ---------------------------


class LiveSubject:
    """A raw NATS client (the attacker) and a started NatsTransport subscribed to Tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.loop = loop
        self.url = url
        self.got: list[Any] = []
        self.t = NatsTransport(url)
        loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.raw = await nats.connect(self.url)
        await self.t.start(ListInlet(self.got))
        self.t.subscribe(Tick)
        await self.t.ready()

    def throw(self, payloads: list[bytes]) -> None:
        async def go() -> None:
            before = accounted(self.t.stats)
            for payload in payloads:
                await self.raw.publish("dist_test.4001", payload)
            await self.raw.flush()
            await until(lambda: accounted(self.t.stats) == before + len(payloads))

        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.t.close())
        self.loop.run_until_complete(self.raw.close())


@pytest.fixture
def live_subject(shared_nats: str) -> Iterator[LiveSubject]:
    yield from on_a_new_loop(lambda loop: LiveSubject(loop, shared_nats))


def test_fuzzed_payloads_are_all_accounted_for_and_delivery_continues(
    live_subject: LiveSubject,
) -> None:
    target = live_subject
    out = Outbound()
    valid = [out.body(tick(i)) for i in range(1, 50)]
    throw_storm(target.throw, valid, max_examples=40)
    assert target.t.stats.dropped_malformed > 0
    target.got.clear()
    target.throw([Outbound().body(tick(10**6))])
    assert target.got == [tick(10**6)]
