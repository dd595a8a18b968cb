"""ZeroMQ between real OS processes on 127.0.0.1: volume, chain, crash, slow consumers."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from peers.chain_services import in_process_chain
from peers.harness import Peers, free_port, until
from peers.inlet import ListInlet
from peers.messages import Fill, Tick

from mycelium_mono.bus import MessageBus
from mycelium_mono.bus.transports.wire import wire_type
from mycelium_mono.bus.transports.zmq import WireMismatchError, ZmqTransport

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]


async def subscriber(address: str, **options: Any) -> tuple[ZmqTransport, list[Any]]:
    got: list[Any] = []
    t = ZmqTransport("127.0.0.1:0", **options)
    await t.start(ListInlet(got))
    t.subscribe(Tick)
    await t.connect_to(address)
    await t.ready(timeout=30)
    return t, got


async def test_100k_messages_lossless_none_lost_order_kept(peers: Peers) -> None:
    # HWM 1000 is ZeroMQ's default, which silently dropped ~30% of a burst before NODROP.
    pub = peers.spawn("stream_pub", "--engine", "zmq", "--count", "100000", "--hwm", "1000")
    address = await pub.aexpect("READY")
    t, got = await subscriber(address, hwm=1000)
    try:
        pub.send("GO")
        await until(lambda: len(got) >= 100_000, timeout=120)
        stats = await pub.aresult()
        assert [m.seq for m in got] == list(range(1, 100_001))
        assert got[-1] == Tick(seq=100_000, value=-100_000, blob=(100_000).to_bytes(32, "little"))
        assert stats["sent"] == 100_000 and stats["dropped_overflow"] == 0
        assert t.stats.sequence_gaps == 0 and t.stats.dropped_malformed == 0
    finally:
        pub.stop()
        await t.close()


async def test_publisher_killed_and_restarted_is_reconnected_without_a_new_connect(
    peers: Peers,
) -> None:
    port = free_port()
    bind = f"127.0.0.1:{port}"
    first = peers.spawn("stream_pub", "--engine", "zmq", "--bind", bind, "--count", "10000000")
    await first.aexpect("READY")
    t, got = await subscriber(bind)
    try:
        first.send("GO")
        await until(lambda: len(got) >= 2000, timeout=30)
        first.kill()
        second = peers.spawn(
            "stream_pub", "--engine", "zmq", "--bind", bind, "--count", "5000",
            "--wait-subscribers", "1",
        )  # fmt: skip
        await second.aexpect("READY")

        def restart_index() -> int:
            return next((i for i in range(1, len(got)) if got[i].seq == 1), 0)

        # Whatever was already queued from the first process arrives first, then 1..5000.
        await until(lambda: 0 < restart_index() <= len(got) - 5000, timeout=60)
        await second.aresult()
        split = restart_index()
        assert split >= 2000
        assert [m.seq for m in got[:split]] == list(range(1, split + 1))
        assert [m.seq for m in got[split:]] == list(range(1, 5001))
        assert t.stats.extra["publishers_seen"] == 2
        assert t.stats.sequence_gaps == 0
        second.stop()
    finally:
        await t.close()


async def test_subscriber_killed_and_restarted_gets_the_stream_again(
    peers: Peers, tmp_path: Path
) -> None:
    pub = ZmqTransport("127.0.0.1:0")
    await pub.start(ListInlet())
    record = tmp_path / "first.txt"
    first = peers.spawn(
        "stream_sub", "--engine", "zmq", "--connect", pub.address, "--record", str(record),
        "--timeout", "60",
    )  # fmt: skip

    async def stream() -> None:
        seq = 0
        while True:
            seq += 1
            await pub.publish(Tick(seq=seq, value=0, blob=bytes(32)))
            if seq % 100 == 0:
                await asyncio.sleep(0.001)

    streaming = asyncio.get_running_loop().create_task(stream())
    try:
        await first.aexpect("READY")
        await until(lambda: record.exists() and len(record.read_text().split()) >= 500)
        first.kill()
        # The XPUB sees the dead peer's pipe go (its subscription is withdrawn)...
        await until(lambda: pub.subscriber_count(wire_type(Tick).prefix) == 0, timeout=30)
        second = peers.spawn(
            "stream_sub", "--engine", "zmq", "--connect", pub.address, "--count", "1000",
        )  # fmt: skip
        await second.aexpect("READY")
        # ...and a new subscriber joins the running stream, in order, without gaps.
        result = await second.aresult()  # the stream goes on: at least the 1000 it waited for
        assert result["count"] >= 1000 and result["out_of_order"] == 0
        assert result["sequence_gaps"] == 0 and result["first"] > 500
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        await pub.close()


async def test_slow_subscriber_lossless_publisher_waits_and_nothing_is_lost(
    peers: Peers,
) -> None:
    pub = ZmqTransport("127.0.0.1:0", hwm=100)
    await pub.start(ListInlet())
    try:
        sub = peers.spawn(
            "stream_sub", "--engine", "zmq", "--connect", pub.address, "--hwm", "100",
            "--count", "20000", "--slow-every", "200", "--slow-ms", "5",
        )  # fmt: skip
        await sub.aexpect("READY")
        for seq in range(1, 20_001):
            await pub.publish(Tick(seq=seq, value=0, blob=bytes(32)))
        result = await sub.aresult()
        assert result["count"] == 20_000 and result["out_of_order"] == 0
        assert result["sequence_gaps"] == 0
        assert pub.stats.extra["hwm_waits"] > 0
        assert pub.stats.dropped_overflow == 0
    finally:
        await pub.close()


async def test_slow_subscriber_lossy_drops_are_counted_on_both_sides(peers: Peers) -> None:
    pub = ZmqTransport("127.0.0.1:0", hwm=100, lossless=False)
    await pub.start(ListInlet())
    try:
        sub = peers.spawn(
            "stream_sub", "--engine", "zmq", "--connect", pub.address, "--hwm", "100",
            "--slow-every", "100", "--slow-ms", "5",
        )  # fmt: skip
        await sub.aexpect("READY")
        for seq in range(1, 20_001):
            await pub.publish(Tick(seq=seq, value=0, blob=bytes(32)))
        dropped = pub.stats.dropped_overflow
        sub.send(f"EXPECT {pub.stats.sent}")
        result = await sub.aresult()
        assert dropped > 0
        assert result["count"] == pub.stats.sent == 20_000 - dropped
        assert result["out_of_order"] == 0
        assert result["sequence_gaps"] > 0
        assert result["messages_missed"] == result["last"] - result["count"]
    finally:
        await pub.close()


async def test_a_peer_with_a_different_layout_is_refused_at_connect_and_per_message(
    peers: Peers,
) -> None:
    pub = peers.spawn("mismatched_pub", "--engine", "zmq")
    address = await pub.aexpect("READY")
    got: list[Any] = []
    t = ZmqTransport("127.0.0.1:0")
    await t.start(ListInlet(got))
    try:
        t.subscribe(Tick)
        await t.connect_to(address)
        with pytest.raises(WireMismatchError, match=r"4001[\s\S]*Tick[\s\S]*help:"):
            await t.ready(timeout=30)
        pub.send("GO 10")
        await until(lambda: t.stats.extra.get("drop_fingerprint_mismatch", 0) >= 11)
        assert got == []
        assert t.stats.extra["incompatible_peers"] == 1
    finally:
        pub.stop()
        await t.close()


async def test_a_peer_with_the_same_layout_under_another_topic_is_refused_at_ready(
    peers: Peers,
) -> None:
    pub = peers.spawn("mismatched_pub", "--engine", "zmq", "--differ", "topic")
    address = await pub.aexpect("READY")
    t = ZmqTransport("127.0.0.1:0")
    await t.start(ListInlet())
    try:
        t.subscribe(Tick)
        await t.connect_to(address)
        with pytest.raises(WireMismatchError, match=r"4001[\s\S]*topic"):
            await t.ready(timeout=30)
    finally:
        pub.stop()
        await t.close()


async def test_three_process_chain_gives_the_in_process_result(peers: Peers) -> None:
    count = 2000
    ports = {role: free_port() for role in ("adapter", "strategy", "execution")}

    def addr(role: str) -> str:
        return f"127.0.0.1:{ports[role]}"

    execution = peers.spawn(
        "chain", "--engine", "zmq", "--role", "execution", "--bind", addr("execution"),
        "--connect", addr("strategy"),
    )  # fmt: skip
    strategy = peers.spawn(
        "chain", "--engine", "zmq", "--role", "strategy", "--bind", addr("strategy"),
        "--connect", addr("adapter"),
    )  # fmt: skip
    adapter = peers.spawn(
        "chain", "--engine", "zmq", "--role", "adapter", "--bind", addr("adapter"),
        "--count", str(count),
    )  # fmt: skip
    bus = MessageBus.with_tcp("127.0.0.1:0")
    async with bus:
        fills = bus.subscribe(Fill)
        await bus.connect_to(addr("execution"))
        await bus.ready()
        for stage in (execution, strategy, adapter):
            await stage.aexpect("READY")
        adapter.send("GO")
        received = [await asyncio.wait_for(fills.recv(), 30) for _ in range(count)]
    assert received == await in_process_chain(count)
    for stage in (adapter, strategy, execution):
        stage.send("QUIT")
        assert (await stage.aresult())["dropped_malformed"] == 0
