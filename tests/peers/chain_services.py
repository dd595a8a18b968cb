"""The adapter → strategy → execution pipeline, written once and run in every deployment."""

from __future__ import annotations

import asyncio
from typing import Any

from mycelium_mono import MessageHandler
from mycelium_mono.bus import MessageBus, ServiceContext, ServiceRuntime, service
from peers.messages import Fill, Quote, Signal


@service
class Adapter:
    """Produces ``count`` quotes (a stand-in for an exchange feed)."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def run(self, ctx: ServiceContext) -> None:
        for seq in range(1, self.count + 1):
            await ctx.emit(Quote(seq=seq, price=100.0 + (seq % 17) * 0.25))


class Strategy(MessageHandler[Quote]):
    """Turns every quote into a signal whose edge depends on the price."""

    def handle(self, quote: Quote) -> None:
        self.emit(Signal(seq=quote.seq, edge=(quote.price - 100.0) * 4.0))


class Execution(MessageHandler[Signal]):
    """Sizes a fill from each signal."""

    def handle(self, signal: Signal) -> None:
        self.emit(Fill(seq=signal.seq, qty=int(signal.edge * 10) - 5))


async def in_process_chain(count: int) -> list[Any]:
    """The same three services on one in-process MessageBus: the reference result."""
    bus = MessageBus()
    fills = bus.subscribe(Fill)
    runtime = ServiceRuntime(bus)
    await runtime.spawn_service(Strategy())
    await runtime.spawn_service(Execution())
    await runtime.spawn_service(Adapter(count))
    out = [await asyncio.wait_for(fills.recv(), 10) for _ in range(count)]
    await runtime.shutdown()
    return out
