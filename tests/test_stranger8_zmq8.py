"""ZeroMQ transport attacked with real peer processes: SIGKILL, SIGSTOP, restarts, garbage.

A stranger's check of README "Across processes" / "Delivery guarantees" (the ZeroMQ rows):
lossless by default, order per publisher, a restarted publisher is a new incarnation whose
sequence starts afresh (no false gap, no false duplicate), a dead subscriber is a new one
when it returns (no replay, but nothing published after its ``ready()`` is lost), a stalled
subscriber holds the publisher at the HWM with bounded memory, broken frames are dropped and
counted. Peers are ``tests/zmq8_peers``; every stream is checked per (publisher, incarnation)
for lost, repeated and reordered messages. Kill points come from seeded RNGs (the seed is
in the test id), so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from peers.common import memory_kib
from peers.harness import Peer, Peers, free_port, until
from peers.inlet import CallInlet
from peers.messages import Tick

from mycelium_mono import MessageBus
from mycelium_mono.bus.transports.wire import wire_type
from mycelium_mono.bus.transports.zmq import ZmqTransport

pytestmark = [pytest.mark.network, pytest.mark.multiprocess]


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    """Peer processes from ``tests/zmq8_peers``; all killed at teardown, whatever happened."""
    p = Peers(tmp_path, package="zmq8_peers")
    try:
        yield p
    finally:
        p.close()


class Ledger:
    """Per (tag, run) stream: first and last seq, count, lost (holes) and back steps."""

    def __init__(self) -> None:
        self.streams: dict[tuple[int, int], dict[str, int]] = {}

    def deliver(self, msg: Any) -> None:
        assert isinstance(msg, Tick)
        key = (msg.value, int.from_bytes(msg.blob, "little"))
        s = self.streams.get(key)
        if s is None:
            self.streams[key] = {"first": msg.seq, "last": msg.seq, "count": 1, "lost": 0,
                                 "back": 0}  # fmt: skip
            return
        if msg.seq > s["last"] + 1:
            s["lost"] += msg.seq - s["last"] - 1
        elif msg.seq <= s["last"]:
            s["back"] += 1  # repeated or reordered: both break "per publisher, in order"
        s["last"] = max(s["last"], msg.seq)
        s["count"] += 1

    def last(self, tag: int, run: int) -> int:
        s = self.streams.get((tag, run))
        return 0 if s is None else s["last"]


def assert_clean(name: str, s: dict[str, int], first: int = 1) -> None:
    """Stream ``s`` began at ``first`` and has every seq up to its last, once, in order."""
    expected = s["last"] - first + 1
    assert (s["first"], s["lost"], s["back"], s["count"]) == (first, 0, 0, expected), (
        f"{name}: first={s['first']} (want {first}), lost={s['lost']}, repeated or "
        f"reordered={s['back']}, count={s['count']} for seqs {first}..{s['last']} "
        f"(want {expected})"
    )


def latest_progress(peer: Peer, seen: int) -> int:
    """The highest ``PROGRESS n`` the peer printed so far (reads what is queued, no wait)."""
    while True:
        try:
            line = peer.lines.get_nowait()
        except queue.Empty:
            return seen
        if line is None:
            peer.lines.put(None)
            return seen
        if line.startswith("PROGRESS"):
            seen = max(seen, int(line.split()[1]))


def spawn_pub(peers: Peers, bind: str, tag: int, run: int, *extra: str) -> Peer:
    # Paced (1 ms every 200 frames): a stream, not a CPU hog on a shared 2-core machine.
    return peers.spawn(
        "pub", "--bind", bind, "--tag", str(tag), "--run", str(run), "--hwm", "5000",
        "--pause-every", "200", *extra, name=f"pub{tag}-{run}",
    )  # fmt: skip


# -- a publisher SIGKILLed and restarted, beside a second publisher that keeps going ----------


@pytest.mark.parametrize("seed", [81, 82])
async def test_a_publisher_killed_and_restarted_at_random_points_loses_nothing_new(
    peers: Peers, seed: int
) -> None:
    rng = random.Random(seed)
    kill_points = [rng.randint(200, 6000) for _ in range(3)]
    final = 4000
    bind_a = f"127.0.0.1:{free_port()}"
    a = spawn_pub(peers, bind_a, 1, 1)
    b = spawn_pub(peers, "127.0.0.1:0", 2, 1)
    ledger = Ledger()
    sub = ZmqTransport("127.0.0.1:0", hwm=5000)
    await sub.start(CallInlet(ledger.deliver))
    sub.subscribe(Tick)
    try:
        await sub.connect_to(await a.aexpect("READY"))
        await sub.connect_to(await b.aexpect("READY"))
        await sub.ready(timeout=30)
        a.send("GO")
        b.send("GO")
        for run, kill_at in enumerate(kill_points, start=1):
            await until(lambda r=run, k=kill_at: ledger.last(1, r) >= k, timeout=30)
            a.kill()
            # Same port, new incarnation: the SUB reconnects by itself, the new process
            # waits for that subscription and then streams from seq 1 again.
            count = str(final) if run == len(kill_points) else "0"
            a = spawn_pub(peers, bind_a, 1, run + 1, "--count", count, "--wait-subscribers", "1")
        await until(lambda: ledger.last(1, len(kill_points) + 1) >= final, timeout=60)
        b.kill()
        await asyncio.sleep(0.3)  # a duplicate or a late straggler would arrive now
    finally:
        await sub.close()
    runs = len(kill_points) + 1
    assert set(ledger.streams) == {(1, r) for r in range(1, runs + 1)} | {(2, 1)}, (
        f"seed {seed}: streams heard {sorted(ledger.streams)}"
    )
    for (tag, run), s in sorted(ledger.streams.items()):
        assert_clean(f"seed {seed} publisher {tag} run {run}", s)
    assert ledger.streams[(1, runs)]["last"] == final
    for run, kill_at in enumerate(kill_points, start=1):
        assert ledger.streams[(1, run)]["last"] >= kill_at
    extra = sub.stats.extra
    assert sub.stats.sequence_gaps == 0, f"seed {seed}: false gaps {extra}"
    assert extra.get("duplicates", 0) == 0 and extra.get("sequence_out_of_range", 0) == 0
    assert extra["publishers_seen"] == runs + 1
    assert sub.stats.dropped_malformed == 0


async def test_a_publisher_restarted_under_a_full_block_subscriber_loses_nothing_new(
    peers: Peers,
) -> None:
    """The subscriber consumes through ``MessageBus.with_tcp`` into a 20-slot "block"
    subscriber that is mostly full, so its SUB is often not read (back-pressure) while the
    publisher is SIGKILLed and restarted: the SUB must still re-subscribe, and the new
    incarnation's stream arrives whole after the old one's queued tail."""
    bind = f"127.0.0.1:{free_port()}"
    first = spawn_pub(peers, bind, 1, 1)
    ledger = Ledger()
    bus = MessageBus.with_tcp("127.0.0.1:0", hwm=2000)
    sub = bus.subscribe(Tick, maxsize=20, policy="block")

    async def consume() -> None:
        async for msg in sub:
            ledger.deliver(msg)
            if ledger.streams and sum(s["count"] for s in ledger.streams.values()) % 50 == 0:
                await asyncio.sleep(0.001)  # a consumer slower than the stream

    consumer = asyncio.get_running_loop().create_task(consume())
    try:
        await bus.start()
        await bus.connect_to(await first.aexpect("READY"))
        await bus.ready()
        first.send("GO")
        await until(lambda: ledger.last(1, 1) >= 3000, timeout=30)
        first.kill()
        second = spawn_pub(peers, bind, 1, 2, "--count", "6000", "--wait-subscribers", "1")
        await until(lambda: ledger.last(1, 2) >= 6000, timeout=60)
        await second.aresult()
        await asyncio.sleep(0.3)
    finally:
        consumer.cancel()
        with suppress(asyncio.CancelledError):
            await consumer
        await bus.close()
    assert set(ledger.streams) == {(1, 1), (1, 2)}
    assert_clean("first incarnation", ledger.streams[(1, 1)])
    assert_clean("second incarnation", ledger.streams[(1, 2)])
    assert ledger.streams[(1, 2)]["last"] == 6000
    stats = bus.transport.stats
    assert stats.sequence_gaps == 0 and stats.extra.get("duplicates", 0) == 0, stats
    assert stats.extra["backpressure_waits"] > 0, "the block subscriber never filled up"


async def test_a_publisher_killed_and_restarted_while_its_subscriber_is_stopped(
    peers: Peers,
) -> None:
    """The subscriber is SIGSTOPped with the old incarnation's frames still in its queues
    when the publisher is SIGKILLed and restarted. Once it runs again it gets a gapless
    prefix of the old stream, then the whole new one: no false gap, none repeated."""
    bind = f"127.0.0.1:{free_port()}"
    first = spawn_pub(peers, bind, 1, 1, "--hwm", "2000")
    address = await first.aexpect("READY")
    sub = peers.spawn("sub", "--connect", address, "--hwm", "2000", "--until", "5000",
                      "--key", "1/2", "--every", "1000")  # fmt: skip
    await sub.aexpect("READY")
    first.send("GO")
    await sub.aexpect("GOT", timeout=30)
    os.kill(sub.proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(0.5)  # the queues between them fill up
        first.kill()
        second = spawn_pub(peers, bind, 1, 2, "--hwm", "2000", "--count", "5000",
                           "--wait-subscribers", "1")  # fmt: skip
        await second.aexpect("READY")
        await asyncio.sleep(0.5)  # the new one waits: the stopped SUB cannot reconnect yet
    finally:
        os.kill(sub.proc.pid, signal.SIGCONT)
    result = await sub.aresult(timeout=60)
    await second.aresult()
    streams = result["streams"]
    assert set(streams) == {"1/1", "1/2"}, streams
    old, new = streams["1/1"], streams["1/2"]
    assert (old["first"], old["bad"], old["count"]) == (1, 0, old["last"]), old
    assert (new["first"], new["last"], new["count"], new["bad"]) == (1, 5000, 5000, 0), new
    assert result["sequence_gaps"] == 0 and result.get("duplicates", 0) == 0, result
    assert result["publishers_seen"] == 2


# -- a subscriber SIGKILLed and restarted: a new subscriber, but nothing lost after ready() -----


@pytest.mark.parametrize("seed", [83])
async def test_a_subscriber_killed_and_restarted_gets_everything_after_its_ready(
    peers: Peers, seed: int
) -> None:
    rng = random.Random(seed)
    pub = ZmqTransport("127.0.0.1:0", hwm=5000)
    await pub.start(CallInlet(lambda _m: None))
    published = [0]

    async def stream() -> None:
        while True:
            published[0] += 1
            await pub.publish(Tick(seq=published[0], value=1, blob=(1).to_bytes(32, "little")))
            if published[0] % 200 == 0:
                await asyncio.sleep(0.001)

    streaming = asyncio.get_running_loop().create_task(stream())
    result: dict[str, Any] = {}
    stop = at_ready = live = 0
    try:
        for round_ in range(4):
            sub = peers.spawn("sub", "--connect", pub.address, "--every", "500",
                              name=f"sub{round_}")  # fmt: skip
            await sub.aexpect("READY")
            # Every seq above this one was published after the subscriber's ready() returned.
            at_ready = published[0]
            if round_ < 3:
                await sub.aexpect("GOT", timeout=30)
                kill_after = rng.randint(1, 8)  # GOT lines come every 500 messages
                for _ in range(kill_after - 1):
                    await sub.aexpect("GOT", timeout=30)
                sub.kill()
                continue
            await until(lambda a=at_ready: published[0] >= a + 5000, timeout=30)
            stop = published[0]
            # Three dead subscribers withdrew their subscriptions: only the live one counts.
            live = pub.subscriber_count(wire_type(Tick).prefix)
            sub.send(f"UNTIL {stop}")
            result = await sub.aresult(timeout=60)
    finally:
        streaming.cancel()
        with suppress(asyncio.CancelledError):
            await streaming
        await pub.close()
    (s,) = result["streams"].values()
    assert s["first"] <= at_ready + 1, (
        f"seed {seed}: the restarted subscriber's first message was {s['first']}, but "
        f"{at_ready + 1}.. were published after its ready() returned"
    )
    span = s["last"] - s["first"] + 1
    assert (s["bad"], s["count"]) == (0, span), f"seed {seed}: {s} (want {span}, none bad)"
    assert s["last"] >= stop
    assert result["sequence_gaps"] == 0 and result.get("duplicates", 0) == 0
    assert result["publishers_seen"] == 1
    assert live == 1, f"the publisher counts {live} subscribers after three were SIGKILLed"


# -- a subscriber SIGSTOPped: the lossless publisher waits at the HWM, memory bounded ------------


@contextmanager
def rss_of(pid: int) -> Iterator[list[int]]:
    """Sample ``pid``'s VmRSS every 20 ms; yields ``[peak KiB]`` (final once the block exits)."""
    peak, done = [memory_kib(pid=pid)], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            with suppress(FileNotFoundError, AssertionError):
                peak[0] = max(peak[0], memory_kib(pid=pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join(timeout=5)


COUNT_STOPPED = 200_000
HWM_STOPPED = 20_000
RSS_GROWTH_BOUND_KB = 64 * 1024
"""The publisher's queue holds at most ``hwm`` frames of ~100 bytes (a few MiB with libzmq's
per-message overhead), plus the kernel's socket buffers: 64 MiB is far above a bounded queue
and far below 200,000 frames piling up unbounded in Python objects."""


async def test_a_stopped_subscriber_holds_the_publisher_at_the_hwm_and_loses_nothing(
    peers: Peers,
) -> None:
    pub = spawn_pub(peers, "127.0.0.1:0", 1, 1, "--count", str(COUNT_STOPPED),
                    "--hwm", str(HWM_STOPPED))  # fmt: skip
    address = await pub.aexpect("READY")
    sub = peers.spawn("sub", "--connect", address, "--until", str(COUNT_STOPPED),
                      "--hwm", str(HWM_STOPPED), "--every", "5000")  # fmt: skip
    await sub.aexpect("READY")
    base = memory_kib(pid=pub.proc.pid)
    pub.send("GO")
    await sub.aexpect("GOT", timeout=30)
    os.kill(sub.proc.pid, signal.SIGSTOP)
    try:
        with rss_of(pub.proc.pid) as peak:
            await asyncio.sleep(1.5)  # the queues between them fill up
            held = latest_progress(pub, 0)
            await asyncio.sleep(2.0)
            still = latest_progress(pub, held)
    finally:
        os.kill(sub.proc.pid, signal.SIGCONT)
    result = await sub.aresult(timeout=60)
    stats = await pub.aresult(timeout=30)
    pub.send("QUIT")
    assert held < COUNT_STOPPED and still == held, (
        f"the publisher went on from {held} to {still} of {COUNT_STOPPED} while its only "
        "subscriber was stopped: lossless mode must wait at the HWM"
    )
    growth = peak[0] - base
    assert growth < RSS_GROWTH_BOUND_KB, f"publisher RSS grew {growth} KiB while blocked"
    (s,) = result["streams"].values()
    assert (s["first"], s["last"], s["count"], s["bad"]) == (1, COUNT_STOPPED, COUNT_STOPPED, 0)
    assert result["sequence_gaps"] == 0 and result.get("duplicates", 0) == 0
    assert stats["sent"] == COUNT_STOPPED and stats["dropped_overflow"] == 0
    assert stats["hwm_waits"] > 0


async def test_a_stopped_subscriber_killed_frees_the_publisher_and_the_other_loses_nothing(
    peers: Peers,
) -> None:
    """Lossless: one stopped subscriber holds the publisher for everyone (NODROP: all
    matching pipes or none); once it is SIGKILLed, the publisher goes on and the live
    subscriber has every message, in order, once."""
    total = 60_000
    pub = ZmqTransport("127.0.0.1:0", hwm=1000)
    await pub.start(CallInlet(lambda _m: None))
    stopped = peers.spawn("sub", "--connect", pub.address, "--hwm", "1000", "--until", "1")
    live = peers.spawn("sub", "--connect", pub.address, "--hwm", "1000",
                       "--until", str(total), "--every", "2000")  # fmt: skip
    published = [0]

    async def stream() -> None:
        for seq in range(1, total + 1):
            await pub.publish(Tick(seq=seq, value=1, blob=(1).to_bytes(32, "little")))
            published[0] = seq

    try:
        await stopped.aexpect("READY")
        await live.aexpect("READY")
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        streaming = asyncio.get_running_loop().create_task(stream())
        await asyncio.sleep(1.0)  # the stopped one's pipe and socket buffers fill up
        held = published[0]
        await asyncio.sleep(1.0)
        assert published[0] == held < total, (
            f"lossless publisher went on ({held} -> {published[0]}) past a stopped subscriber"
        )
        stopped.kill()  # SIGKILL works on a stopped process; its TCP connection closes
        await asyncio.wait_for(streaming, 30)
        result = await live.aresult(timeout=60)
    finally:
        await pub.close()
    (s,) = result["streams"].values()
    assert (s["first"], s["last"], s["count"], s["bad"]) == (1, total, total, 0), s
    assert result["sequence_gaps"] == 0 and result.get("duplicates", 0) == 0
    assert pub.stats.dropped_overflow == 0 and pub.stats.sent == total


async def test_a_stopped_lossy_subscriber_sees_exactly_the_drops_its_publisher_counted(
    peers: Peers,
) -> None:
    """Lossy: what a SIGSTOPped subscriber missed is dropped and counted at the publisher
    (``dropped_overflow``) and, once it runs again, counted as gaps at the subscriber
    (``messages_missed``): the two agree, and what arrived is in order, once."""
    total = 80_000
    pub = ZmqTransport("127.0.0.1:0", hwm=500, lossless=False)
    await pub.start(CallInlet(lambda _m: None))
    sub = peers.spawn("sub", "--connect", pub.address, "--hwm", "500",
                      "--until", str(total), "--every", "5000")  # fmt: skip
    try:
        await sub.aexpect("READY")
        seq = 0
        for seq in range(1, total - 200 + 1):
            await pub.publish(Tick(seq=seq, value=1, blob=(1).to_bytes(32, "little")))
            if seq == 5000:
                os.kill(sub.proc.pid, signal.SIGSTOP)
            if seq % 500 == 0:
                await asyncio.sleep(0.001)
        os.kill(sub.proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.5)  # it drains what its queues held
        for seq in range(total - 199, total + 1):  # slowly: these all fit, the last one arrives
            await pub.publish(Tick(seq=seq, value=1, blob=(1).to_bytes(32, "little")))
            await asyncio.sleep(0.001)
        result = await sub.aresult(timeout=60)
    finally:
        with suppress(ProcessLookupError):
            os.kill(sub.proc.pid, signal.SIGCONT)
        await pub.close()
    (s,) = result["streams"].values()
    dropped = pub.stats.dropped_overflow
    assert dropped > 0, "the stop was too short to fill the queues: nothing was dropped"
    assert (s["first"], s["last"]) == (1, total), s
    assert s["count"] == pub.stats.sent == total - dropped, (s, pub.stats)
    assert result["messages_missed"] == dropped, (result, pub.stats)
    assert s["back"] == 0, f"{s['back']} repeated or reordered"
    assert result.get("duplicates", 0) == 0


# -- lossy mode: a stopped subscriber never makes the publisher wait -----------------------


async def test_a_lossy_publisher_never_waits_behind_an_ack_a_stopped_subscriber_holds_up(
    peers: Peers,
) -> None:
    """README, ``lossless=False``: back-pressure "none at the publisher (drops instead)".

    A stopped subscriber's full pipe holds up the acknowledgement a second subscriber's
    subscription needs (XPUB_NODROP sends a frame to all matching pipes or none). Before
    the fix every later message queued behind that acknowledgement: ``publish`` blocked
    until the stopped process ran again and ``publish_nowait`` grew the backlog without
    bound (100,002 frames held, none dropped or counted).
    """
    pub = ZmqTransport("127.0.0.1:0", hwm=100, lossless=False)
    await pub.start(CallInlet(lambda _m: None))
    stopped = peers.spawn("sub", "--connect", pub.address, "--hwm", "100", "--until", "1")
    late = ZmqTransport("127.0.0.1:0", hwm=100)
    await late.start(CallInlet(lambda _m: None))
    late.subscribe(Tick)
    seq = 0
    try:
        await stopped.aexpect("READY")
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        streak = 0
        while streak < 5000:  # 5,000 drops in a row: its pipe and socket buffers are full
            seq += 1
            sent = pub.stats.sent
            await asyncio.wait_for(pub.publish(Tick(seq=seq, value=1, blob=bytes(32))), 5)
            streak = 0 if pub.stats.sent > sent else streak + 1
            if seq % 1000 == 0:
                await asyncio.sleep(0.001)  # let libzmq's I/O thread move what it can
        await late.connect_to(pub.address)
        await pub.wait_for_subscribers(2, Tick)
        dropped = pub.stats.dropped_overflow
        for _ in range(1000):
            seq += 1
            await asyncio.wait_for(pub.publish(Tick(seq=seq, value=1, blob=bytes(32))), 2)
        for _ in range(20_000):
            seq += 1
            pub.publish_nowait(Tick(seq=seq, value=1, blob=bytes(32)))
        held = len(pub._backlog)  # what waits in this process is the point
        assert held <= 2, f"lossy publisher holds {held} frames in its backlog"
        # Every message was sent or dropped and counted: none is held back.
        assert pub.stats.sent + pub.stats.dropped_overflow == seq, pub.stats
        assert pub.stats.dropped_overflow > dropped
    finally:
        os.kill(stopped.proc.pid, signal.SIGCONT)
        await late.close()
        await pub.close()


# -- a hostile peer: broken frames dropped and counted, the rest delivered ---------------------


@contextmanager
def garbage_tcp_server(seed: int) -> Iterator[str]:
    """A TCP port that answers every connection with random bytes, then hangs up."""
    rng = random.Random(seed)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, suppress(OSError):
                conn.sendall(rng.randbytes(rng.randint(1, 300)))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


NOT_FORWARDED = {"valid", "no_nul"}
"""``no_nul`` matches no subscription prefix, so the publisher's XPUB never sends it."""


@pytest.mark.parametrize("seed", [84])
async def test_broken_frames_from_a_peer_are_counted_and_the_other_streams_arrive(
    peers: Peers, seed: int
) -> None:
    hostile = peers.spawn("garbage", "--count", "3000", "--every", "100", "--seed", str(seed))
    good = spawn_pub(peers, "127.0.0.1:0", 2, 1, "--count", "20000")
    ledger = Ledger()
    sub = ZmqTransport("127.0.0.1:0", hwm=5000)
    await sub.start(CallInlet(ledger.deliver))
    sub.subscribe(Tick)
    try:
        with garbage_tcp_server(seed) as noise:
            await sub.connect_to(await hostile.aexpect("READY"))
            await sub.connect_to(await good.aexpect("READY"))
            await sub.ready(timeout=30)
            # A port that does not even speak ZMTP: libzmq hangs up and retries, forever.
            await sub.connect_to(noise)
            hostile.send("GO")
            good.send("GO")
            sent = await hostile.aresult()
            await until(lambda: ledger.last(2, 1) >= 20_000 and ledger.last(9, 0) >= 3000, 60)
            await asyncio.sleep(0.3)
    finally:
        await sub.close()
    assert set(ledger.streams) == {(2, 1), (9, 0)}
    assert_clean("good publisher", ledger.streams[(2, 1)])
    assert_clean("hostile peer's valid frames", ledger.streams[(9, 0)])
    assert ledger.streams[(9, 0)]["last"] == sent["valid"] == 3000
    broken = sum(n for kind, n in sent.items() if kind not in NOT_FORWARDED)
    counted = sub.stats.dropped_malformed + sub.stats.dropped_unknown_type
    assert counted == broken, f"{broken} broken frames sent, {counted} counted: {sub.stats}"
    assert sub.stats.dropped_unknown_type == sent["unknown_type"]
    assert sub.stats.received == 23_000 and sub.stats.sequence_gaps == 0
    assert sub.stats.extra.get("drop_bad_prefix", 0) == 0  # no_nul was filtered upstream
