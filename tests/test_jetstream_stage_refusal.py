"""A stage whose output to one subject is refused by the server keeps acking the others.

The stored-output barrier (``OutputLedger``) must hear of every output it will never see
stored, or it waits for it forever. A publish the server's permissions refused raised
``NatsPermissionError`` out of ``NatsTransport._settle``, which recorded only
``ConnectionError`` as refused: the indices it had taken out of ``_unacked`` were never
resolved, and every later input of the stage waited ``flush_timeout_s``, was withheld,
redelivered and withheld again. With ``max_deliver=3`` all 10 of 10 Ticks were
dead-lettered, though only Tick 3's output was refused; now only Tick 3 is, on both emit
paths: through a sync ``self.emit`` the refused Signal used to stay at the head of the
outbox (every emit behind it waited), and the inputs of one fetched batch all counted the
Signal as theirs (their output window started at the offer, not when their handler began).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats_secure import Server, nats_server
from peers.inlet import ListInlet
from peers.messages import Quote, Signal, Tick, tick

from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime
from mycelium_mono.bus.transports.nats import NatsTransport

pytestmark = [pytest.mark.network]

USER = {"user": "stage", "password": "s3cret-stage"}
# Everything is allowed except publishing Signals (dist_chain.4003).
CONFIG = """
jetstream { store_dir: "%s" }
authorization { users = [ { user: stage, password: "s3cret-stage", permissions: {
    publish: { allow: [">"], deny: ["dist_chain.4003"] } } } ] }
"""


@pytest.fixture
def js_permissions_server(tmp_path: Path) -> Iterator[Server]:
    with nats_server(tmp_path, CONFIG % (tmp_path / "js")) as server:
        yield server


class Relay(MessageHandler[Tick]):
    """Tick 3 becomes a Signal the server refuses; every other Tick a Quote it stores.

    Emits with ``await ctx.emit``: once the server refused Signals, that publish raises in
    the handler, so Tick 3 fails and is dead-lettered.
    """

    def __init__(self) -> None:
        self.ctx: ServiceContext | None = None

    async def handle(self, msg: Tick) -> None:
        assert self.ctx is not None
        if msg.seq == 3:
            await self.ctx.emit(Signal(seq=msg.seq, edge=0.0))
        else:
            await self.ctx.emit(Quote(seq=msg.seq, price=float(msg.value)))


class SyncRelay(MessageHandler[Tick]):
    """The same through a sync ``self.emit``: the Signal goes to the transport's outbox.

    The refused Signal used to stay at the head of the outbox, so every emit behind it waited
    (8 of 10 Ticks dead-lettered); now it is dropped there, counted, and its index refused,
    so only Tick 3 fails (its handler returned, but its output was not stored).
    """

    def handle(self, msg: Tick) -> None:
        if msg.seq == 3:
            self.emit(Signal(seq=msg.seq, edge=0.0))
        else:
            self.emit(Quote(seq=msg.seq, price=float(msg.value)))


async def stage_settled(url: str) -> bool:
    nc = await nats.connect(url, **USER)
    try:
        info = await nc.jetstream().consumer_info("STAGE", "relay-dist_test-4001")
    finally:
        await nc.close()
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


@pytest.mark.parametrize("emit", ["await ctx.emit", "self.emit"])
async def test_a_refused_output_does_not_stop_the_stage_acking_the_others(
    js_permissions_server: Server, emit: str,
) -> None:
    url = js_permissions_server.url
    pub = NatsTransport(url, jetstream=True, stream="STAGE", **USER)  # type: ignore[arg-type]
    await pub.start(ListInlet())
    try:
        for seq in range(1, 11):
            await pub.publish(tick(seq))
        await pub.flush()
    finally:
        await pub.close()
    bus = MessageBus.with_nats(
        url, jetstream=True, stream="STAGE", durable="relay", ack_wait_s=1.0,
        flush_timeout_s=1.0, ack_timeout_s=0.3, max_deliver=3, backoff_s=(0.05,), **USER,
    )  # fmt: skip
    runtime = ServiceRuntime(bus)
    if emit == "self.emit":
        await runtime.spawn_service(SyncRelay())
    else:
        relay = Relay()
        relay.ctx = (await runtime.spawn_service(relay)).context
    await bus.ready()
    transport = bus.transport
    try:
        # Before, the stage never settled: the refused Signal was never resolved in the
        # ledger, so every later input waited for it and was withheld, redelivered, withheld.
        # Now the Quotes given up on with it (go-back-N) come again with their redelivered
        # Ticks and are acked; Tick 3 fails each time and is dead-lettered.
        async with asyncio.timeout(30):
            while not await stage_settled(url):
                await asyncio.sleep(0.1)
    finally:
        runtime.request_shutdown()
        with contextlib.suppress(Exception):  # closing says the Signal was refused
            await runtime.shutdown(timeout=2.0)
    assert transport.stats.extra.get("dead_lettered", 0) == 1
    nc = await nats.connect(url, **USER)
    try:
        js = nc.jetstream()
        dead = await js.get_last_msg("DLQ_STAGE", "dlq.STAGE.dist_test.4001")
        info = await js.stream_info("STAGE", subjects_filter="dist_chain.4002")
    finally:
        await nc.close()
    assert dead.headers is not None and "dist_chain.4003" in dead.headers["Mycelium-Error"]
    assert (info.state.subjects or {}).get("dist_chain.4002", 0) >= 9, "a Quote is missing"
