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
from jetstream8_peers.messages import InvoiceLine
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy
from peers.harness import NatsServer, Peer, Peers

from mycelium_mono.bus.transports.wire import MAX_FRAME, Decoded, decode_body

pytest_plugins = ["conftest_distributed"]

READS = "grid_meter.8811"
LINES = "grid_bill.8812"


def durable(name: str) -> str:
    """The server-side name of a stage's MeterRead consumer (``<durable>-<topic>-<id>``)."""
    return f"{name}-grid_meter-8811"


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
            if (
                info is not None
                and info.num_pending == 0
                and info.num_ack_pending == 0
                and info.ack_floor.stream_seq >= count
            ):
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
    print(f"full stream: ack floor while full {floor}/40; {report}")
    assert report["lost"] == 0 and report["strangers"] == 0, report
    assert await dead_lettered(url, stream_name) == 0
    billing.send("QUIT")
    stats = await billing.aresult(timeout=20)
    meter.stop()
    print(f"billing counters: {stats}")
    assert stats.get("acks_withheld", 0) > 0, stats


async def run_until_dead(peer: Peer, timeout: float = 30.0) -> None:
    async def dead() -> None:
        while peer.proc.poll() is None:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(dead(), timeout)
    assert peer.proc.returncode == -9, f"exited {peer.proc.returncode}:\n{peer.stderr_tail()}"


@pytest.mark.parametrize(("seed", "mode"), [(1, "sync"), (2, "async")])
async def test_billing_killed_between_the_emits_of_one_reading_loses_no_line(
    grid: Peers, nats_server: NatsServer, stream_name: str, seed: int, mode: str
) -> None:
    """Billing emits 4 lines per reading; three times it SIGKILLs itself right after a
    seed-chosen emit (1st to 3rd) of a seed-chosen reading, sync (``self.emit``) or async
    (``await ctx.emit``), and is restarted under its durable name. Expected: every
    reading has all 4 lines (0 lost); a re-handled reading's lines are stored again under the
    new incarnation's message ids (repeats, counted, at most what the killed one held)."""
    rng = random.Random(seed)
    reads, parts, pending = 60, 4, 8
    common = ["--parts", str(parts), "--mode", mode, "--fetch-batch", "4",
              "--max-ack-pending", str(pending)]  # fmt: skip
    meter = await publish_reads(grid, nats_server, stream_name, reads)
    await meter.aexpect("DONE", timeout=30)
    kills = 3
    for _ in range(kills):
        doomed = spawn_stage(grid, nats_server, stream_name, "billing", *common,
                             "--die-input", str(rng.randrange(3, 12)),
                             "--die-part", str(rng.randrange(1, parts)))  # fmt: skip
        await run_until_dead(doomed)
    last = spawn_stage(grid, nats_server, stream_name, "billing", *common)
    await last.aexpect("READY", timeout=30)
    await wait_settled(nats_server.url, stream_name, "billing", reads, timeout=40)
    lines = await stored_lines(nats_server.url, stream_name)
    report = lines_report(lines, reads, parts)
    print(f"seed {seed} ({mode}): {kills} kills between emits; {report}")
    assert report["lost"] == 0 and report["strangers"] == 0, report
    assert report["repeated"] <= kills * pending * parts, report
    assert await dead_lettered(nats_server.url, stream_name) == 0
    last.send("QUIT")
    await last.aresult(timeout=20)
    meter.stop()


