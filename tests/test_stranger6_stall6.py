"""Stranger round 6, stall6: stalled event loops and stalled processes on the NATS transports.

A parcel-sorting line (``tests/peers/stall6_line.py``): an induction belt publishes numbered
parcels, a sorter consumes them. Each test runs a private ``nats-server -js`` on a free port
(``nats_server``, stopped at teardown) and real peer processes on 127.0.0.1, which are
stalled (``time.sleep`` in a handler, past ``ack_wait_s``), SIGSTOPped and SIGCONTed, or
shut down while a handler is stuck. What the README promises (Delivery guarantees, NATS core
and JetStream rows; Closing) is counted: lost (must be 0), repeated (at least once, counted
as ``redelivered``), reordered, the queue's bound, and VmRSS from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from peers.harness import NatsServer, Peer, Peers, until
from peers.inlet import ListInlet
from peers.stall6_line import Parcel, parcel

from mycelium_mono import MessageBus, MessageHandler, ServiceRuntime
from mycelium_mono.bus.transports.nats import NatsTransport
from mycelium_mono.bus.transports.wire import MAX_FRAME, decode_body

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]

SUBJECT = "stall6.parcels.47601"
DURABLE = "sorter"
CONSUMER = "sorter-stall6_parcels-47601"


def recorded(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


async def induct(url: str, stream: str, first: int, last: int) -> None:
    pub = NatsTransport(url, jetstream=True, stream=stream)
    await pub.start(ListInlet())
    try:
        for seq in range(first, last + 1):
            await pub.publish(parcel(seq))
        await pub.flush()
    finally:
        await pub.close()


async def stored_seqs(url: str, stream: str) -> list[int]:
    """Every parcel in the stream, in stream order (an ephemeral pull from the start)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        want = info.state.messages
        psub = await js.pull_subscribe(SUBJECT, stream=stream)
        seqs: list[int] = []
        async with asyncio.timeout(30):
            while len(seqs) < want:
                for m in await psub.fetch(500, timeout=2):
                    result = decode_body(m.data, m.subject, MAX_FRAME)
                    assert not hasattr(result, "reason"), result
                    seqs.append(result.message.seq)  # type: ignore[union-attr]
                    await m.ack()
        return seqs
    finally:
        await nc.close()


def sorter(peers: Peers, server: NatsServer, stream: str, record: Path, *extra: str) -> Peer:
    return peers.spawn(
        "stall6_line", "sorter", "--url", server.url, "--stream", stream,
        "--durable", DURABLE, "--record", str(record), *extra, name="sorter",
    )  # fmt: skip


async def stats(peer: Peer) -> dict[str, Any]:
    peer.send("STATS")
    return await peer.aresult(timeout=30)


