"""Stranger round 8, jetstream8: a power grid's billing line on JetStream, attacked.

MeterRead -> Billing (``tests/jetstream8_peers/stage.py`` on a ``ServiceRuntime``, several
InvoiceLines per reading) -> the stream; Mailer and Audit are sinks with their own durable
names. Every test runs a private ``nats-server -js`` (``nats_server``) and real peer
processes, and counts lost / repeated / reordered against the README's JetStream row (at
least once: 0 lost, repeats allowed but counted), in what the existing crash tests do not
cover: a ``stream_discard="new"`` stream that fills up under a stage, a stage SIGKILLed
*between* the emits of one input, two durable names on one stream with one of them killed,
and the server itself SIGSTOPped past ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from jetstream8_peers.messages import InvoiceLine, MeterRead
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy
from peers.harness import NatsServer, Peer, Peers

from mycelium_mono.bus.transports.wire import MAX_FRAME, Decoded, decode_body

pytest_plugins = ["conftest_distributed"]

READS = "grid_meter.8801"
LINES = "grid_bill.8802"


def durable(name: str) -> str:
    """The server-side name of a stage's MeterRead consumer (``<durable>-<topic>-<id>``)."""
    return f"{name}-grid_meter-8801"


def spawn_stage(peers: Peers, server: NatsServer, stream: str, name: str, *extra: str) -> Peer:
    return peers.spawn(
        "stage", "--url", server.url, "--stream", stream, "--name", name, *extra, name=name
    )


async def js_call(url: str, call: Any) -> Any:
    nc = await nats.connect(url)
    try:
        return await call(nc.jetstream())
    finally:
        await nc.close()


async def consumer_info(url: str, stream: str, name: str) -> Any:
    return await js_call(url, lambda js: js.consumer_info(stream, durable(name)))


