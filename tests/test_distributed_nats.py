"""NATS and JetStream between real OS processes: volume, crash and replay, slow consumers, chain.

JetStream tests run against a private ``nats-server -js`` on a free port (its store in a temp
directory), so streams never collide; the chain runs on the machine's server at :4222.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from peers.chain_services import in_process_chain
from peers.harness import NatsServer, Peers, until
from peers.inlet import ListInlet
from peers.messages import Fill, Tick, tick

from mycelium_mono.bus import MessageBus
from mycelium_mono.bus.transports.nats import NatsTransport

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]


async def jetstream_subscriber(
    url: str, stream: str, durable: str
) -> tuple[NatsTransport, list[Any]]:
    got: list[Any] = []
    t = NatsTransport(url, jetstream=True, stream=stream, durable=durable)
    await t.start(ListInlet(got))
    t.subscribe(Tick)
    await t.ready()
    return t, got


async def test_100k_messages_over_jetstream_none_lost_order_kept(
    peers: Peers, nats_server: NatsServer, stream_name: str
) -> None:
    t, got = await jetstream_subscriber(nats_server.url, stream_name, "volume")
    pub = peers.spawn(
        "stream_pub", "--engine", "nats", "--url", nats_server.url, "--jetstream",
        "--stream", stream_name, "--count", "100000",
    )  # fmt: skip
    try:
        await pub.aexpect("READY")
        pub.send("GO")
        stats = await pub.aresult(timeout=120)
        assert stats["sent"] == 100_000 and stats.get("publish_failed", 0) == 0
        await until(lambda: len(got) >= 100_000, timeout=120)
        assert [m.seq for m in got] == list(range(1, 100_001))
        assert t.stats.sequence_gaps == 0 and t.stats.dropped_malformed == 0
    finally:
        pub.stop()
        await t.close()


def recorded(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


async def test_consumer_killed_and_restarted_loses_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "received.txt"
    args = (
        "--engine", "nats", "--url", nats_server.url, "--jetstream", "--stream", stream_name,
        "--durable", "crashy", "--record", str(record), "--timeout", "120",
        "--ack-wait", "2",
    )  # fmt: skip
    first = peers.spawn("stream_sub", *args)
    await first.aexpect("READY")
    pub = NatsTransport(nats_server.url, jetstream=True, stream=stream_name)
    await pub.start(ListInlet())
    try:
        for seq in range(1, 20_001):
            await pub.publish(tick(seq))
            if seq == 5000:
                await pub.flush()
                await until(lambda: len(recorded(record)) >= 3000, timeout=60)
                first.kill()  # SIGKILL mid-stream: no ack for what it was working on
        await pub.flush()
        assert len(set(recorded(record))) < 20_000
        second = peers.spawn("stream_sub", *args)
        await second.aexpect("READY")
        await until(lambda: len(set(recorded(record))) >= 20_000, timeout=90)
        seqs = recorded(record)
        assert set(seqs) == set(range(1, 20_001))
        # At-least-once: only what the killed consumer had not acknowledged comes again.
        assert len(seqs) - 20_000 <= 2 * 512
    finally:
        await pub.close()


async def test_slow_consumer_on_jetstream_publisher_is_not_held_and_nothing_is_lost(
    peers: Peers, nats_server: NatsServer, stream_name: str
) -> None:
    sub = peers.spawn(
        "stream_sub", "--engine", "nats", "--url", nats_server.url, "--jetstream",
        "--stream", stream_name, "--durable", "slow", "--count", "10000",
        "--slow-every", "200", "--slow-ms", "20",
    )  # fmt: skip
    await sub.aexpect("READY")
    pub = NatsTransport(nats_server.url, jetstream=True, stream=stream_name)
    await pub.start(ListInlet())
    try:
        for seq in range(1, 10_001):
            await pub.publish(tick(seq))
        await pub.flush()
        result = await sub.aresult(timeout=90)
        assert result["count"] == 10_000 and result["out_of_order"] == 0
        assert result["sequence_gaps"] == 0 and result["last"] == 10_000
    finally:
        await pub.close()


async def test_slow_consumer_on_core_nats_loses_messages_and_counts_them(
    peers: Peers, shared_nats: str
) -> None:
    sub = peers.spawn(
        "stream_sub", "--engine", "nats", "--url", shared_nats, "--pending-limit", "100",
        "--slow-every", "50", "--slow-ms", "5", "--idle", "1.0",
    )  # fmt: skip
    await sub.aexpect("READY")
    pub = NatsTransport(shared_nats)
    await pub.start(ListInlet())
    try:
        for seq in range(1, 20_001):
            pub.publish_nowait(tick(seq))
        await pub.flush()
        result = await sub.aresult(timeout=90)
        assert 0 < result["count"] < 20_000
        assert result["out_of_order"] == 0
        assert result["dropped_overflow"] > 0 and result["sequence_gaps"] > 0
        assert result["messages_missed"] == result["last"] - result["count"]
    finally:
        await pub.close()


async def test_three_process_chain_over_nats_gives_the_in_process_result(
    peers: Peers, shared_nats: str
) -> None:
    count = 2000
    stages = [
        peers.spawn(
            "chain", "--engine", "nats", "--url", shared_nats, "--role", role, "--count", str(count)
        )
        for role in ("execution", "strategy", "adapter")
    ]
    bus = MessageBus.with_nats(shared_nats)
    async with bus:
        fills = bus.subscribe(Fill)
        await bus.ready()
        for stage in stages:
            await stage.aexpect("READY")
        stages[-1].send("GO")
        received = [await asyncio.wait_for(fills.recv(), 30) for _ in range(count)]
    assert received == await in_process_chain(count)
    for stage in stages:
        stage.send("QUIT")
        assert (await stage.aresult())["dropped_malformed"] == 0


async def test_a_publisher_with_a_different_layout_is_dropped_counted_and_logged(
    peers: Peers, shared_nats: str, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Any] = []
    t = NatsTransport(shared_nats)
    await t.start(ListInlet(got))
    pub = peers.spawn("mismatched_pub", "--engine", "nats", "--url", shared_nats)
    try:
        t.subscribe(Tick)
        await t.ready()
        await pub.aexpect("READY")
        with caplog.at_level("ERROR", logger="mycelium_mono.transport"):
            pub.send("GO 10")
            await until(lambda: t.stats.extra.get("drop_fingerprint_mismatch", 0) == 10)
        assert got == []
        assert t.stats.extra["incompatible_peers"] == 1
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "4001" in errors[0] and "help:" in errors[0]
    finally:
        pub.stop()
        await t.close()
