"""Round 2: a ServiceRuntime whose handlers consume what other handlers on it emit, on JetStream."""

from __future__ import annotations

import asyncio

import pytest
from peers.harness import NatsServer
from peers.messages import Quote, Signal, Tick, tick

from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime, service

pytest_plugins = ["conftest_distributed"]
pytestmark = pytest.mark.network

COUNT = 300


def chain(got: list[int], also: list[int]) -> list[object]:
    """Tick -> Quote (sync self.emit) -> Signal (await ctx.emit) -> got; Quote -> also."""

    class ToQuote(MessageHandler[Tick]):
        def handle(self, msg: Tick) -> None:
            self.emit(Quote(seq=msg.seq, price=float(msg.seq)))

    class ToSignal(MessageHandler[Quote]):
        ctx: ServiceContext | None = None

        async def handle(self, msg: Quote) -> None:
            assert self.ctx is not None
            await self.ctx.emit(Signal(seq=msg.seq, edge=msg.price))

    class AlsoQuotes(MessageHandler[Quote]):
        def handle(self, msg: Quote) -> None:
            also.append(msg.seq)

    class Sink(MessageHandler[Signal]):
        def handle(self, msg: Signal) -> None:
            got.append(msg.seq)

    return [ToQuote(), ToSignal(), AlsoQuotes(), Sink()]


@service
class Feed:
    async def run(self, ctx: ServiceContext) -> None:
        for n in range(1, COUNT + 1):
            await ctx.emit(tick(n))


@pytest.mark.parametrize("durable", [None, "chain"])
async def test_a_graceful_shutdown_finishes_what_the_runtime_emitted_to_itself(
    nats_server: NatsServer, stream_name: str, durable: str | None
) -> None:
    # README's flexible example with the JetStream bus: the feed ends, shutdown() drains
    # every queue. The runtime's own emits now come back through the stream, so "drained"
    # must include what it emitted to its own handlers and has not fetched back yet.
    got: list[int] = []
    also: list[int] = []
    bus = MessageBus.with_nats(nats_server.url, jetstream=True, stream=stream_name,
                               durable=durable)  # fmt: skip
    runtime = ServiceRuntime(bus)
    for handler in chain(got, also):
        running = await runtime.spawn_service(handler)
        if hasattr(handler, "ctx"):
            handler.ctx = running.context  # before the consuming task first runs
    feed = await runtime.spawn_service(Feed())
    assert feed.task is not None
    await asyncio.wait_for(feed.task, 30)
    await runtime.shutdown(timeout=20)
    assert sorted(also) == list(range(1, COUNT + 1)), f"{len(also)} of {COUNT} Quotes seen"
    assert got == list(range(1, COUNT + 1)), f"{len(got)} of {COUNT} Signals"
