"""One JetStream process whose stage consumes the type it emits, for the round-2 crash test.

Quote(seq <= OFFSET) becomes Quote(seq + OFFSET) (``--mode sync``: ``self.emit``, ``async``:
``await ctx.emit``), on one bus and one durable consumer (``--name``): the stage's input is
acked only once its output, of the same type, is stored. A second handler on the same bus
appends every Quote seq above OFFSET to ``--record`` after it got it (one ``os.write``,
O_APPEND: it survives a SIGKILL a moment later). Prints ``READY``, runs until killed or QUIT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime
from peers.common import say, wait_for
from peers.messages import Quote

OFFSET = 100_000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--max-ack-pending", type=int, default=64)
    args = parser.parse_args()
    record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    mode = args.mode

    class Loop(MessageHandler[Quote]):
        ctx: ServiceContext | None = None

        async def handle(self, msg: Quote) -> None:
            if msg.seq > OFFSET:
                return
            time.sleep(0.0003)
            out = Quote(seq=msg.seq + OFFSET, price=msg.price)
            if mode == "sync":
                self.emit(out)
            else:
                assert self.ctx is not None
                await self.ctx.emit(out)

    class Record(MessageHandler[Quote]):
        def handle(self, msg: Any) -> None:
            if msg.seq > OFFSET:
                os.write(record, f"{msg.seq - OFFSET}\n".encode())

    bus = MessageBus.with_nats(
        args.url, jetstream=True, stream=args.stream, durable=args.name, ack_wait_s=1.5,
        fetch_batch=16, max_ack_pending=args.max_ack_pending, max_deliver=5,
    )  # fmt: skip
    runtime = ServiceRuntime(bus, maxsize=8)
    loop = Loop()
    running = await runtime.spawn_service(loop)
    loop.ctx = running.context
    await runtime.spawn_service(Record())
    await bus.ready()
    say("READY")
    await wait_for("QUIT")
    await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
