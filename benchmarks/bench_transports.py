"""Distributed transports: publisher cost, delivered throughput, round-trip latency.

Three groups, each a table of ratios (read ratios, not times: shared 2-core machine):

- **"transport: publisher cost, per message"** — what ``publish`` costs the publishing
  process: encode the frame (prefix, header, fixed layout) and hand it to the engine, a
  batch of ``BATCH`` per call. A subscriber in another OS process drains every message,
  so nothing is filtered away before the send. Reference: the benchmark loop alone; the
  ZeroMQ rows carry the design's bar, *adds at most 10 µs per message*. A raw pyzmq
  ``send`` of a prebuilt frame is the engine's floor.
- **"transport: delivered throughput, per message"** — publish ``BATCH`` messages and wait
  until a subscriber *in the same process and event loop* has received and decoded all of
  them: publisher and subscriber share one core, so this is the full CPU cost of one
  delivered message (1 / throughput). JetStream includes storage acks and per-message
  consumer acks. The ``via bus`` rows (issue 12) deliver through a ``MessageBus``
  subscriber read by a consumer task: JetStream acks each message only when the consumer
  asks for the next one (ack after processing), and the ZeroMQ ``maxsize=64`` row runs
  with the subscriber's bound pushing back on the publisher all the time.
- **"transport: round trip"** — one message to an echo peer in another OS process and its
  answer back; each call is one round trip, the note gives p50/p99 over every round.

The NATS rows use the server at 127.0.0.1:4222 (JetStream streams are named per run and
deleted afterwards). Run: ``python benchmarks/report.py -k bench_transports``.

This file is also the echo peer: ``python benchmarks/bench_transports.py echo ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium_mono import F64, U64, Bytes32, MessageBus, message
from mycelium_mono.bus.transports.base import CallbackInlet, Transport
from mycelium_mono.bus.transports.nats import NatsTransport
from mycelium_mono.bus.transports.wire import Outbound, wire_type
from mycelium_mono.bus.transports.zmq import ZmqTransport

BATCH = 1_000
NATS_URL = "nats://127.0.0.1:4222"
ROUND_TRIPS = 1_000
KINDS = ("zmq-tcp", "zmq-ipc", "nats-core", "nats-jetstream")
"""The transports the throughput and round-trip groups compare; ``zmq-tcp`` is the reference."""


@message(type_id=48090, topic="bench_transport")
class Ping:
    seq: U64
    sent: F64
    pad: Bytes32


@message(type_id=48091, topic="bench_transport")
class Pong:
    seq: U64
    sent: F64
    pad: Bytes32


Calls = CallbackInlet


def ignore(msg: Any) -> None:
    return None


MESSAGES = tuple(Ping(seq=i, sent=0.0, pad=bytes(32)) for i in range(BATCH))


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def ipc_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-zmq-") as tmp:
        yield Path(tmp)


def spawn_drain(endpoint: str) -> subprocess.Popen[bytes]:
    """A raw SUB in another process, draining the Ping prefix from ``endpoint``."""
    prefix = wire_type(Ping).prefix
    code = (
        "import zmq,sys\n"
        "s=zmq.Context().socket(zmq.SUB);s.setsockopt(zmq.RCVHWM,0)\n"
        f"s.setsockopt(zmq.SUBSCRIBE,{prefix!r});s.connect({endpoint!r})\n"
        "while True: s.recv()\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def spawn_echo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "echo", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_word(proc: subprocess.Popen[str], word: str) -> str:
    """The rest of the echo peer's next line, which must start with ``word``."""
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != word:
        proc.kill()
        raise RuntimeError(f"echo peer said {line!r}, expected {word}")
    return line[1] if len(line) > 1 else ""


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.kill()
    proc.wait(timeout=10)


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(coro)


# -- publisher cost -----------------------------------------------------------------------

PUB = "transport: publisher cost, per message"
ZMQ_BAR = {"vs": "loop only", "adds_at_most": 10e-6}


@pytest.mark.benchmark(group=PUB)
def test_publish_loop_only(benchmark: Any) -> None:
    def batch() -> None:
        for _m in MESSAGES:
            pass

    benchmark.extra_info.update(label="loop only", ops=BATCH, reference=True)
    benchmark(batch)