def first_seen_order(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    order = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            order.append(s)
    return order


def check_counts(
    seqs: list[int], count: int, result: dict[str, Any], *, ordered: bool = True
) -> int:
    """Lost 0, first arrivals in belt order, every repeat counted; returns the repeats.

    ``ordered=False`` after a consumer process ended with parcels unsettled: those come
    again after newer ones (README: "a message redelivered after a crash comes after newer
    ones")."""
    lost = sorted(set(range(1, count + 1)) - set(seqs))
    assert not lost, f"{len(lost)} parcels lost, first {lost[:20]}"
    if ordered:
        assert first_seen_order(seqs) == list(range(1, count + 1)), "first arrivals reordered"
    repeats = len(seqs) - count
    print(f"stall6: {count} parcels, repeats {repeats}, stats {result}")
    # Each repeat handled is a redelivery, and redeliveries are counted (README: "counted as
    # `redelivered`"); some fetched redeliveries may be of parcels not yet handled once.
    assert result.get("redelivered", 0) >= repeats, (result, repeats)
    assert result["high_water"] <= result["maxsize"], result
    return repeats


# -- a handler that blocks its event loop past ack_wait ------------------------------------


async def test_a_sorter_whose_loop_stalls_past_ack_wait_loses_nothing_and_counts_repeats(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    count = 3000
    record = tmp_path / "sorted.txt"
    await induct(nats_server.url, stream_name, 1, count)
    peer = sorter(
        peers, nats_server, stream_name, record, "--ack-wait", "1.0", "--fetch-batch", "64",
        "--maxsize", "50", "--work-ms", "0.5", "--stall-at", "200,1500,2600", "--stall-s", "2.5",
    )  # fmt: skip
    await peer.aexpect("READY", timeout=60)
    await peer.aexpect("STALLING", timeout=60)
    await until(lambda: len(set(recorded(record))) >= 600, timeout=60)
    early = await stats(peer)
    await until(lambda: len(set(recorded(record))) >= count, timeout=120)
    await asyncio.sleep(2.0)  # past ack_wait: anything redelivered late shows up now
    late = await stats(peer)
    seqs = recorded(record)
    # Three stalls of 2.5 x ack_wait: what a pull waiting meanwhile took is redelivered
    # (64 repeats, all counted, in the runs seen); a late ack still counts at the server.
    check_counts(seqs, count, late)
    assert late.get("dead_lettered", 0) == 0, late
    growth = late["vmrss_kib"] - early["vmrss_kib"]
    assert growth < 8 * 1024, f"VmRSS grew {growth} KiB over 2400 parcels and two stalls"
    info = await consumer_info(nats_server.url, stream_name)
    assert info.num_pending == 0 and info.num_ack_pending == 0, info
    peer.send("QUIT")


async def consumer_info(url: str, stream: str) -> Any:
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().consumer_info(stream, CONSUMER)
    finally:
        await nc.close()


# -- a sorter process SIGSTOPped and SIGCONTed ---------------------------------------------


async def test_a_sigstopped_sorter_resumes_and_loses_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    count = 3000
    record = tmp_path / "sorted.txt"
    await induct(nats_server.url, stream_name, 1, count)
    peer = sorter(
        peers, nats_server, stream_name, record, "--ack-wait", "1.0", "--fetch-batch", "64",
        "--maxsize", "50", "--work-ms", "1",
    )  # fmt: skip
    await peer.aexpect("READY", timeout=60)
    for at in (400, 1600):
        await until(lambda a=at: len(set(recorded(record))) >= a, timeout=60)
        peer.proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(3.0)  # 3 x ack_wait, stopped mid-batch
        peer.proc.send_signal(signal.SIGCONT)
    await until(lambda: len(set(recorded(record))) >= count, timeout=120)
    await asyncio.sleep(2.0)
    result = await stats(peer)
    # Repeats are allowed, not required: a stopped process sends no pull request, so once
    # resumed it usually acks its batch (late acks count) before the server can redeliver.
    check_counts(recorded(record), count, result)
    info = await consumer_info(nats_server.url, stream_name)
    assert info.num_pending == 0 and info.num_ack_pending == 0, info
    peer.send("QUIT")


# -- a JetStream publisher SIGSTOPped with PubAcks outstanding -----------------------------


async def test_an_induction_belt_sigstopped_between_publish_and_puback_stores_each_once(
    peers: Peers, nats_server: NatsServer, stream_name: str
) -> None:
    count = 4000
    belt = peers.spawn(
        "stall6_line", "induct", "--url", nats_server.url, "--stream", stream_name,
        "--count", str(count), "--pause-at", "2000", name="induct",
    )  # fmt: skip
    import json

    paused = json.loads(await belt.aexpect("PAUSING", timeout=60))
    await until(lambda: _state(belt.proc.pid) == "T", timeout=10)
    print(f"stall6 induct: paused {paused}")
    assert paused["unacked"] > 0, "no PubAck was outstanding: the stop was not mid-burst"
    await asyncio.sleep(3.5)  # past ack_timeout_s (2 s): resumed, it re-sends the unconfirmed
    belt.proc.send_signal(signal.SIGCONT)
    result = await belt.aresult(timeout=60)
    assert belt.proc.wait(timeout=30) == 0
    seqs = await stored_seqs(nats_server.url, stream_name)
    assert seqs == list(range(1, count + 1)), (
        f"stored {len(seqs)}, unique {len(set(seqs))}, result {result}"
    )
    assert result.get("publish_failed", 0) == 0, result


def _state(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return "?"


# -- core NATS: a slow sorter drops and counts; the belt never waits ------------------------


async def test_a_slow_core_sorter_counts_every_drop_and_the_belt_never_blocks(
    peers: Peers, nats_server: NatsServer
) -> None:
    count = 30_000
    slow = peers.spawn(
        "stall6_line", "core-sorter", "--url", nats_server.url, "--maxsize", "50",
        "--pending-limit", "200", "--slow-ms", "2", name="core-sorter",
    )  # fmt: skip
    await slow.aexpect("READY", timeout=60)
    belt = peers.spawn(
        "stall6_line", "core-induct", "--url", nats_server.url, "--count", str(count),
        name="core-induct",
    )  # fmt: skip
    sent = await belt.aresult(timeout=120)
    assert sent["sent"] == count
    assert sent["slowest_s"] < 0.5, f"a core publish waited {sent['slowest_s']:.3f}s"
    grew = sent["vmrss_after_kib"] - sent["vmrss_before_kib"]
    assert grew < 16 * 1024, f"the belt grew {grew} KiB publishing to a slow sorter"
    # The sorter drains what it buffered (at most maxsize + pending_limit + one batch), then stops.
    last = -1
    result: dict[str, Any] = {}
    async with asyncio.timeout(60):
        while True:
            result = await stats(slow)
            if result["got"] == last and result["queued"] == 0:
                break
            last = result["got"]
            await asyncio.sleep(1.0)
    print(f"stall6 core: belt {sent}, sorter {result}")
    assert result["unique"] == result["got"] and result["ordered"], result
    assert result["high_water"] <= 50, result
    assert result["dropped_overflow"] > 0, result
    # At most once, and counted: each parcel it did not get is one client-buffer drop.
    assert result["got"] + result["dropped_overflow"] == count, result
    slow.send("QUIT")


# -- runtime.shutdown() while a JetStream handler is stalled --------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_shutdown_with_a_stalled_handler_loses_nothing_acked(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, kind: str
) -> None:
    count = 600
    record = tmp_path / "sorted.txt"
    await induct(nats_server.url, stream_name, 1, count)
    common = ("--ack-wait", "3.0", "--fetch-batch", "64", "--maxsize", "50")
    first = sorter(
        peers, nats_server, stream_name, record, *common, "--work-ms", "0.2",
        "--stall-at", "150", "--stall-s", "4", "--stall-kind", kind,
    )  # fmt: skip
    await first.aexpect("READY", timeout=60)
    assert await first.aexpect("STALLING", timeout=60) == "150"
    # sync: the loop is blocked, the command is read once the stall ends (inside ack_wait);
    # async: shutdown's 1 s runs out and the stalled handler is cancelled.
    first.send("SHUTDOWN 1.0")
    first_stats = await first.aresult(timeout=30)
    assert first.proc.wait(timeout=30) == 0
    handled_first = recorded(record)
    assert (150 in handled_first) == (kind == "sync"), handled_first[-5:]
    info = await consumer_info(nats_server.url, stream_name)
    acked = info.ack_floor.stream_seq
    # Nothing acked that was not handled: everything up to the ack floor was sorted.
    unhandled_acked = sorted(set(range(1, acked + 1)) - set(handled_first))
    assert not unhandled_acked, f"acked and never sorted: {unhandled_acked[:20]}"
    second = sorter(peers, nats_server, stream_name, record, *common)
    await second.aexpect("READY", timeout=60)
    with contextlib.suppress(AssertionError):  # a loss is reported below, with its parcels
        await until(lambda: len(set(recorded(record))) >= count, timeout=30)
    result = await stats(second)
    second.send("QUIT")
    # A repeat may be the first sorter's own: the parcels it sorted just before a sync stall
    # could not be acked while its loop was blocked past ack_wait, so the server handed them
    # out again, and the first fetched some before its shutdown (3.13 CI, once: 1 repeat,
    # counted by the first, 0 by the second). Each repeat is still a counted redelivery.
    result["redelivered"] = result.get("redelivered", 0) + first_stats.get("redelivered", 0)
    check_counts(recorded(record), count, result, ordered=False)


class Sorted(MessageHandler[Parcel]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, p: Parcel) -> None:
        time.sleep(0.0005)
        self.seen.append(p.seq)


async def test_a_batch_fetched_after_shutdown_closed_the_subscriptions_is_not_acked(
    nats_server: NatsServer, stream_name: str
) -> None:
    """In one process, deterministic: the consumer is mid-fetch when shutdown() finds the
    service idle and closes its subscription; that batch used to be acked unhandled."""
    count = 3000
    await induct(nats_server.url, stream_name, 1, count)

    async def run_sorter(until_handled: int) -> list[int]:
        bus = MessageBus.with_nats(
            nats_server.url, jetstream=True, stream=stream_name, name=DURABLE, fetch_batch=64,
            ack_wait_s=1.0,
        )  # fmt: skip
        runtime = ServiceRuntime(bus, maxsize=100)
        sorted_ = Sorted()
        await runtime.spawn_service(sorted_)
        await bus.ready()
        with contextlib.suppress(AssertionError):  # a loss is reported below
            await until(lambda: len(set(sorted_.seen)) >= until_handled, timeout=20)
        await runtime.shutdown()
        return sorted_.seen

    first = await run_sorter(300)
    info = await consumer_info(nats_server.url, stream_name)
    acked = info.ack_floor.stream_seq
    assert acked <= len(set(first)), f"acked up to {acked}, handled {len(set(first))}"
    second = await run_sorter(count - acked)
    lost = sorted(set(range(1, count + 1)) - set(first) - set(second))
    assert not lost, f"{len(lost)} lost, first {lost[:10]}"


async def test_a_closed_raw_subscription_leaves_new_parcels_in_the_stream(
    nats_server: NatsServer, stream_name: str
) -> None:
    """Every subscription of a type closed while the bus runs: what arrives then is kept for
    the next consumer (it used to be acked, lost for good), and the pull stops."""
    bus = MessageBus.with_nats(
        nats_server.url, jetstream=True, stream=stream_name, name=DURABLE, ack_wait_s=1.0
    )
    try:
        sub = bus.subscribe(Parcel)
        await bus.ready()
        await induct(nats_server.url, stream_name, 1, 5)
        async with asyncio.timeout(10):
            got = [(await sub.recv()).seq for _ in range(5)]
        sub.ack()
        assert got == [1, 2, 3, 4, 5]
        sub.close()
        await induct(nats_server.url, stream_name, 6, 40)
        await asyncio.sleep(1.5)
        info = await consumer_info(nats_server.url, stream_name)
        assert info.ack_floor.stream_seq == 5, info
        received = bus.transport.stats.received
        await asyncio.sleep(1.5)  # held, not fetched on and not redelivered in a loop
        assert bus.transport.stats.received == received
        again = bus.subscribe(Parcel)
        async with asyncio.timeout(20):
            rest = []
            while len(set(rest)) < 35:
                rest.append((await again.recv()).seq)
        again.ack()
        assert sorted(set(rest)) == list(range(6, 41))
    finally:
        await bus.close()


def test_pid_state_reader_works_on_this_process() -> None:
    assert _state(os.getpid()) in {"R", "S"}
