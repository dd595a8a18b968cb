"""ZmqTransport on real sockets in one process: delivery, handshake, policies, CURVE, fuzz."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import zmq
from helpers_fuzz import accounted, on_a_new_loop, throw_storm
from peers.harness import free_port, until
from peers.inlet import ListInlet
from peers.messages import Fill, Quote, Tick, tick

from mycelium_mono.bus import MessageBus, QueueFullError
from mycelium_mono.bus.transports.wire import HEADER, Outbound, wire_type
from mycelium_mono.bus.transports.zmq import (
    CurveConfig,
    CurveKeyPair,
    ZmqTransport,
    endpoint_of,
)

pytestmark = pytest.mark.network


class Pair:
    """A publishing transport and a subscribing one, connected and acknowledged."""

    def __init__(self, pub: ZmqTransport, sub: ZmqTransport) -> None:
        self.pub, self.sub = pub, sub
        self.got: list[Any] = []


async def connected_pair(**pub_options: Any) -> Pair:
    pub = ZmqTransport("127.0.0.1:0", **pub_options)
    sub = ZmqTransport("127.0.0.1:0")
    pair = Pair(pub, sub)
    await pub.start(ListInlet())
    await sub.start(ListInlet(pair.got))
    sub.subscribe(Tick)
    await sub.connect_to(pub.address)
    await sub.ready()
    return pair


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = await connected_pair()
    try:
        yield p
    finally:
        await p.pub.close()
        await p.sub.close()


async def test_messages_arrive_in_order(pair: Pair) -> None:
    for seq in range(1, 1001):
        await pair.pub.publish(tick(seq))
    await until(lambda: len(pair.got) == 1000)
    assert pair.got == [tick(seq) for seq in range(1, 1001)]
    assert pair.pub.stats.sent == 1000
    assert pair.sub.stats.received == 1000
    assert pair.sub.stats.sequence_gaps == 0


async def test_first_message_after_ready_is_not_lost_to_a_slow_joiner(pair: Pair) -> None:
    # ready() returned only after the publisher acknowledged the subscription: no sleep needed.
    pair.pub.publish_nowait(tick(1))
    await until(lambda: len(pair.got) == 1)
    assert pair.got == [tick(1)]


async def test_unsubscribed_types_are_filtered_by_the_engine(pair: Pair) -> None:
    await pair.pub.publish(Quote(seq=1, price=1.0))
    await pair.pub.publish(tick(1))
    await until(lambda: len(pair.got) == 1)
    assert pair.got == [tick(1)]
    assert pair.sub.stats.dropped_unknown_type == 0


async def test_a_new_subscription_is_acknowledged_again(pair: Pair) -> None:
    pair.sub.subscribe(Fill)
    await pair.sub.ready()
    pair.pub.publish_nowait(Fill(seq=1, qty=3))
    await until(lambda: len(pair.got) == 1)
    assert pair.got == [Fill(seq=1, qty=3)]


async def test_connecting_twice_to_a_peer_is_one_connection(pair: Pair) -> None:
    await pair.sub.connect_to(pair.pub.address)
    await pair.sub.ready(timeout=5)
    assert pair.sub.peers == [pair.pub.address]
    await pair.pub.publish(tick(1))
    await until(lambda: len(pair.got) == 1)
    assert pair.pub.subscriber_count(wire_type(Tick).prefix) == 1


async def test_publisher_can_wait_for_subscribers(pair: Pair) -> None:
    await pair.pub.wait_for_subscribers(1, Tick, timeout=5)
    third = ZmqTransport("127.0.0.1:0")
    await third.start(ListInlet())
    try:
        third.subscribe(Tick)
        await third.connect_to(pair.pub.address)
        await pair.pub.wait_for_subscribers(2, Tick, timeout=5)
        assert pair.pub.subscriber_count(wire_type(Tick).prefix) == 2
    finally:
        await third.close()


async def test_subscriptions_withdrawn_leave_nothing_behind_at_the_publisher() -> None:
    """A peer picks its prefixes freely: 300 made and withdrawn each stayed in the
    publisher's count (at zero) for good, and every subscriber_count() walked them all."""
    pub = ZmqTransport("127.0.0.1:0")
    await pub.start(ListInlet())
    ctx = zmq.Context()
    raw = ctx.socket(zmq.SUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(pub.address)
    try:
        prefixes = [f"churn.{i}\0".encode() for i in range(300)]  # both ways within the SNDHWM
        for prefix in prefixes:
            raw.setsockopt(zmq.SUBSCRIBE, prefix)
        await until(lambda: pub.subscriber_count(prefixes[-1]) == 1)
        for prefix in prefixes:
            raw.setsockopt(zmq.UNSUBSCRIBE, prefix)
        await until(lambda: pub.subscriber_count(prefixes[-1]) == 0)
        assert len(pub._subscriptions) == 0  # type: ignore[attr-defined]
    finally:
        raw.close()
        ctx.term()
        await pub.close()


async def test_ready_names_the_missing_peer_when_nobody_answers() -> None:
    lonely = ZmqTransport("127.0.0.1:0")
    await lonely.start(ListInlet())
    try:
        lonely.subscribe(Tick)
        await lonely.connect_to(f"127.0.0.1:{free_port()}")
        with pytest.raises(TimeoutError, match=r"dist_test\.4001[\s\S]*help:"):
            await lonely.ready(timeout=0.3)
    finally:
        await lonely.close()


def test_public_addresses_are_refused_unless_allowed() -> None:
    with pytest.raises(ValueError, match="allow_public=True"):
        ZmqTransport("0.0.0.0:9000")
    with pytest.raises(ValueError, match="non-loopback"):
        endpoint_of("tcp://10.1.2.3:9000")
    assert endpoint_of("0.0.0.0:9000", allow_public=True) == "tcp://0.0.0.0:9000"
    assert endpoint_of("localhost:1") == "tcp://localhost:1"
    assert endpoint_of("ipc:///tmp/x.ipc") == "ipc:///tmp/x.ipc"


def test_an_address_without_a_port_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="help: write it as"):
        endpoint_of("127.0.0.1")