@pytest.mark.benchmark(group=PUB)
def test_publish_raw_pyzmq_send(benchmark: Any) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    drain = spawn_drain(f"tcp://127.0.0.1:{port}")
    try:
        sock.recv()  # the drain's subscription arrived
        frame = Outbound().frame(MESSAGES[0])

        def batch() -> None:
            for _ in MESSAGES:
                sock.send(frame, zmq.NOBLOCK)

        benchmark.extra_info.update(
            label="raw pyzmq send of a prebuilt frame (engine floor)", ops=BATCH
        )
        benchmark(batch)
    finally:
        stop(drain)
        sock.close(0)
        ctx.term()


def zmq_publisher(loop: asyncio.AbstractEventLoop, bind: str) -> ZmqTransport:
    t = ZmqTransport(bind, hwm=0)  # unbounded: the cost of sending, not of waiting
    run(loop, t.start(Calls(ignore)))
    return t


@pytest.mark.benchmark(group=PUB)
@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_publish_zmq_publish_nowait(
    benchmark: Any, loop: asyncio.AbstractEventLoop, ipc_dir: Path, kind: str
) -> None:
    bind = "127.0.0.1:0" if kind == "tcp" else f"ipc://{ipc_dir}/pub-{uuid.uuid4().hex}.ipc"
    t = zmq_publisher(loop, bind)
    drain = spawn_drain(t.endpoint)
    try:
        run(loop, t.wait_for_subscribers(1, Ping, timeout=30))

        async def batch() -> None:
            for m in MESSAGES:
                t.publish_nowait(m)

        benchmark.extra_info.update(
            label=f"ZeroMQ {kind}: publish_nowait (encode + NOBLOCK send)",
            ops=BATCH,
            bar=ZMQ_BAR,
        )
        benchmark(lambda: run(loop, batch()))
    finally:
        stop(drain)
        run(loop, t.close())