async def wait_settled(url: str, stream: str, name: str, count: int, timeout: float) -> None:
    """Every one of ``count`` readings delivered to ``name`` and acked."""

    async def poll() -> None:
        while True:
            try:
                info = await consumer_info(url, stream, name)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None and info.num_pending == 0 and info.num_ack_pending == 0:
                if info.ack_floor.stream_seq >= count:
                    return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def stored_lines(url: str, stream: str) -> list[tuple[int, int]]:
    """(seq, part) of every InvoiceLine stored, in stream order (a reader of the test's own)."""

    async def read(js: Any) -> list[tuple[int, int]]:
        info = await js.stream_info(stream, subjects_filter=LINES)
        expected = (info.state.subjects or {}).get(LINES, 0)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0
        )
        psub = await js.pull_subscribe(LINES, stream=stream, config=config)
        found: list[tuple[int, int]] = []
        async with asyncio.timeout(30):
            while len(found) < expected:
                try:
                    msgs = await psub.fetch(1000, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for m in msgs:
                    decoded = decode_body(m.data, LINES, MAX_FRAME)
                    assert isinstance(decoded, Decoded), decoded
                    line = decoded.message
                    assert isinstance(line, InvoiceLine), line
                    found.append((int(line.seq), int(line.part)))
        return found

    result: list[tuple[int, int]] = await js_call(url, read)
    return result


async def dead_lettered(url: str, stream: str) -> int:
    async def count(js: Any) -> int:
        try:
            return int((await js.stream_info(f"DLQ_{stream}")).state.messages)
        except nats.js.errors.NotFoundError:
            return 0

    result: int = await js_call(url, count)
    return result


def recorded(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split()]


def lines_report(lines: list[tuple[int, int]], reads: int, parts: int) -> dict[str, int]:
    counts = Counter(lines)
    wanted = {(seq, part) for seq in range(1, reads + 1) for part in range(parts)}
    return {
        "lost": len(wanted - set(counts)),
        "repeated": sum(n - 1 for n in counts.values()),
        "strangers": len(set(counts) - wanted),
    }


def seq_report(seqs: list[int], count: int) -> dict[str, int]:
    """lost / repeated / reordered (a first sight of a seq after a higher one)."""
    seen: set[int] = set()
    highest = 0
    late = 0
    for seq in seqs:
        if seq not in seen and seq < highest:
            late += 1
        seen.add(seq)
        highest = max(highest, seq)
    return {
        "lost": len(set(range(1, count + 1)) - seen),
        "repeated": len(seqs) - len(seen),
        "reordered": late,
    }


async def publish_reads(peers: Peers, server: NatsServer, stream: str, count: int,
                        pace_ms: float = 0.0, first: int = 1) -> Peer:
    meter = peers.spawn("meter", "--url", server.url, "--stream", stream, "--count",
                        str(count), "--pace-ms", str(pace_ms), "--first", str(first),
                        name="meter")  # fmt: skip
    await meter.aexpect("READY", timeout=30)
    return meter


@pytest.fixture
def grid(tmp_path: Path) -> Any:
    p = Peers(tmp_path, package="jetstream8_peers")
    try:
        yield p
    finally:
        p.close()


async def test_a_full_discard_new_stream_fails_only_unstored_outputs_and_loses_nothing(
    grid: Peers, nats_server: NatsServer, stream_name: str
) -> None:
    """Billing asks for ``stream_max_msgs=60, stream_discard="new"``; the meters (another
    process, default options) pour 40 readings in; each becomes 2 lines, so the stream is full
    at 60 with 20 lines missing. Expected (README: an emit no stream can store fails only its
    own input): the meters' bus leaves the stream's discard policy as Billing asked (its
    default used to flip it to "old", and the full stream then threw away the oldest lines,
    stored and acked: lost for good); while full, no reading is acked whose lines are not both
    stored; once an operator raises the limit, every reading has both lines, 0 lost,
    nothing dead-lettered."""
    reads, parts = 40, 2
    billing = spawn_stage(grid, nats_server, stream_name, "billing", "--parts", str(parts),
                          "--max-msgs", "60", "--discard", "new", "--max-deliver", "100",
                          "--flush-timeout", "1.0", "--ack-timeout", "0.5",
                          "--ack-wait", "3.0")  # fmt: skip
    await billing.aexpect("READY", timeout=30)
    meter = await publish_reads(grid, nats_server, stream_name, reads)
    await meter.aexpect("DONE", timeout=30)
    meter.stop()
    url = nats_server.url

    async def full_and_refusing() -> Any:
        while True:
            stream = await js_call(url, lambda js: js.stream_info(stream_name))
            consumer = await consumer_info(url, stream_name, "billing")
            if stream.state.messages >= 60 and consumer.num_redelivered > 0:
                return consumer
            await asyncio.sleep(0.1)

    consumer = await asyncio.wait_for(full_and_refusing(), 30)
    floor = consumer.ack_floor.stream_seq  # readings 1..floor are acked
    lines = Counter(seq for seq, _ in await stored_lines(url, stream_name))
    unstored_but_acked = [seq for seq in range(1, floor + 1) if lines[seq] < parts]
    assert not unstored_but_acked, f"acked with lines refused: {unstored_but_acked}"
    assert floor < reads, "the stream was never full under Billing: nothing was tested"
    # The operator makes room: everything refused so far is redelivered and stored.
    info = await js_call(url, lambda js: js.stream_info(stream_name))
    info.config.max_msgs = 10_000
    await js_call(url, lambda js: js.update_stream(info.config))
    # The meters restart (a redeploy) with the library's default options and read on.
    late = 10
    meter = await publish_reads(grid, nats_server, stream_name, late, first=reads + 1)
    await meter.aexpect("DONE", timeout=30)
    info = await js_call(url, lambda js: js.stream_info(stream_name))
    assert info.config.discard == DiscardPolicy.NEW, (
        f"the meters' bus, which asked for no discard policy, changed the one Billing set to "
        f"{info.config.discard!r}: at the next limit the stream throws away its oldest lines"
    )
    reads += late
    await wait_settled(url, stream_name, "billing", reads, timeout=40)
    report = lines_report(await stored_lines(url, stream_name), reads, parts)
    print(f"full stream: ack floor while full {floor}/{reads}; {report}")
    assert report["lost"] == 0 and report["strangers"] == 0, report
    assert await dead_lettered(url, stream_name) == 0
    billing.send("QUIT")
    stats = await billing.aresult(timeout=20)
    meter.stop()
    print(f"billing counters: {stats}")
    assert stats.get("acks_withheld", 0) > 0, stats
