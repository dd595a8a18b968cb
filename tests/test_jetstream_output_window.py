"""The stored-output barrier waits only for outputs that will be stored or given up on.

An input is acked once every JetStream publish accepted before it settled is resolved
(``OutputLedger``): ``NatsTransport.publish`` counts itself as ``sending`` while it runs, and
a settling input's window reaches above it. A ``publish()`` that fails before it takes a
ledger index (here: its topic is captured by another stream, so ``ensure_stream`` refuses)
used to leave that slot empty forever: every input settled meanwhile waited out
``flush_timeout_s`` and was failed (``acks_withheld``, nak, redelivered), though its own
handler emitted nothing. Runs a private ``nats-server -js``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import pytest
from peers.harness import NatsServer, until
from peers.messages import Quote, Tick, tick
from test_jetstream_stage_crash import publish_ticks

from mycelium_mono import MessageBus, MessageHandler, ServiceRuntime

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network]

FLUSH_TIMEOUT_S = 4.0


async def dead_letter_headers(url: str, stream: str) -> dict[str, str]:
    nc = await nats.connect(url)
    try:
        dead = await nc.jetstream().get_last_msg(f"DLQ_{stream}", f"dlq.{stream}.dist_test.4001")
    finally:
        await nc.close()
    assert dead.headers is not None
    return dict(dead.headers)


class StartsAFailingPublish(MessageHandler[Tick]):
    """Each Tick starts a publish in a task of its own, and returns while it is under way."""

    def __init__(self, publish: Any) -> None:
        self.publish = publish
        self.started: list[asyncio.Task[None]] = []

    async def handle(self, msg: Tick) -> None:
        self.started.append(asyncio.create_task(self.publish(Quote(seq=msg.seq, price=0.0))))
        await asyncio.sleep(0)  # the publish runs up to its first round trip (sending)


async def test_a_failed_publish_of_another_task_does_not_hold_back_the_acks(
    nats_server: NatsServer, stream_name: str
) -> None:
    count = 5
    await publish_ticks(nats_server.url, stream_name, count)
    nc = await nats.connect(nats_server.url)
    try:  # another stream captures Quote's subjects: publishing a Quote here is refused
        await nc.jetstream().add_stream(name=f"{stream_name}_B", subjects=["dist_chain.*"])
    finally:
        await nc.close()
    bus = MessageBus.with_nats(
        nats_server.url, jetstream=True, stream=stream_name, name="window",
        flush_timeout_s=FLUSH_TIMEOUT_S, ack_timeout_s=0.5,
    )  # fmt: skip
    transport = bus.transport
    runtime = ServiceRuntime(bus)
    handler = StartsAFailingPublish(transport.publish)
    began = time.monotonic()
    await runtime.spawn_service(handler)
    try:
        await until(lambda: transport.stats.extra.get("acked", 0) == count, timeout=30)
        took = time.monotonic() - began
        results = await asyncio.gather(*handler.started, return_exceptions=True)
    finally:
        await runtime.shutdown()
    assert len(results) == count
    assert all(isinstance(r, ValueError) and "already" in str(r) for r in results), results
    assert transport.stats.extra.get("acks_withheld", 0) == 0, transport.stats.extra
    assert transport.stats.extra.get("nacked", 0) == 0, transport.stats.extra
    assert took < FLUSH_TIMEOUT_S, f"the acks waited {took:.1f} s for a publish that failed"


class SyncRelay(MessageHandler[Tick]):
    """Tick 3 becomes a Quote, whose subjects another stream captures (never storable
    here); every other Tick a Tick of seq + 1000 (stored, then delivered to this relay from
    the stream like any Tick, and acked). Sync ``self.emit``: the transport's background
    sender sends them."""

    def handle(self, msg: Tick) -> None:
        if msg.seq == 3:
            self.emit(Quote(seq=msg.seq, price=0.0))
        elif msg.seq < 1000:
            self.emit(tick(msg.seq + 1000))


async def test_an_emit_no_stream_can_store_fails_only_its_own_input(
    nats_server: NatsServer, stream_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, the Quote stayed at the head of the outbox: the sender task died on it (an
    # exception nobody retrieved), was restarted and died again, every emit behind it
    # waited, and every input was failed one flush_timeout_s after the other (10 of 10
    # dead-lettered, the outbox growing with each redelivery).
    count = 10
    await publish_ticks(nats_server.url, stream_name, count)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name=f"{stream_name}_B", subjects=["dist_chain.*"])
    finally:
        await nc.close()
    bus = MessageBus.with_nats(
        nats_server.url, jetstream=True, stream=stream_name, name="window", max_deliver=2,
        backoff_s=(0.05,), flush_timeout_s=1.0, ack_timeout_s=0.3,
    )  # fmt: skip
    transport = bus.transport
    runtime = ServiceRuntime(bus)
    await runtime.spawn_service(SyncRelay())
    extra = transport.stats.extra
    try:
        await until(
            # 9 inputs and the 9 Ticks they emitted acked; Tick 3 dead-lettered.
            lambda: extra.get("acked", 0) == 2 * (count - 1)
            and extra.get("dead_lettered", 0) == 1,
            timeout=20,
        )
    finally:
        await runtime.shutdown()  # says what it could not send, does not raise
    assert len(transport._outbox) == 0
    dead = await dead_letter_headers(nats_server.url, stream_name)
    assert "already" in dead["Mycelium-Error"], dead
    assert "never retrieved" not in caplog.text
