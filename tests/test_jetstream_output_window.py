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
from peers.messages import Quote, Tick
from test_jetstream_stage_crash import publish_ticks

from mycelium_mono import MessageBus, MessageHandler, ServiceRuntime

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network]

FLUSH_TIMEOUT_S = 4.0


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