async def test_ipc_endpoints_work(tmp_path: Any) -> None:
    pub = ZmqTransport(f"ipc://{tmp_path}/pub.ipc")
    sub = ZmqTransport(f"ipc://{tmp_path}/sub.ipc")
    got: list[Any] = []
    await pub.start(ListInlet())
    await sub.start(ListInlet(got))
    try:
        sub.subscribe(Tick)
        await sub.connect_to(pub.address)
        await sub.ready()
        await pub.publish(tick(7))
        await until(lambda: got == [tick(7)])
    finally:
        await pub.close()
        await sub.close()


async def test_binding_a_taken_port_says_what_to_do(pair: Pair) -> None:
    clash = ZmqTransport(pair.pub.address)
    with pytest.raises(OSError, match="help:"):
        await clash.start(ListInlet())
    await clash.close()


async def test_lossless_publish_nowait_queues_at_the_hwm_and_loses_nothing() -> None:
    p = await connected_pair(hwm=10)
    try:
        # No await between sends: the subscriber cannot drain, so the HWM is hit.
        for seq in range(1, 5001):
            p.pub.publish_nowait(tick(seq))
        assert p.pub.stats.extra["hwm_waits"] >= 1
        await until(lambda: len(p.got) == 5000)
        assert p.pub.stats.extra["backlog_peak"] > 0
        assert [m.seq for m in p.got] == list(range(1, 5001))
        assert p.pub.stats.dropped_overflow == 0
    finally:
        await p.pub.close()
        await p.sub.close()


async def test_lossy_drops_at_the_hwm_are_counted_and_the_rest_arrive() -> None:
    p = await connected_pair(hwm=10, lossless=False)
    try:
        for seq in range(1, 5001):
            p.pub.publish_nowait(tick(seq))
        dropped = p.pub.stats.dropped_overflow
        assert dropped > 0
        assert p.pub.stats.sent == 5000 - dropped
        await until(lambda: len(p.got) == 5000 - dropped)
        seqs = [m.seq for m in p.got]
        assert seqs == sorted(seqs)
        # The receiver sees the same loss as gaps between what it got.
        assert p.sub.stats.extra["messages_missed"] == seqs[-1] - len(seqs)
    finally:
        await p.pub.close()
        await p.sub.close()


async def test_a_restarted_publisher_on_the_same_port_is_reconnected_and_new() -> None:
    p = await connected_pair()
    address = p.pub.address
    try:
        await p.pub.publish(tick(1))
        await until(lambda: len(p.got) == 1)
        await p.pub.close()
        reborn = ZmqTransport(address)
        await reborn.start(ListInlet())
        try:
            # ZeroMQ reconnects and re-sends the subscription: no new connect_to.
            await reborn.wait_for_subscribers(1, Tick, timeout=10)
            await reborn.publish(tick(1))
            await until(lambda: len(p.got) == 2)
        finally:
            await reborn.close()
        assert p.sub.stats.extra["publishers_seen"] == 2
        assert p.sub.stats.sequence_gaps == 0
    finally:
        await p.sub.close()


async def curve_peer(keys: CurveKeyPair, server: CurveKeyPair, address: str) -> ZmqTransport:
    peer = ZmqTransport(
        "127.0.0.1:0",
        curve=CurveConfig(keys, frozenset(), {address: server.public}),
        ready_timeout_s=0.5,
    )
    return peer


