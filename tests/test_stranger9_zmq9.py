"""ZeroMQ transport in a game server's shape: a simulation streams Snapshots to viewers.

A stranger's check of README "Across processes" and "Delivery guarantees" (ZeroMQ rows) with
real processes (``tests/zmq9_peers/node.py``: sim, relay or viewer) on 127.0.0.1: a sim
restarted at a *new* port, a relay SIGKILLed at seeded random points in a three-process
chain, a relay SIGSTOPped longer than the keepalive that finds dead peers, a viewer stalled
longer than the ZMTP heartbeat timeout, and a hostile peer speaking the protocol with the
wrong type ids beside an honest sim on the same topic. Every stream is checked per
(sim, incarnation) for lost, repeated and reordered messages.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import zmq
from peers.harness import Peer, Peers, free_port, until
from zmq9_peers.arena import PlayerInput, Relayed, Snapshot

from mycelium_mono import MessageBus
from mycelium_mono.bus.transports.base import CallbackInlet
from mycelium_mono.bus.transports.wire import HEADER, Outbound, endpoint_token, wire_type
from mycelium_mono.bus.transports.zmq import ZmqTransport

pytestmark = [pytest.mark.network, pytest.mark.multiprocess]


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    """Processes from ``tests/zmq9_peers``; every one is killed at teardown."""
    p = Peers(tmp_path, package="zmq9_peers")
    try:
        yield p
    finally:
        p.close()


class Ledger:
    """Per ``"sim/run"`` stream: first and last seq, count, lost (holes), back (repeats)."""

    def __init__(self) -> None:
        self.per: dict[str, dict[str, int]] = {}

    def deliver(self, msg: Any) -> None:
        key = f"{msg.sim}/{msg.run}"
        s = self.per.get(key)
        if s is None:
            self.per[key] = {"first": msg.seq, "last": msg.seq, "count": 1, "lost": 0, "back": 0}
            return
        if msg.seq > s["last"] + 1:
            s["lost"] += msg.seq - s["last"] - 1
        elif msg.seq <= s["last"]:
            s["back"] += 1
        s["last"] = max(s["last"], msg.seq)
        s["count"] += 1

    def last(self, key: str) -> int:
        s = self.per.get(key)
        return 0 if s is None else s["last"]


def assert_clean(name: str, s: dict[str, int], first: int = 1) -> None:
    """``s`` began at ``first`` and holds every seq up to its last, once, in order."""
    want = s["last"] - first + 1
    assert (s["first"], s["lost"], s["back"], s["count"]) == (first, 0, 0, want), (
        f"{name}: first={s['first']} (want {first}) lost={s['lost']} repeated or "
        f"reordered={s['back']} count={s['count']} (want {want})"
    )


def node(peers: Peers, *args: str, name: str | None = None) -> Peer:
    return peers.spawn("node", *args, name=name)


# -- a sim restarted at a new port: the old address is forgotten, its next owner not heard ----


async def test_a_sim_restarted_at_a_new_port_is_forgotten_and_its_old_port_is_not_heard(
    peers: Peers,
) -> None:
    """Before ``disconnect_from`` a viewer could not drop a peer: after its sim came back at
    another port, ZeroMQ kept redialling the old one, ``ready()`` for a new subscription
    waited for the dead peer, and an unrelated server that bound the old port next was
    subscribed to and its Snapshots delivered as if from this game."""
    sim1 = node(peers, "--publish", "0", "--sim", "1", "--hwm", "5000")
    old = await sim1.aexpect("READY")
    ledger = Ledger()
    # Quick redials: the old address would be dialled every 100 ms if it were still a peer.
    bus = MessageBus.with_tcp(
        "127.0.0.1:0", hwm=5000, reconnect_ms=50, reconnect_max_ms=100, ready_timeout_s=5
    )
    view = bus.subscribe(Snapshot, maxsize=100_000)

    async def consume() -> None:
        async for msg in view:
            ledger.deliver(msg)

    consumer = asyncio.get_running_loop().create_task(consume())
    try:
        await bus.connect_to(old)
        await bus.ready()
        sim1.send("GO")
        await until(lambda: ledger.last("1/1") >= 2000, timeout=20)
        sim1.kill()
        sim2 = node(peers, "--publish", "0", "--sim", "2", "--hwm", "5000",
                    "--wait-subscribers", "1")  # fmt: skip
        new = await sim2.aexpect("BOUND")
        await bus.disconnect_from(old)
        await bus.connect_to(new)
        await bus.ready()
        await until(lambda: ledger.last("2/1") >= 1000, timeout=20)
        transport = bus.transport
        assert isinstance(transport, ZmqTransport)
        assert transport.peers == [new], transport.peers
        # A new subscription needs only the live peer's acknowledgement (it timed out
        # waiting for the dead one).
        bus.subscribe(PlayerInput)
        await bus.ready()
        # An unrelated game server takes the freed port and streams to whoever subscribes.
        sim3 = node(peers, "--bind", old, "--publish", "0", "--sim", "3", "--hwm", "5000")
        assert await sim3.aexpect("READY") == old
        sim3.send("GO")
        # Nothing can signal "never": watch for 1 s (ten redial intervals) while sim 2 streams.
        loop = asyncio.get_running_loop()
        watch_until, seen = loop.time() + 1.0, ledger.last("2/1")
        await until(
            lambda: loop.time() >= watch_until and ledger.last("2/1") >= seen + 2000, timeout=20
        )
    finally:
        consumer.cancel()
        with suppress(asyncio.CancelledError):
            await consumer
        await bus.close()
    assert set(ledger.per) == {"1/1", "2/1"}, (
        f"the viewer heard {sorted(ledger.per)}: '3/1' is the server that took the old port"
    )
    assert_clean("sim 1", ledger.per["1/1"])
    assert_clean("sim 2 (new port)", ledger.per["2/1"])


async def test_disconnect_from_an_address_never_connected_is_a_no_op() -> None:
    t = ZmqTransport("127.0.0.1:0")
    await t.start(CallbackInlet(lambda _m: None))
    try:
        await t.disconnect_from(f"127.0.0.1:{free_port()}")
        assert t.peers == []
    finally:
        await t.close()
    with pytest.raises(RuntimeError, match="before start"):
        await t.disconnect_from("127.0.0.1:1")


# -- a three-process chain: the relay SIGKILLed at seeded random points and restarted ---------


@pytest.mark.parametrize("seed", [91, 92])
async def test_a_relay_killed_at_random_points_loses_only_what_it_held_and_repeats_nothing(
    peers: Peers, seed: int
) -> None:
    """sim → relay → viewer; the relay is SIGKILLed three times and restarted on its port.
    Each relay incarnation's stream reaches the viewer gapless from 1 and in order, and so
    does the slice of the sim's stream it relayed; the slices never overlap (nothing is
    relayed twice: a dead subscriber is a new one when it returns, no replay)."""
    rng = random.Random(seed)
    sim = node(peers, "--publish", "0", "--hwm", "5000")
    upstream = await sim.aexpect("READY")
    bind = f"127.0.0.1:{free_port()}"
    relay_args = ("--bind", bind, "--connect", upstream, "--relay", "--sim", "2", "--every", "500")
    relay = node(peers, *relay_args, "--run", "1")
    await relay.aexpect("READY")
    viewer = node(peers, "--connect", bind, "--view", "relayed", "--every", "1000000")
    await viewer.aexpect("READY")
    sim.send("GO")
    kills = [rng.randint(1, 6) for _ in range(3)]  # in relay GOT lines (500 Snapshots each)
    for run, kill_after in enumerate(kills, start=1):
        for _ in range(kill_after):
            await relay.aexpect("GOT", timeout=20)
        relay.kill()
        # It waits for the viewer's subscription before it takes any Snapshot in.
        relay = node(peers, *relay_args, "--run", str(run + 1), "--wait-subscribers", "1")
        await relay.aexpect("READY", timeout=20)
    for _ in range(4):
        await relay.aexpect("GOT", timeout=20)
    await asyncio.sleep(0.3)  # a straggler or a repeat would arrive now
    viewer.send("STATS")
    result = await viewer.aresult(timeout=20)
    streams = result["streams"]
    runs = len(kills) + 1
    assert set(streams) == {f"2/{r}" for r in range(1, runs + 1)} | {
        f"origin1@2/{r}" for r in range(1, runs + 1)
    }, f"seed {seed} kills {kills}: {sorted(streams)}"
    previous_last = 0
    for r in range(1, runs + 1):
        assert_clean(f"seed {seed} kills {kills}: relay run {r}", streams[f"2/{r}"])
        origin = streams[f"origin1@2/{r}"]
        assert_clean(f"seed {seed}: sim stream via relay run {r}", origin, first=origin["first"])
        assert origin["first"] > previous_last, (
            f"seed {seed}: relay run {r} relayed sim seq {origin['first']} again "
            f"(run {r - 1} got to {previous_last})"
        )
        previous_last = origin["last"]
    assert result["sequence_gaps"] == 0 and result.get("duplicates", 0) == 0, result
    assert result["publishers_seen"] == runs and result["dropped_malformed"] == 0


# -- a stalled relay: SIGSTOP longer than the keepalive that finds dead peers -----------------


async def test_a_relay_stopped_longer_than_the_keepalive_loses_nothing_end_to_end(
    peers: Peers,
) -> None:
    """README: ZMTP heartbeats are off and "a dead peer is found by TCP keepalive instead"
    (``keepalive_s``). With ``keepalive_s=1`` everywhere (a dead peer is given up after about
    4 s: 1 s idle, 3 probes 1 s apart) the relay is SIGSTOPped for 5 s mid-stream: a stopped
    process's kernel still answers the probes, so nobody disconnects and the lossless chain
    delivers every Snapshot, once, in order, after the stall."""
    count = 40_000
    sim = node(peers, "--publish", str(count), "--hwm", "2000", "--keepalive", "1")
    upstream = await sim.aexpect("READY")
    relay = node(peers, "--connect", upstream, "--relay", "--sim", "2", "--hwm", "2000",
                 "--keepalive", "1", "--every", "2000")  # fmt: skip
    relay_address = await relay.aexpect("READY")
    viewer = node(peers, "--connect", relay_address, "--view", "relayed", "--hwm", "2000",
                  "--keepalive", "1", "--every", str(count))  # fmt: skip
    await viewer.aexpect("READY")
    sim.send("GO")
    await relay.aexpect("GOT", timeout=20)
    os.kill(relay.proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(5.0)  # the stall itself: longer than the keepalive's ~4 s
    finally:
        os.kill(relay.proc.pid, signal.SIGCONT)
    await viewer.aexpect("GOT", timeout=30)  # the count-th Relayed arrived
    published = await sim.aexpect("PUBLISHED", timeout=30)
    await asyncio.sleep(0.3)
    viewer.send("STATS")
    result = await viewer.aresult(timeout=20)
    assert f'"count": {count}' in published
    assert_clean("relay stream", result["streams"]["2/1"])
    assert_clean("sim stream via the relay", result["streams"]["origin1@2/1"])
    assert result["streams"]["2/1"]["last"] == count, result["streams"]
    assert result["sequence_gaps"] == 0 and result.get("duplicates", 0) == 0, result


# -- heartbeats on: a viewer stalled past their timeout misses frames, counted there --------


async def test_with_heartbeats_a_viewer_stalled_past_their_timeout_counts_every_frame_missed(
    peers: Peers,
) -> None:
    """``heartbeat_ms=200``: the publisher hangs up on a viewer silent for 600 ms. Stopped
    for 2 s, the viewer misses what the lossless sim published meanwhile (the sim keeps
    going: nobody is subscribed). README (fixed here): that loss is counted at the viewer,
    exactly, and nowhere else; before, the README promised lossless delivery regardless."""
    sim = node(peers, "--publish", "0", "--hwm", "5000", "--heartbeat-ms", "200")
    address = await sim.aexpect("READY")
    viewer = node(peers, "--connect", address, "--view", "snapshot", "--hwm", "5000",
                  "--heartbeat-ms", "200", "--every", "5000")  # fmt: skip
    await viewer.aexpect("READY")
    sim.send("GO")
    await viewer.aexpect("GOT", timeout=20)
    os.kill(viewer.proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(2.0)  # the stall: more than 3 x heartbeat_ms
    finally:
        os.kill(viewer.proc.pid, signal.SIGCONT)
    # Back: it reconnects, subscribes again and the stream goes on.
    for _ in range(4):
        await viewer.aexpect("GOT", timeout=20)
    viewer.send("STATS")
    result = await viewer.aresult(timeout=20)
    sim.send("STATS")
    sim_stats = await sim.aresult(timeout=20)
    s = result["streams"]["1/1"]
    assert viewer.proc.poll() is None and sim.proc.poll() is None, "a process died"
    assert s["first"] == 1 and s["back"] == 0, s
    assert s["lost"] > 0, f"the stall cost nothing: did the heartbeat not fire? {result}"
    # Every frame missed is counted at the viewer, and the stream accounts for all seqs.
    assert result["messages_missed"] == s["lost"], result
    assert result["sequence_gaps"] >= 1
    assert s["count"] + s["lost"] == s["last"]
    assert sim_stats["dropped_overflow"] == 0, sim_stats  # the publisher reports nothing


# -- a hostile peer with the wrong type ids, beside an honest sim on the same topic ----------


def wrong_type_frames(out: Outbound, seq: int) -> dict[str, bytes]:
    """Frames that speak the protocol but name the wrong type somewhere.

    Built with a scratch encoder under the same publisher id, so they consume none of the
    valid stream's sequence numbers (that stream's header seqs stay 1, 2, 3...)."""
    out = Outbound(publisher=out.publisher)
    sp, rp = wire_type(Snapshot).prefix, wire_type(Relayed).prefix
    snap = out.frame(Snapshot(seq=seq, sim=9, run=1, x=1.0, y=2.0))
    rel = out.frame(Relayed(seq=seq, sim=9, run=1, origin_seq=1, origin_run=1))
    other = wire_type(PlayerInput)
    other_header = HEADER.pack(b"MY", 1, 0, other.type_id, other.fingerprint, out.publisher, seq)
    other_body = PlayerInput(seq=seq, player=1).to_bytes()
    data_flagged_ack = bytearray(snap)
    data_flagged_ack[len(sp) + 3] |= 0x01
    return {
        # Relayed's header and body under the Snapshot prefix (the engine's filter passes it).
        "relayed_under_snapshot_prefix": sp + rel[len(rp) :],
        # Snapshot's prefix and header with PlayerInput's type id (a type the viewer knows).
        "header_type_id_of_another_type": sp + other_header + other_body,
        # A Snapshot with its payload, flagged as an acknowledgement.
        "data_flagged_as_ack": bytes(data_flagged_ack),
        # An unknown type id under the Snapshot prefix.
        "unknown_type_id": sp + HEADER.pack(b"MY", 1, 0, 39399, 1, out.publisher, seq) + b"x" * 24,
    }


async def test_a_peer_with_wrong_type_ids_is_counted_and_an_honest_sim_on_the_topic_is_whole(
    peers: Peers,
) -> None:
    count = 3000
    honest = node(peers, "--publish", str(count), "--sim", "1", "--hwm", "5000")
    honest_address = await honest.aexpect("READY")
    ctx: zmq.Context[Any] = zmq.Context()
    hostile = ctx.socket(zmq.XPUB)
    hostile.setsockopt(zmq.SNDHWM, 0)
    hostile.bind("tcp://127.0.0.1:0")
    hostile_address = hostile.getsockopt_string(zmq.LAST_ENDPOINT)
    out = Outbound()
    ledger = Ledger()
    viewer = ZmqTransport("127.0.0.1:0", hwm=5000)
    await viewer.start(CallbackInlet(ledger.deliver))
    viewer.subscribe(Snapshot)
    try:
        await viewer.connect_to(honest_address)
        await viewer.connect_to(hostile_address)
        event = await asyncio.to_thread(hostile.recv)
        assert event == b"\x01" + wire_type(Snapshot).prefix
        # An acknowledgement of the Snapshot prefix carrying Relayed's type id is no ack.
        sp = wire_type(Snapshot).prefix
        hostile.send(sp + HEADER.pack(b"MY", 1, 1, Relayed.TYPE_ID, wire_type(Relayed).fingerprint,
                                      out.publisher, endpoint_token(hostile_address)))  # fmt: skip
        with pytest.raises(TimeoutError, match=r"arena\.39301"):
            await viewer.ready(timeout=1.0)
        hostile.send(out.ack(sp, Snapshot.TYPE_ID, endpoint_token(hostile_address)))
        await viewer.ready(timeout=10)
        honest.send("GO")
        sent: dict[str, int] = {}
        for seq in range(1, count + 1):
            hostile.send(out.frame(Snapshot(seq=seq, sim=9, run=1, x=0.0, y=0.0)))
            for kind, frame in wrong_type_frames(out, seq).items():
                hostile.send(frame)
                sent[kind] = sent.get(kind, 0) + 1
            if seq % 200 == 0:
                await asyncio.sleep(0.001)
        await until(lambda: ledger.last("1/1") >= count and ledger.last("9/1") >= count, 30)
        await asyncio.sleep(0.2)
    finally:
        await viewer.close()
        hostile.close(0)
        ctx.term()
    assert set(ledger.per) == {"1/1", "9/1"}, sorted(ledger.per)
    assert_clean("honest sim", ledger.per["1/1"])
    assert_clean("hostile peer's valid Snapshots", ledger.per["9/1"])
    stats = viewer.stats
    broken = sum(sent.values())
    counted = stats.dropped_malformed + stats.dropped_unknown_type
    # ... and the wrong-type acknowledgement, one more.
    assert counted == broken + 1, f"{broken} + 1 wrong-type frames sent, {counted} counted: {stats}"
    assert stats.dropped_unknown_type == sent["unknown_type_id"], stats
    assert stats.extra["drop_bad_prefix"] == 1 + 2 * count, stats  # the bad ack and two kinds
    assert stats.received == 2 * count and stats.sequence_gaps == 0, stats
