"""One process of a two-stage JetStream pipeline, for the pipeline crash tests.

``--role a``: every Tick becomes a Quote; ``--role b``: every Quote becomes a Signal;
``--role ab``: both stages in one process (one bus); ``--role sink``: every Signal's seq is
appended to ``--record`` (one ``os.write``, O_APPEND, *after* it was processed: it survives
a SIGKILL a moment later); ``--slow-b-ms``: stage b's work, if not ``--slow-ms``. All roles
consume from ``--stream`` under the durable name ``--name`` (one consumer per role, shared by every
process started with that name: a work queue) and emit into the same stream, ``--mode
sync`` through ``self.emit``, ``--mode async`` through ``await ctx.emit``. ``--tick-v2``
defines Tick as the incompatible ``messages_v2`` layout (a process with the wrong
definition). Prints ``READY`` once consuming, then runs until killed (or ``QUIT``); with
``JS_PIPE_STATS=1`` in the environment it prints its transport's counters to stderr every
second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime
from peers.common import say, wait_for


def build(role: str, mode: str, slow_s: float, record: int | None, tick_v2: bool) -> Any:
    """The handler for ``role``: consumes its input type, emits its output (or records)."""
    if tick_v2:
        # Only the other Tick: peers.messages would register type id 4001 a second time.
        from peers.messages_v2 import Tick

        class Wrong(MessageHandler[Tick]):
            def handle(self, msg: Any) -> None:
                raise AssertionError("a Tick reached the process with the wrong definition")

        return Wrong()
    from peers.messages import Quote, Signal, Tick

    source = {"a": Tick, "b": Quote, "sink": Signal}[role]

    def output(msg: Any) -> Any:
        if role == "a":
            return Quote(seq=msg.seq, price=float(msg.seq))
        return Signal(seq=msg.seq, edge=msg.price)

    if role == "sink":

        class Sink(MessageHandler[source]):  # type: ignore[valid-type]
            def handle(self, msg: Any) -> None:
                if slow_s:
                    time.sleep(slow_s)
                assert record is not None
                os.write(record, f"{msg.seq}\n".encode())

        return Sink()
    if mode == "sync":

        class SyncStage(MessageHandler[source]):  # type: ignore[valid-type]
            def handle(self, msg: Any) -> None:
                if slow_s:
                    time.sleep(slow_s)
                self.emit(output(msg))

        return SyncStage()

    class AsyncStage(MessageHandler[source]):  # type: ignore[valid-type]
        ctx: ServiceContext | None = None

        async def handle(self, msg: Any) -> None:
            assert self.ctx is not None
            if slow_s:
                await asyncio.sleep(slow_s)
            await self.ctx.emit(output(msg))

    return AsyncStage()


async def print_stats(bus: Any) -> None:
    import sys

    transport = bus.transport
    while True:
        await asyncio.sleep(1.0)
        print(
            "STATS", dict(transport.stats.extra), "received", transport.stats.received,
            "sent", transport.stats.sent, "outbox", len(transport._outbox),
            "ledger", transport._ledger.appended, transport._ledger.resolved,
            transport._ledger.sending, "unacked", len(transport._unacked),
            "held", [c._held for c in transport.consumers],
            file=sys.stderr, flush=True,
        )  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--role", choices=["a", "b", "ab", "sink"], required=True)
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--record", default=None)
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--slow-b-ms", type=float, default=None, help="stage b's own --slow-ms")
    parser.add_argument("--fetch-batch", type=int, default=16)
    parser.add_argument("--max-ack-pending", type=int, default=64)
    parser.add_argument("--ack-wait", type=float, default=2.0)
    parser.add_argument("--max-deliver", type=int, default=5)
    parser.add_argument("--tick-v2", action="store_true")
    args = parser.parse_args()
    record = None
    if args.record:
        record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    options: dict[str, Any] = {
        "jetstream": True, "stream": args.stream, "durable": args.name,
        "ack_wait_s": args.ack_wait, "fetch_batch": args.fetch_batch,
        "max_ack_pending": args.max_ack_pending, "max_deliver": args.max_deliver,
    }  # fmt: skip
    bus = MessageBus.with_nats(args.url, **options)
    runtime = ServiceRuntime(bus)
    for role in ("a", "b") if args.role == "ab" else (args.role,):
        slow_ms = args.slow_b_ms if role == "b" and args.slow_b_ms is not None else args.slow_ms
        handler = build(role, args.mode, slow_ms / 1000, record, args.tick_v2)
        service = await runtime.spawn_service(handler)
        if hasattr(handler, "ctx"):
            handler.ctx = service.context  # before the consuming task first runs
    await bus.ready()
    say("READY")
    if os.environ.get("JS_PIPE_STATS"):  # debugging: the transport's counters every second
        asyncio.get_running_loop().create_task(print_stats(bus))
    await wait_for("QUIT")
    await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