@pytest.mark.benchmark(group=PUB)
def test_publish_zmq_await_publish(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    t = zmq_publisher(loop, "127.0.0.1:0")
    drain = spawn_drain(t.endpoint)
    try:
        run(loop, t.wait_for_subscribers(1, Ping, timeout=30))

        async def batch() -> None:
            for m in MESSAGES:
                await t.publish(m)

        benchmark.extra_info.update(label="ZeroMQ tcp: await publish", ops=BATCH, bar=ZMQ_BAR)
        benchmark(lambda: run(loop, batch()))
    finally:
        stop(drain)
        run(loop, t.close())


@pytest.mark.benchmark(group=PUB)
@pytest.mark.parametrize("jetstream", [False, True], ids=["core", "jetstream"])
def test_publish_nats(benchmark: Any, loop: asyncio.AbstractEventLoop, jetstream: bool) -> None:
    stream = fresh_stream_name()
    t = NatsTransport(NATS_URL, jetstream=jetstream, stream=stream)
    run(loop, t.start(Calls(ignore)))
    try:

        async def batch() -> None:
            for m in MESSAGES:
                await t.publish(m)
            await t.flush()  # JetStream: every message of the batch stored and acknowledged

        what = "JetStream: await publish, flush per batch" if jetstream else "core: await publish"
        benchmark.extra_info.update(label=f"NATS {what}", ops=BATCH)
        benchmark(lambda: run(loop, batch()))
    finally:
        if jetstream:
            run(loop, delete_stream(stream))
        run(loop, t.close())


def fresh_stream_name() -> str:
    """A JetStream stream name no other run uses (each benchmark deletes its own afterwards)."""
    return f"BENCH_{uuid.uuid4().hex[:10].upper()}"


async def delete_stream(name: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


# -- delivered throughput -----------------------------------------------------------------

THROUGHPUT = "transport: delivered throughput, per message"


def pair(
    loop: asyncio.AbstractEventLoop, make: Callable[[], Transport]
) -> tuple[Transport, Transport, list[int]]:
    counter = [0]

    def deliver(msg: Any) -> None:
        counter[0] += 1

    pub, sub = make(), make()
    run(loop, pub.start(Calls(ignore)))
    run(loop, sub.start(Calls(deliver)))
    sub.subscribe(Ping)
    if isinstance(pub, ZmqTransport) and isinstance(sub, ZmqTransport):
        run(loop, sub.connect_to(pub.endpoint))
    run(loop, sub.ready())
    return pub, sub, counter


async def publish_and_wait(pub: Transport, counter: list[int]) -> None:
    target = counter[0] + BATCH
    for m in MESSAGES:
        await pub.publish(m)
    if isinstance(pub, NatsTransport):
        await pub.flush()
    while counter[0] < target:
        await asyncio.sleep(0)


@pytest.mark.benchmark(group=THROUGHPUT)
@pytest.mark.parametrize("kind", KINDS)
def test_throughput(
    benchmark: Any, loop: asyncio.AbstractEventLoop, ipc_dir: Path, kind: str
) -> None:
    stream = fresh_stream_name()

    def make() -> Transport:
        if kind == "zmq-tcp":
            return ZmqTransport("127.0.0.1:0")
        if kind == "zmq-ipc":
            return ZmqTransport(f"ipc://{ipc_dir}/{uuid.uuid4().hex}.ipc")
        return NatsTransport(NATS_URL, jetstream=kind == "nats-jetstream", stream=stream)

    pub, sub, counter = pair(loop, make)
    try:
        benchmark.extra_info.update(
            label=f"{kind}: publish → decoded at the subscriber",
            ops=BATCH,
            reference=kind == "zmq-tcp",
        )
        benchmark(lambda: run(loop, publish_and_wait(pub, counter)))
        assert sub.stats.sequence_gaps == 0
    finally:
        if kind == "nats-jetstream":
            run(loop, delete_stream(stream))
        run(loop, pub.close())
        run(loop, sub.close())


BUS_ROWS = [
    ("zmq-tcp", 10_000, "ZeroMQ tcp via bus subscriber (maxsize=10000)"),
    ("zmq-tcp", 64, "ZeroMQ tcp via bus subscriber, maxsize=64: back-pressure throughout"),
    ("nats-jetstream", 10_000, "JetStream via bus subscriber: acked after processing"),
]


@pytest.mark.benchmark(group=THROUGHPUT)
@pytest.mark.parametrize(("kind", "maxsize", "label"), BUS_ROWS, ids=[r[2] for r in BUS_ROWS])
def test_throughput_via_bus(
    benchmark: Any, loop: asyncio.AbstractEventLoop, kind: str, maxsize: int, label: str
) -> None:
    stream = fresh_stream_name()

    def make() -> Transport:
        if kind == "zmq-tcp":
            return ZmqTransport("127.0.0.1:0", hwm=1000)
        return NatsTransport(NATS_URL, jetstream=True, stream=stream, name="bench")

    pub = make()
    run(loop, pub.start(Calls(ignore)))
    bus = MessageBus(make())
    sub = bus.subscribe(Ping, maxsize=maxsize, policy="block")
    run(loop, bus.start())
    if isinstance(pub, ZmqTransport):
        run(loop, bus.connect_to(pub.endpoint))
    run(loop, bus.ready())
    counter = [0]

    async def consume() -> None:
        async for _ in sub:  # the next recv() is what acknowledges the previous message
            counter[0] += 1

    consumer = loop.create_task(consume())
    try:
        benchmark.extra_info.update(label=label, ops=BATCH)
        benchmark(lambda: run(loop, publish_and_wait(pub, counter)))
        assert sub.stats.high_water <= maxsize
    finally:
        if kind == "nats-jetstream":
            run(loop, delete_stream(stream))
        run(loop, pub.close())
        run(loop, bus.close())
        consumer.cancel()


# -- round trip ---------------------------------------------------------------------------

RTT = "transport: round trip"


class Pinger:
    """Sends one Ping, waits for its Pong, records the latency."""

    def __init__(self, loop: asyncio.AbstractEventLoop, t: Transport) -> None:
        self.loop = loop
        self.t = t
        self.waiter: asyncio.Future[None] | None = None
        self.latencies: list[float] = []
        self.seq = 0

    def on_pong(self, msg: Any) -> None:
        if isinstance(msg, Pong) and msg.seq == self.seq and self.waiter is not None:
            self.latencies.append(time.perf_counter() - msg.sent)
            self.waiter.set_result(None)

    async def once(self) -> None:
        self.seq += 1
        self.waiter = self.loop.create_future()
        await self.t.publish(Ping(seq=self.seq, sent=time.perf_counter(), pad=bytes(32)))
        if isinstance(self.t, NatsTransport) and self.t.jetstream:
            await self.t.flush()
        await asyncio.wait_for(self.waiter, 10)

    def note(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return f"p50 {p50 * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs over {len(lat)}"


def rtt_setup(
    loop: asyncio.AbstractEventLoop, kind: str, ipc_dir: Path, stream: str
) -> tuple[Pinger, subprocess.Popen[str]]:
    if kind.startswith("zmq"):
        bind = "127.0.0.1:0" if kind == "zmq-tcp" else f"ipc://{ipc_dir}/{uuid.uuid4().hex}.ipc"
        z = ZmqTransport(bind)
        pinger = Pinger(loop, z)
        run(loop, z.start(Calls(pinger.on_pong)))
        echo_bind = bind if kind == "zmq-tcp" else f"ipc://{ipc_dir}/{uuid.uuid4().hex}.ipc"
        proc = spawn_echo("--engine", "zmq", "--bind", echo_bind, "--peer", z.endpoint)
        z.subscribe(Pong)
        run(loop, z.connect_to(read_word(proc, "ADDR")))
        # Keep our loop running while the echo's handshake completes, then read READY.
        run(loop, z.ready())
        run(loop, z.wait_for_subscribers(1, Ping, timeout=30))
        read_word(proc, "READY")
        return pinger, proc
    jetstream = kind == "nats-jetstream"
    t = NatsTransport(NATS_URL, jetstream=jetstream, stream=stream)
    pinger = Pinger(loop, t)
    run(loop, t.start(Calls(pinger.on_pong)))
    t.subscribe(Pong)
    run(loop, t.ready())
    args = ["--engine", "nats", "--stream", stream] + (["--jetstream"] if jetstream else [])
    proc = spawn_echo(*args)
    read_word(proc, "READY")
    return pinger, proc


@pytest.mark.benchmark(group=RTT)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(
    benchmark: Any, loop: asyncio.AbstractEventLoop, ipc_dir: Path, kind: str
) -> None:
    stream = fresh_stream_name()
    pinger, proc = rtt_setup(loop, kind, ipc_dir, stream)
    try:
        for _ in range(50):  # warm-up: connections, consumers, first-use allocations
            run(loop, pinger.once())
        pinger.latencies.clear()
        benchmark.pedantic(lambda: run(loop, pinger.once()), rounds=ROUND_TRIPS, warmup_rounds=0)
        benchmark.extra_info.update(
            label=f"{kind}: Ping → echo process → Pong",
            reference=kind == "zmq-tcp",
            note=pinger.note(),
        )
    finally:
        stop(proc)
        if kind == "nats-jetstream":
            run(loop, delete_stream(stream))
        run(loop, pinger.t.close())


# -- the echo peer --------------------------------------------------------------------------


async def echo(args: argparse.Namespace) -> None:
    t: Transport
    if args.engine == "zmq":
        t = ZmqTransport(args.bind)
    else:
        t = NatsTransport(NATS_URL, jetstream=args.jetstream, stream=args.stream)

    def on_ping(msg: Any) -> None:
        t.publish_nowait(Pong(seq=msg.seq, sent=msg.sent, pad=msg.pad))

    await t.start(Calls(on_ping))
    t.subscribe(Ping)
    if isinstance(t, ZmqTransport):
        await t.connect_to(args.peer)
        print("ADDR", t.endpoint, flush=True)
    await t.ready()
    if isinstance(t, ZmqTransport):
        await t.wait_for_subscribers(1, Pong, timeout=30)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await t.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["echo"])
    parser.add_argument("--engine", choices=["zmq", "nats"], required=True)
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--peer", default="")
    parser.add_argument("--jetstream", action="store_true")
    parser.add_argument("--stream", default="BENCH")
    asyncio.run(echo(parser.parse_args()))
