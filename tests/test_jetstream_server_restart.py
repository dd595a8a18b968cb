"""The NATS server itself SIGKILLed and restarted under a running JetStream stage.

A stage (``tests/peers/js_stage.py``: Tick in, Quote out, one durable consumer) works
through the stream of a private ``nats-server -js``; at a seed-chosen point of its ack floor
the server is SIGKILLed and, after a seed-chosen pause, restarted on the same port and store.
The stage reconnects by itself. Counted: every Tick has a Quote (0 lost), nothing
dead-lettered, nothing left pending, no Quote stored twice under one message id (the
re-sent publishes are deduplicated across the restart), and the repeats.

What a server crash adds to a stage crash: the server writes its consumer state to disk a
moment after an ack, so a SIGKILL can roll back acks it had already counted (measured: 15
to 64 inputs at or below the ack floor read just before the kill were delivered again), and
repeats can exceed ``max_ack_pending`` (80 to 128 with a window of 64).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from peers.harness import NatsServer, Peers
from test_jetstream_stage_crash import (
    COUNT,
    QUOTES,
    Stage,
    consumer_info,
    dead_lettered,
    publish_ticks,
    until_acked,
    wait_settled,
)

from mycelium_mono.bus.transports.wire import HEADER, MAX_FRAME, Decoded, decode_body

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]


async def stored_quote_ids(url: str, stream: str) -> list[tuple[int, int, int]]:
    """(Tick seq, publisher, wire seq) of every stored Quote: the last two are its msg id."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream, subjects_filter=QUOTES)
        expected = (info.state.subjects or {}).get(QUOTES, 0)
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        psub = await js.pull_subscribe(QUOTES, stream=stream, config=config)
        rows: list[tuple[int, int, int]] = []
        async with asyncio.timeout(30):
            while len(rows) < expected:
                for m in await psub.fetch(1000, timeout=5.0):
                    *_, publisher, wire_seq = HEADER.unpack_from(m.data)
                    decoded = decode_body(m.data, QUOTES, MAX_FRAME)
                    assert isinstance(decoded, Decoded) and decoded.message is not None
                    rows.append((int(decoded.message.seq), publisher, wire_seq))
        return rows
    finally:
        await nc.close()


@pytest.mark.parametrize(("mode", "seed"), [("sync", 4), ("async", 77)])
async def test_a_server_restart_under_a_running_stage_loses_no_output(
    peers: Peers, nats_server: NatsServer, stream_name: str, mode: str, seed: int
) -> None:
    rng = random.Random(seed)
    await publish_ticks(nats_server.url, stream_name, COUNT)
    stage = Stage(mode, slow_ms=1.0)
    worker = peers.spawn("js_stage", *stage.args(nats_server, stream_name))
    await worker.aexpect("READY", timeout=60)
    await until_acked(nats_server.url, stream_name, rng.randrange(COUNT // 5, COUNT // 2))
    before = await consumer_info(nats_server.url, stream_name, "relay-dist_test-4001")
    nats_server.kill()
    await asyncio.sleep(rng.uniform(0.2, 2.0))
    nats_server.start()
    await wait_settled(nats_server.url, stream_name, timeout=90)
    assert worker.proc.poll() is None, worker.stderr_tail()
    worker.stop()
    rows = await stored_quote_ids(nats_server.url, stream_name)
    seqs = Counter(seq for seq, _, _ in rows)
    lost = sorted(set(range(1, COUNT + 1)) - set(seqs))
    assert not lost, f"{len(lost)} Ticks have no Quote, first {lost[:20]}"
    assert set(seqs) == set(range(1, COUNT + 1))
    ids = Counter((publisher, wire_seq) for _, publisher, wire_seq in rows)
    assert max(ids.values()) == 1, "a re-sent Quote was stored twice under one message id"
    assert await dead_lettered(nats_server.url, stream_name) == 0
    info = await consumer_info(nats_server.url, stream_name, "relay-dist_test-4001")
    assert info.num_pending == 0 and info.num_ack_pending == 0, info
    repeats = len(rows) - COUNT
    floor = before.ack_floor.stream_seq
    rolled_back = sum(1 for seq, n in seqs.items() if n > 1 and seq <= floor)
    print(f"{mode}: {repeats} repeats; {rolled_back} acked before the kill, delivered again")
    # The window (max_ack_pending) plus the acks the server had not written yet.
    assert repeats <= 3 * stage.max_ack_pending, f"{repeats} repeats"
