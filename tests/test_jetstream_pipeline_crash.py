"""A two-stage JetStream pipeline and its durable sink, SIGKILLed at seed-chosen points.

Tick → stage A → Quote → stage B → Signal → sink (a durable consumer that records each
Signal's seq after processing it), every process a ``tests/peers/js_pipe.py`` on a private
``nats-server -js``. At seed-chosen points of the sink's progress a seed-chosen process (A, B
or the sink) is SIGKILLed and restarted under the same durable name. Counted against the
README's JetStream row (at least once, nothing acknowledged lost, repeats only of what was
in flight): lost (0), repeated (bounded by what the killed processes held), reordered
(reported), dead-lettered (0), and nothing left pending on any consumer.

Also: several processes on one durable consumer (a work queue), one of them killed again
and again; and a stage restarted with a different definition of its input type.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import nats.js.errors
import pytest
from peers.harness import NatsServer, Peer, Peers, until
from test_jetstream_stage_crash import COUNT as STAGE_COUNT
from test_jetstream_stage_crash import (
    Stage,
    check_outputs,
    consumer_info,
    dead_lettered,
    publish_ticks,
    reordered,
    stored_quotes,
    until_acked,
    wait_settled,
)

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]

COUNT = 2000
MAX_ACK_PENDING = 64
CONSUMERS = {"a": "pipe-a-dist_test-4001", "b": "pipe-b-dist_chain-4002",
             "sink": "pipe-sink-dist_chain-4003"}  # fmt: skip


def recorded(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def settled(url: str, stream: str, consumer: str) -> bool:
    try:
        info = await consumer_info(url, stream, consumer)
    except nats.js.errors.NotFoundError:
        return False
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


class Pipeline:
    def __init__(
        self, peers: Peers, server: NatsServer, stream: str, record: Path, mode: str
    ) -> None:
        self.peers = peers
        self.server = server
        self.stream = stream
        self.record = record
        self.mode = mode
        self.running: dict[str, Peer] = {}
        self.extra: list[str] = []  # more js_pipe arguments (after the defaults: they win)

    def args(self, role: str) -> list[str]:
        return [
            "--url", self.server.url, "--stream", self.stream, "--name", f"pipe-{role}",
            "--role", role, "--mode", self.mode, "--record", str(self.record),
            "--fetch-batch", "16", "--max-ack-pending", str(MAX_ACK_PENDING),
            "--ack-wait", "1.5", "--slow-ms", "0.5", *self.extra,
        ]  # fmt: skip

    async def start(self, role: str) -> None:
        peer = self.peers.spawn("js_pipe", *self.args(role), name=f"{role}{len(self.running)}")
        await peer.aexpect("READY", timeout=60)
        self.running[role] = peer

    def kill(self, role: str) -> None:
        self.running.pop(role).kill()

    async def wait_done(self, timeout: float) -> None:
        async def poll() -> None:
            while True:
                if len(set(recorded(self.record))) >= COUNT and all(
                    [await settled(self.server.url, self.stream, c) for c in CONSUMERS.values()]
                ):
                    return
                await asyncio.sleep(0.2)

        await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize(("mode", "seed"), [("sync", 8), ("async", 2027)])
async def test_sigkill_anywhere_in_a_two_stage_pipeline_loses_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, mode: str,
    seed: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    record = tmp_path / "signals.txt"
    await publish_ticks(nats_server.url, stream_name, COUNT)
    pipe = Pipeline(peers, nats_server, stream_name, record, mode)
    for role in ("sink", "b", "a"):
        await pipe.start(role)
    points = sorted(rng.sample(range(COUNT // 10, COUNT * 9 // 10), 9))
    victims = [rng.choice(["a", "b", "sink"]) for _ in points]
    for point, victim in zip(points, victims, strict=True):
        await until(lambda p=point: len(set(recorded(record))) >= p, timeout=120)
        pipe.kill(victim)
        await pipe.start(victim)
    await pipe.wait_done(timeout=120)
    await asyncio.sleep(0.5)  # a late repeat would show up now
    seqs = recorded(record)
    lost = sorted(set(range(1, COUNT + 1)) - set(seqs))
    repeats = len(seqs) - COUNT
    found = {"signals": len(seqs), "repeats": repeats, "reordered": reordered(seqs)}
    print(f"{mode} seed {seed}: kills {victims} at {points}: {found}")
    assert not lost, f"{len(lost)} Ticks never reached the sink, first {lost[:20]}"
    assert set(seqs) == set(range(1, COUNT + 1))
    # Each kill repeats at most what the victim held (max_ack_pending); a repeat upstream
    # is one repeat downstream (its copy has a new publisher id, so it is stored again).
    assert repeats <= len(points) * MAX_ACK_PENDING, found
    # Order is per stream except redeliveries: what comes late is what a killed process held.
    assert found["reordered"] <= len(points) * MAX_ACK_PENDING, found
    assert await dead_lettered(nats_server.url, stream_name) == 0
    quotes = await stored_quotes(nats_server.url, stream_name)
    assert set(quotes) == set(range(1, COUNT + 1))


async def test_sigkill_of_workers_sharing_one_durable_consumer_loses_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str
) -> None:
    # Three stage processes on one durable consumer: the server splits the Ticks between
    # them. One of them, chosen by the seed, is SIGKILLed at seed-chosen points of the ack
    # floor and replaced; what it held goes to the others (or its replacement).
    rng = random.Random(31)
    await publish_ticks(nats_server.url, stream_name, STAGE_COUNT)
    stage = Stage("sync", slow_ms=1.0, max_ack_pending=64)
    args = stage.args(nats_server, stream_name)
    workers = []
    for _ in range(3):
        worker = peers.spawn("js_stage", *args)
        await worker.aexpect("READY", timeout=60)
        workers.append(worker)
    points = sorted(rng.sample(range(STAGE_COUNT // 10, STAGE_COUNT * 8 // 10), 6))
    for point in points:
        await until_acked(nats_server.url, stream_name, point)
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        worker = peers.spawn("js_stage", *args)
        await worker.aexpect("READY", timeout=60)
        workers.append(worker)
    await wait_settled(nats_server.url, stream_name, timeout=120)
    for worker in workers:
        worker.stop()
    # check_outputs bounds repeats by kills x max_ack_pending: with one durable the server
    # hands out at most max_ack_pending in all, so a kill repeats at most that many.
    await check_outputs(nats_server, stream_name, stage, len(points))


AB_CONSUMERS = ("pipe-ab-dist_test-4001", "pipe-ab-dist_chain-4002", CONSUMERS["sink"])


@pytest.mark.parametrize(("mode", "seed"), [("sync", 5), ("async", 1)])
async def test_two_stages_on_one_bus_sigkilled_lose_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, mode: str,
    seed: int,
) -> None:  # fmt: skip
    # Stage a (Tick -> Quote) and stage b (Quote -> Signal) on one bus in one process: b
    # consumes what a publishes. The bus used to deliver a's Quotes to b in memory and ack
    # their stored copies as its own when fetched, so one SIGKILL lost 1525 of 2000 Signals;
    # now b gets them from the stream and each is acked once b handled it.
    rng = random.Random(seed)
    record = tmp_path / "signals.txt"
    await publish_ticks(nats_server.url, stream_name, COUNT)
    pipe = Pipeline(peers, nats_server, stream_name, record, mode)
    pipe.extra = ["--slow-ms", "0", "--slow-b-ms", "2"]  # b lags: Quotes wait in its queue
    await pipe.start("sink")
    await pipe.start("ab")
    points = sorted(rng.sample(range(COUNT // 10, COUNT * 8 // 10), 3))
    for point in points:
        await until(lambda p=point: len(set(recorded(record))) >= p, timeout=120)
        pipe.kill("ab")
        await pipe.start("ab")

    async def done() -> None:
        while len(set(recorded(record))) < COUNT or not all(
            [await settled(nats_server.url, stream_name, c) for c in AB_CONSUMERS]
        ):
            await asyncio.sleep(0.2)

    await asyncio.wait_for(done(), 120)
    seqs = recorded(record)
    lost = sorted(set(range(1, COUNT + 1)) - set(seqs))
    print(f"{mode} seed {seed}: kills at {points}: {len(seqs)} signals, "
          f"{len(seqs) - COUNT} repeats, {reordered(seqs)} reordered")
    assert not lost, f"{len(lost)} Ticks never reached the sink, first {lost[:20]}"
    # A kill repeats at most what the process held: max_ack_pending on each of its consumers.
    assert len(seqs) - COUNT <= len(points) * 2 * MAX_ACK_PENDING
    assert await dead_lettered(nats_server.url, stream_name) == 0
