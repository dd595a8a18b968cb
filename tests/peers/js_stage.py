"""A JetStream pipeline stage for the stage crash tests: every Tick (A) becomes a Quote (B).

Consumes Ticks from ``--stream`` under the durable name ``--name`` and emits one
``Quote(seq=tick.seq)`` per Tick into the same stream: ``--mode sync`` through a
``MessageHandler``'s ``self.emit`` (queued, sent by the transport's background sender),
``--mode async`` through ``await ctx.emit`` in an ``async def handle`` (sent before the
handler returns). ``--slow-ms`` sleeps before the emit (the work).

``--die-after K`` SIGKILLs this process itself once K messages were handled, at an exact
point no outside ``kill`` can hit: ``--die-at emit`` inside the handler right after the
emit, ``return`` as soon as the handler returned (the runtime settled the input, the acker
has not run yet), ``acked`` right after the first input ack this process sends once K
were handled (its output stored; a PING/PONG after the ack: the server has it), ``term``
right before the first ``term`` it would send once K were handled (for a dead-lettered input:
its copy is stored in the dead-letter stream, the input is still unsettled at the server).
``--fail-seq N`` makes the handler raise on Tick N (every time); ``--crash-seq N``
SIGKILLs the process as soon as a handler begins on Tick N (every time: a crash loop).
``--record PATH``: the seq of every Tick a handler *began* on is appended there (one
``os.write``, O_APPEND: it survives the SIGKILL that follows). Prints ``READY`` once
consuming, then runs until killed (or ``QUIT``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any

from nats.aio.msg import Msg

from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime
from peers.common import say, wait_for
from peers.messages import Quote, Tick


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Fuse:
    """Counts handled inputs and SIGKILLs this process at the chosen point."""

    def __init__(self, after: int, at: str, record: int | None = None) -> None:
        self.after = after
        self.at = at
        self.handled = 0
        self.record = record
        self.crash_seq = 0

    def began(self, seq: int) -> None:
        if self.record is not None:
            os.write(self.record, f"{seq}\n".encode())
        if seq == self.crash_seq:
            die()

    def emitted(self) -> None:
        self.handled += 1
        if self.armed("emit"):
            die()

    def returned(self) -> None:
        if self.armed("return"):
            # The runtime settles the input when the handler returns; the kill runs on the
            # loop's next turn, before the acker task can send the ack.
            asyncio.get_running_loop().call_soon(die)

    def armed(self, at: str) -> bool:
        return self.at == at and 0 < self.after <= self.handled


class SyncRelay(MessageHandler[Tick]):
    def __init__(self, fuse: Fuse, slow_s: float, fail_seq: int = 0) -> None:
        self.fuse = fuse
        self.slow_s = slow_s
        self.fail_seq = fail_seq

    def handle(self, msg: Tick) -> None:
        self.fuse.began(msg.seq)
        if self.slow_s:
            time.sleep(self.slow_s)
        if msg.seq == self.fail_seq:
            self.fuse.handled += 1
            raise ValueError(f"Tick {msg.seq} cannot be priced")
        self.emit(Quote(seq=msg.seq, price=float(msg.value)))
        self.fuse.emitted()
        self.fuse.returned()


class AsyncRelay(MessageHandler[Tick]):
    def __init__(self, fuse: Fuse, slow_s: float, fail_seq: int = 0) -> None:
        self.fuse = fuse
        self.slow_s = slow_s
        self.fail_seq = fail_seq
        self.ctx: ServiceContext | None = None

    async def handle(self, msg: Tick) -> None:
        assert self.ctx is not None
        self.fuse.began(msg.seq)
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if msg.seq == self.fail_seq:
            self.fuse.handled += 1
            raise ValueError(f"Tick {msg.seq} cannot be priced")
        await self.ctx.emit(Quote(seq=msg.seq, price=float(msg.value)))
        self.fuse.emitted()
        self.fuse.returned()


def die_after_first_ack(fuse: Fuse) -> None:
    """Wrap every ack so the process dies right after the first one sent once armed."""
    original = Msg.ack

    async def ack_then_maybe_die(self: Msg) -> None:
        await original(self)
        if fuse.armed("acked"):
            await self._client.flush()  # a PING/PONG: the server has the ack, then the crash
            die()

    Msg.ack = ack_then_maybe_die  # type: ignore[method-assign]


def die_before_first_term(fuse: Fuse) -> None:
    """Wrap every term so the process dies right before the first one once armed: what was
    sent before (a dead-letter copy, confirmed by its PubAck) is stored, the term is not."""
    original = Msg.term

    async def maybe_die_then_term(self: Msg) -> None:
        if fuse.armed("term"):
            die()
        await original(self)

    Msg.term = maybe_die_then_term  # type: ignore[method-assign]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--fetch-batch", type=int, default=16)
    parser.add_argument("--max-ack-pending", type=int, default=64)
    parser.add_argument("--ack-wait", type=float, default=2.0)
    parser.add_argument("--maxsize", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=4000)
    parser.add_argument("--max-deliver", type=int, default=5)
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--fail-seq", type=int, default=0)
    parser.add_argument("--crash-seq", type=int, default=0)
    parser.add_argument("--record", default=None)
    parser.add_argument("--die-at", choices=["emit", "return", "acked", "term"], default="return")
    args = parser.parse_args()
    record = None
    if args.record:
        record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    fuse = Fuse(args.die_after, args.die_at, record)
    fuse.crash_seq = args.crash_seq
    if args.die_at == "acked":
        die_after_first_ack(fuse)
    if args.die_at == "term":
        die_before_first_term(fuse)
    options: dict[str, Any] = {
        "jetstream": True, "stream": args.stream, "durable": args.name,
        "ack_wait_s": args.ack_wait, "fetch_batch": args.fetch_batch,
        "max_ack_pending": args.max_ack_pending, "max_in_flight": args.max_in_flight,
        "max_deliver": args.max_deliver,
    }  # fmt: skip
    bus = MessageBus.with_nats(args.url, **options)
    runtime = ServiceRuntime(bus, maxsize=args.maxsize)
    slow_s = args.slow_ms / 1000
    if args.mode == "sync":
        await runtime.spawn_service(SyncRelay(fuse, slow_s, args.fail_seq))
    else:
        relay = AsyncRelay(fuse, slow_s, args.fail_seq)
        # Set before the runtime's consuming task first runs (spawn_service does not yield
        # after creating it).
        relay.ctx = (await runtime.spawn_service(relay)).context
    await bus.ready()
    say("READY")
    await wait_for("QUIT")
    await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
