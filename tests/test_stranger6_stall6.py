"""stall6: a graceful shutdown while a JetStream handler is stalled loses nothing acked.

Needs NATS with JetStream at 127.0.0.1:4222 (``nats-server -js``).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import nats

from mycelium_mono import U32, U64, MessageBus, MessageHandler, ServiceRuntime, message
from mycelium_mono.bus.transports.nats import NatsTransport
from tests.peers.inlet import ListInlet

URL = "nats://127.0.0.1:4222"
N = 3000


@message(type_id=47601, topic="stall6.parcels")
class Parcel:
    line: U32
    seq: U64
    chute: U32


class Sorter(MessageHandler[Parcel]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, p: Parcel) -> None:
        time.sleep(0.0005)  # a handler that blocks the event loop
        self.seen.append(p.seq)


def _require_nats() -> None:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as exc:
        raise AssertionError("needs NATS at 127.0.0.1:4222: run `nats-server -js`") from exc


async def _run() -> tuple[list[int], Sorter, Sorter]:
    stream = f"S6_{uuid.uuid4().hex[:10].upper()}"
    pub = NatsTransport(URL, jetstream=True, stream=stream)
    await pub.start(ListInlet())
    for s in range(1, N + 1):
        await pub.publish(Parcel(line=1, seq=s, chute=s % 7))
    await pub.flush()
    await pub.close()
    first, second = Sorter(), Sorter()
    try:
        bus = MessageBus.with_nats(URL, jetstream=True, stream=stream, name="sorter",
                                   fetch_batch=64, ack_wait_s=5)
        rt = ServiceRuntime(bus, maxsize=100)
        await rt.spawn_service(first)
        await bus.ready()
        deadline = time.monotonic() + 20
        while len(first.seen) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await rt.shutdown()
        bus2 = MessageBus.with_nats(URL, jetstream=True, stream=stream, name="sorter",
                                    fetch_batch=64, ack_wait_s=5)
        rt2 = ServiceRuntime(bus2, maxsize=100)
        await rt2.spawn_service(second)
        await bus2.ready()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(set(first.seen) | set(second.seen)) < N:
            await asyncio.sleep(0.1)
        await rt2.shutdown()
    finally:
        nc = await nats.connect(URL)
        await nc.jetstream().delete_stream(stream)
        await nc.close()
    lost = sorted(set(range(1, N + 1)) - set(first.seen) - set(second.seen))
    return lost, first, second


def test_shutdown_with_stalled_handler_loses_nothing_acked() -> None:
    _require_nats()
    lost, first, _second = asyncio.run(_run())
    assert first.seen, "the first consumer handled nothing"
    assert lost == [], f"{len(lost)} parcels acked but never handled: {lost[:10]}"
