"""A grid stage on a ``ServiceRuntime``: Billing (MeterRead -> ``--parts`` InvoiceLines) or,
with ``--parts 0``, a sink (Mailer, Audit) that only records what it handled.

``--record PATH``: the seq of every MeterRead whose handler *returned* is appended there
(one ``os.write``, O_APPEND: it survives a SIGKILL). ``--die-input K --die-part P``: SIGKILL
this process itself right after the P-th emit (counting from 1) of the K-th input it handles
(``--mode sync``: ``self.emit``, queued for the background sender; ``async``:
``await ctx.emit``, sent before it returns). Prints ``READY`` once consuming, runs until
killed or ``QUIT``, then prints ``RESULT {stats}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from peers.common import say, wait_for

from jetstream8_peers.messages import InvoiceLine, MeterRead
from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime


class Fuse:
    """Records handled inputs and SIGKILLs the process between two emits when armed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.die_input = args.die_input
        self.die_part = args.die_part
        self.handled = 0
        self.record = (
            os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if args.record
            else None
        )

    def emitted(self, part: int) -> None:
        if self.handled + 1 == self.die_input and part + 1 == self.die_part:
            os.kill(os.getpid(), signal.SIGKILL)

    def returned(self, seq: int) -> None:
        self.handled += 1
        if self.record is not None:
            os.write(self.record, f"{seq}\n".encode())


class SyncBilling(MessageHandler[MeterRead]):
    def __init__(self, fuse: Fuse, parts: int) -> None:
        self.fuse = fuse
        self.parts = parts

    def handle(self, msg: MeterRead) -> None:
        for part in range(self.parts):
            self.emit(InvoiceLine(seq=msg.seq, part=part))
            self.fuse.emitted(part)
        self.fuse.returned(msg.seq)


class AsyncBilling(MessageHandler[MeterRead]):
    def __init__(self, fuse: Fuse, parts: int, slow_s: float) -> None:
        self.fuse = fuse
        self.parts = parts
        self.slow_s = slow_s
        self.ctx: ServiceContext | None = None

    async def handle(self, msg: MeterRead) -> None:
        assert self.ctx is not None
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        for part in range(self.parts):
            await self.ctx.emit(InvoiceLine(seq=msg.seq, part=part))
            self.fuse.emitted(part)
        self.fuse.returned(msg.seq)


def bus_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "jetstream": True, "stream": args.stream, "durable": args.name,
        "ack_wait_s": args.ack_wait, "fetch_batch": args.fetch_batch,
        "max_ack_pending": args.max_ack_pending, "max_deliver": args.max_deliver,
        "backoff_s": (args.backoff,), "flush_timeout_s": args.flush_timeout,
        "ack_timeout_s": args.ack_timeout,
    }  # fmt: skip
    if args.max_msgs:
        options["stream_max_msgs"] = args.max_msgs
        options["stream_discard"] = args.discard
    return options


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--parts", type=int, default=0)
    parser.add_argument("--mode", choices=["sync", "async"], default="async")
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--fetch-batch", type=int, default=16)
    parser.add_argument("--max-ack-pending", type=int, default=64)
    parser.add_argument("--ack-wait", type=float, default=2.0)
    parser.add_argument("--max-deliver", type=int, default=5)
    parser.add_argument("--backoff", type=float, default=0.1)
    parser.add_argument("--flush-timeout", type=float, default=10.0)
    parser.add_argument("--ack-timeout", type=float, default=2.0)
    parser.add_argument("--max-msgs", type=int, default=0)
    parser.add_argument("--discard", choices=["old", "new"], default="old")
    parser.add_argument("--die-input", type=int, default=0)
    parser.add_argument("--die-part", type=int, default=0)
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    fuse = Fuse(args)
    bus = MessageBus.with_nats(args.url, **bus_options(args))
    runtime = ServiceRuntime(bus, maxsize=100)
    if args.mode == "sync":
        await runtime.spawn_service(SyncBilling(fuse, args.parts))
    else:
        billing = AsyncBilling(fuse, args.parts, args.slow_ms / 1000)
        billing.ctx = (await runtime.spawn_service(billing)).context
    await bus.ready()
    say("READY")
    await wait_for("QUIT")
    await runtime.shutdown()
    stats = bus.transport.stats
    say("RESULT", {"received": stats.received, **stats.extra})


if __name__ == "__main__":
    asyncio.run(main())