async def test_curve_lets_listed_clients_in_and_keeps_others_out() -> None:
    server_keys, friend, stranger = (CurveKeyPair.generate() for _ in range(3))
    server = ZmqTransport(
        "127.0.0.1:0", curve=CurveConfig(server_keys, frozenset({friend.public}), {})
    )
    await server.start(ListInlet())
    got_friend: list[Any] = []
    got_stranger: list[Any] = []
    a = await curve_peer(friend, server_keys, server.address)
    b = await curve_peer(stranger, server_keys, server.address)
    try:
        await a.start(ListInlet(got_friend))
        await b.start(ListInlet(got_stranger))
        for peer in (a, b):
            peer.subscribe(Tick)
            await peer.connect_to(server.address)
        await a.ready(timeout=10)
        with pytest.raises(TimeoutError):
            await b.ready(timeout=0.5)
        await server.publish(tick(1))
        await until(lambda: got_friend == [tick(1)])
        assert got_stranger == []
        assert server.stats.extra["curve_rejected"] >= 1
    finally:
        for t in (a, b, server):
            await t.close()


async def test_curve_needs_the_peer_key_for_each_address() -> None:
    t = ZmqTransport("127.0.0.1:0", curve=CurveConfig(CurveKeyPair.generate(), frozenset(), {}))
    await t.start(ListInlet())
    try:
        with pytest.raises(ValueError, match="peer_keys"):
            await t.connect_to("127.0.0.1:1")
    finally:
        await t.close()


async def test_message_bus_with_tcp_carries_messages_between_buses() -> None:
    left = MessageBus.with_tcp("127.0.0.1:0")
    right = MessageBus.with_tcp("127.0.0.1:0")
    async with left, right:
        inbox = right.subscribe(Tick)
        await right.connect_to(left.transport.address)  # type: ignore[attr-defined]
        await right.ready()
        await left.publisher(Tick).publish(tick(5))
        assert await asyncio.wait_for(inbox.recv(), 10) == tick(5)


# -- fuzz: frames thrown at a live SUB socket -------------------------------------------------

PREFIX = wire_type(Tick).prefix
TICK_FP = wire_type(Tick).fingerprint