async def test_two_durables_on_one_stream_one_killed_the_other_unaffected(
    grid: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    """Mailer and Audit each have their own durable on the readings; the meters publish 300
    paced; Mailer is SIGKILLed mid-stream and restarted. Expected: Audit handles each reading
    once, in order, nothing redelivered; Mailer loses nothing, and its new incarnation starts
    above the ack floor the server had for it when it died (it resumes where it acked), with
    repeats at most its max_ack_pending."""
    reads, pending = 300, 16
    common = ["--slow-ms", "3", "--fetch-batch", "8", "--max-ack-pending", str(pending)]
    audit_rec, mail_a, mail_b = tmp_path / "audit", tmp_path / "mail-a", tmp_path / "mail-b"
    audit = spawn_stage(grid, nats_server, stream_name, "audit", *common, "--record",
                        str(audit_rec))  # fmt: skip
    mailer = spawn_stage(grid, nats_server, stream_name, "mailer", *common, "--record",
                         str(mail_a))  # fmt: skip
    await audit.aexpect("READY", timeout=30)
    await mailer.aexpect("READY", timeout=30)
    meter = await publish_reads(grid, nats_server, stream_name, reads, pace_ms=2)
    kill_at = random.Random(8).randrange(60, 150)
    await asyncio.wait_for(_until(lambda: len(recorded(mail_a)) >= kill_at), 30)
    mailer.kill()
    floor = (await consumer_info(nats_server.url, stream_name, "mailer")).ack_floor.stream_seq
    mailer = spawn_stage(grid, nats_server, stream_name, "mailer", *common, "--record",
                         str(mail_b))  # fmt: skip
    await mailer.aexpect("READY", timeout=30)
    await meter.aexpect("DONE", timeout=30)
    for name in ("audit", "mailer"):
        await wait_settled(nats_server.url, stream_name, name, reads, timeout=40)
    audit_report = seq_report(recorded(audit_rec), reads)
    first, second = recorded(mail_a), recorded(mail_b)
    mail_report = seq_report(first + second, reads)
    print(f"fan-out: audit {audit_report}; mailer killed after {len(first)} handled, ack "
          f"floor {floor}, restarted from {min(second)}; {mail_report}")
    assert audit_report == {"lost": 0, "repeated": 0, "reordered": 0}, audit_report
    assert mail_report["lost"] == 0, mail_report
    assert min(second) > floor, f"restarted Mailer handled {min(second)} <= ack floor {floor}"
    assert mail_report["repeated"] <= pending, mail_report
    audit.send("QUIT")
    assert (await audit.aresult(timeout=20)).get("redelivered", 0) == 0
    mailer.send("QUIT")
    await mailer.aresult(timeout=20)
    meter.stop()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.02)


async def test_the_server_sigstopped_past_ack_wait_loses_nothing_and_nobody_hangs(
    grid: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    """The meters publish 400 readings paced while Billing (2 lines each, ack_wait 1 s) and
    Audit consume; the NATS server is SIGSTOPped for 3 s (three ack_waits) mid-stream, then
    SIGCONTed. Expected: the meters finish and flush, every reading has both lines and is
    audited (0 lost; repeats and reordering counted), nothing dead-lettered, and every
    process shuts down when asked (none hangs)."""
    reads, parts = 400, 2
    common = ["--ack-wait", "1.0", "--fetch-batch", "8", "--max-ack-pending", "32"]
    audit_rec = tmp_path / "audit"
    billing = spawn_stage(grid, nats_server, stream_name, "billing", *common, "--parts",
                          str(parts))  # fmt: skip
    audit = spawn_stage(grid, nats_server, stream_name, "audit", *common, "--record",
                        str(audit_rec), "--slow-ms", "2")  # fmt: skip
    await billing.aexpect("READY", timeout=30)
    await audit.aexpect("READY", timeout=30)
    meter = await publish_reads(grid, nats_server, stream_name, reads, pace_ms=4)
    await asyncio.wait_for(_until(lambda: len(recorded(audit_rec)) >= 100), 30)
    assert nats_server.proc is not None
    pid = nats_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(3.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    await meter.aexpect("DONE", timeout=40)
    for name in ("billing", "audit"):
        await wait_settled(nats_server.url, stream_name, name, reads, timeout=40)
    lines = lines_report(await stored_lines(nats_server.url, stream_name), reads, parts)
    audited = seq_report(recorded(audit_rec), reads)
    results = {}
    for peer in (billing, audit):
        peer.send("QUIT")
        results[peer.name] = await peer.aresult(timeout=20)
    meter.stop()
    print(f"server SIGSTOPped 3 s: lines {lines}; audit {audited}; "
          f"redelivered billing {results['billing'].get('redelivered', 0)} "
          f"audit {results['audit'].get('redelivered', 0)}")
    assert lines["lost"] == 0 and lines["strangers"] == 0, lines
    assert audited["lost"] == 0, audited
    assert await dead_lettered(nats_server.url, stream_name) == 0
