"""Round 2: a JetStream stage that consumes the type it emits, SIGKILLed at seed-chosen points.

``tests/peers/round2_loop.py``: Quote(n) -> Quote(n + OFFSET) on one bus, a recorder of the
latter on the same bus. Counted against README's JetStream row: lost (0), repeated (bounded
by what the killed process held), reordered (reported), dead-lettered (0), nothing pending.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from peers.harness import NatsServer, Peer, Peers, until
from peers.messages import Quote
from peers.round2_loop import OFFSET
from test_jetstream_pipeline_crash import recorded, settled
from test_jetstream_stage_crash import consumer_info, dead_lettered, reordered, stored_quotes

from mycelium_mono.bus import MessageBus

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]

COUNT = 1500
MAX_ACK_PENDING = 64
CONSUMER = "loop-dist_chain-4002"


async def publish_quotes(url: str, stream: str, count: int) -> None:
    bus = MessageBus.with_nats(url, jetstream=True, stream=stream)
    try:
        pub = bus.publisher(Quote)
        for n in range(1, count + 1):
            await pub.publish(Quote(seq=n, price=float(n)))
        await bus.transport.flush()  # type: ignore[attr-defined]
    finally:
        await bus.close()


@pytest.mark.parametrize(("mode", "seed"), [("sync", 11), ("async", 12)])
async def test_a_stage_consuming_its_own_output_type_sigkilled_loses_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, mode: str,
    seed: int,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    record = tmp_path / "outputs.txt"
    await publish_quotes(nats_server.url, stream_name, COUNT)
    args = ["--url", nats_server.url, "--stream", stream_name, "--name", "loop",
            "--record", str(record), "--mode", mode,
            "--max-ack-pending", str(MAX_ACK_PENDING)]  # fmt: skip

    async def start() -> Peer:
        peer = peers.spawn("round2_loop", *args)
        await peer.aexpect("READY", timeout=60)
        return peer

    peer = await start()
    points = sorted(rng.sample(range(COUNT // 10, COUNT * 9 // 10), 4))
    for point in points:
        await until(lambda p=point: len(set(recorded(record))) >= p, timeout=120)
        peer.kill()
        peer = await start()

    async def done() -> None:
        while len(set(recorded(record))) < COUNT or not await settled(
            nats_server.url, stream_name, CONSUMER
        ):
            await asyncio.sleep(0.2)

    try:
        await asyncio.wait_for(done(), 45)
    except TimeoutError:
        info = await consumer_info(nats_server.url, stream_name, CONSUMER)
        missing = sorted(set(range(1, COUNT + 1)) - set(recorded(record)))
        stored = set(await stored_quotes(nats_server.url, stream_name))
        outputs_stored = [n for n in missing if n + OFFSET in stored]
        raise AssertionError(
            f"kills at {points}: {len(missing)} outputs missing (first {missing[:10]}); "
            f"consumer pending {info.num_pending}, ack pending {info.num_ack_pending}, "
            f"redelivered {info.num_redelivered}, dead-lettered "
            f"{await dead_lettered(nats_server.url, stream_name)}; of the missing, outputs "
            f"stored in the stream: {outputs_stored}"
        ) from None
    await asyncio.sleep(0.5)  # a late repeat would show up now
    peer.stop()
    seqs = recorded(record)
    lost = sorted(set(range(1, COUNT + 1)) - set(seqs))
    found = {"outputs": len(seqs), "repeats": len(seqs) - COUNT, "reordered": reordered(seqs)}
    print(f"{mode} seed {seed}: kills at {points}: {found}")
    assert not lost, f"{len(lost)} inputs' outputs never recorded, first {lost[:20]}"
    assert all(s <= OFFSET for s in seqs)
    # A kill repeats what the process held: inputs (each re-emits its output) and outputs.
    assert found["repeats"] <= len(points) * 2 * MAX_ACK_PENDING, found
    assert await dead_lettered(nats_server.url, stream_name) == 0