class LiveTarget:
    """A raw XPUB (the attacker) and a started ZmqTransport subscribed to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ctx = zmq.Context()
        self.raw = self.ctx.socket(zmq.XPUB)
        self.raw.setsockopt(zmq.LINGER, 0)
        self.raw.bind("tcp://127.0.0.1:0")
        self.got: list[Any] = []
        self.t = ZmqTransport("127.0.0.1:0")
        self.out = Outbound()
        loop.run_until_complete(self._start())

    async def _start(self) -> None:
        await self.t.start(ListInlet(self.got))
        self.t.subscribe(Tick)
        await self.t.connect_to(self.raw.getsockopt_string(zmq.LAST_ENDPOINT))
        self.raw.setsockopt(zmq.RCVTIMEO, 10_000)
        assert self.raw.recv() == b"\x01" + PREFIX  # the subscription is in effect

    def accounted(self) -> int:
        return accounted(self.t.stats) + self.t.stats.extra.get("acks_received", 0)

    def throw(self, frames: list[bytes], via: zmq.Socket[Any] | None = None) -> None:
        """Send ``frames`` from the attacker (or ``via``), wait until each is accounted for."""
        before = self.accounted()
        for frame in frames:
            (via or self.raw).send(frame)
        self.loop.run_until_complete(until(lambda: self.accounted() == before + len(frames)))

    def close(self) -> None:
        self.loop.run_until_complete(self.t.close())
        self.raw.close()
        self.ctx.term()


@pytest.fixture
def live_target() -> Iterator[LiveTarget]:
    yield from on_a_new_loop(LiveTarget)


def test_fuzzed_frames_are_all_accounted_for_and_the_transport_keeps_delivering(
    live_target: LiveTarget,
) -> None:
    target = live_target
    # Flip, cut or insert bytes after the prefix only: ZeroMQ filters anything else away.
    valid = [target.out.frame(tick(i))[len(PREFIX) :] for i in range(1, 50)]
    throw_storm(target.throw, valid, max_examples=60, frame=lambda body: PREFIX + body)
    s = target.t.stats
    assert s.dropped_malformed > 0
    # Still alive: a fresh valid frame from a new publisher is delivered.
    target.got.clear()
    target.throw([Outbound().frame(tick(10**6))])
    assert target.got == [tick(10**6)]


def test_oversize_and_header_only_frames_are_dropped_at_a_live_socket(
    live_target: LiveTarget,
) -> None:
    target = live_target
    header_only = PREFIX + HEADER.pack(b"MY", 1, 0, Tick.TYPE_ID, TICK_FP, 1, 1)
    target.throw([PREFIX + b"\0" * 70_000, header_only, PREFIX])
    assert target.t.stats.dropped_malformed == 3
    assert target.got == []


def test_a_huge_frame_is_never_read_into_memory_and_only_its_peer_is_cut_off(
    live_target: LiveTarget,
) -> None:
    """A 64 MiB frame was read whole (tracemalloc: pyzmq's 64 MiB copy, libzmq's own beside
    it) only to be dropped as oversize. Now libzmq hangs up on that peer unread (a protocol
    error: it does not reconnect to it), and the transport goes on hearing its other peers."""
    target = live_target
    assert target.t.max_inbound == 1 << 20
    target.throw([PREFIX + b"\0" * (target.t.max_inbound // 2)])  # oversize: read and counted
    assert target.t.stats.dropped_malformed == 1
    huge = PREFIX + b"\0" * (64 << 20)  # made before tracing: only the receiving side counts
    tracemalloc.start()
    try:
        target.raw.send(huge, copy=False)
        assert target.raw.recv() == b"\x00" + PREFIX  # the hang-up withdraws the subscription
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB traced while a peer sent one 64 MiB frame"
    other = target.ctx.socket(zmq.XPUB)
    other.setsockopt(zmq.LINGER, 0)
    other.setsockopt(zmq.RCVTIMEO, 10_000)
    other.bind("tcp://127.0.0.1:0")
    try:
        target.loop.run_until_complete(
            target.t.connect_to(other.getsockopt_string(zmq.LAST_ENDPOINT)))
        assert other.recv() == b"\x01" + PREFIX
        target.throw([target.out.frame(tick(1))], via=other)
    finally:
        other.close()
    assert target.got == [tick(1)] and target.t.stats.dropped_malformed == 1


async def test_a_full_block_subscriber_stops_reading_and_the_publisher_waits() -> None:
    pub = ZmqTransport("127.0.0.1:0", hwm=200)
    await pub.start(ListInlet())
    bus = MessageBus(ZmqTransport("127.0.0.1:0", hwm=200))
    sub = bus.subscribe(Tick, maxsize=100, policy="block")
    await bus.start()
    await bus.connect_to(pub.address)
    await bus.ready()
    sent = 0
    try:
        with pytest.raises(TimeoutError):  # lossless: the publisher is held, not dropping
            async with asyncio.timeout(3):
                for seq in range(1, 100_001):
                    await pub.publish(tick(seq))
                    sent = seq
        assert sent < 100_000, "nothing pushed back on the publisher"
        assert len(sub) == 100, "the subscriber's queue went past (or never reached) maxsize"
        assert bus.transport.stats.extra["backpressure_waits"] >= 1
        got = []
        async with asyncio.timeout(30):
            while len(got) < sent:
                got.extend(m.seq for m in await sub.recv_batch())
                assert sub.stats.high_water <= 100
        assert got[:sent] == list(range(1, sent + 1))
        assert pub.stats.dropped_overflow == 0
    finally:
        await pub.close()
        await bus.close()


def test_a_replayed_and_an_out_of_range_frame_are_counted_and_delivered_once(
    live_target: LiveTarget,
) -> None:
    target = live_target
    out = Outbound(publisher=77)
    frames = [out.frame(tick(s)) for s in (1, 2, 3)]
    wild = PREFIX + HEADER.pack(b"MY", 1, 0, Tick.TYPE_ID, TICK_FP, 77, 10**12)
    wild += tick(99).to_bytes()
    target.throw([*frames, frames[0], wild, out.frame(tick(4)), out.frame(tick(5))])
    assert [m.seq for m in target.got] == [1, 2, 3, 4, 5]
    extra = target.t.stats.extra
    assert extra["duplicates"] == 1 and extra["sequence_out_of_range"] == 1


async def test_publish_nowait_through_a_bus_refuses_once_the_lossless_backlog_is_full() -> None:
    bus = MessageBus(ZmqTransport("127.0.0.1:0", hwm=10))
    await bus.start()
    ctx = zmq.Context()
    stuck = ctx.socket(zmq.SUB)  # subscribed, connected, never reads: the HWM fills up
    stuck.setsockopt(zmq.RCVHWM, 10)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt(zmq.SUBSCRIBE, wire_type(Tick).prefix)
    stuck.connect(bus.transport.address)  # type: ignore[attr-defined]
    pub = bus.publisher(Tick)
    try:
        await bus.wait_for_subscribers(1, Tick, timeout=10)
        with pytest.raises(QueueFullError, match="send queue is full"):
            async with asyncio.timeout(10):
                for seq in range(1, 1_000_001):
                    pub.publish_nowait(tick(seq))
                    await asyncio.sleep(0)
        assert len(bus.transport._backlog) <= 10  # type: ignore[attr-defined]
    finally:
        stuck.close()
        ctx.term()
        await bus.close()
