"""One process of crash4's scenarios: ``python -m crash4_peers.node ROLE [options]``.

Roles:

- ``source``: a ServiceRuntime ``@service`` whose ``run()`` emits ``--count`` Orders of
  publisher ``--publisher`` through JetStream, then prints ``DONE`` (after flush).
- ``mid``: a ServiceRuntime handler, Order → Fill (``--mode sync``: ``self.emit``, ``async``:
  ``await ctx.emit``), durable ``--durable``.
- ``sink``: a ServiceRuntime handler recording each Fill as ``publisher seq`` in ``--record``
  (one O_APPEND write, after it was handled: it survives a SIGKILL a moment later).
- ``burst``: a raw JetStream publisher of Telemetry; every ``--confirm-every`` messages it
  flushes and then writes the count the server confirmed to ``--record``; killed mid-burst.
- ``zpub``: a ZeroMQ bus bound at ``--bind``; prints ``READY <address>``, waits for one
  subscriber, then on ``GO`` publishes ``--count`` Telemetry (``await publish``), printing
  ``SENT n`` every ``--report-every``; ``RESULT {stats}`` at the end, then waits for ``QUIT``
  (``CLOSE`` first closes the bus and prints ``CLOSED {stats}``).
- ``zsub``: a ZeroMQ bus connecting to ``--connect``, a "block" subscriber of Telemetry
  (``--maxsize``) that records ``sensor seq`` per message to ``--record``; prints ``READY``
  once acknowledged; ``QUIT`` prints ``RESULT {stats}`` and exits.

Every role prints ``READY`` once it is consuming (or bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from crash4_peers.messages import Fill, Order, Telemetry, order, telemetry
from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime, service


def say(word: str, payload: Any = "") -> None:
    text = json.dumps(payload) if isinstance(payload, dict) else str(payload)
    print(f"{word} {text}".rstrip(), flush=True)


async def read_line() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


def stats_of(transport: Any) -> dict[str, Any]:
    s = transport.stats
    return {
        "sent": s.sent, "received": s.received, "dropped_overflow": s.dropped_overflow,
        "sequence_gaps": s.sequence_gaps, **s.extra,
    }  # fmt: skip


def js_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "jetstream": True, "stream": args.stream, "durable": args.durable,
        "ack_wait_s": args.ack_wait, "fetch_batch": args.fetch_batch,
        "max_ack_pending": args.max_ack_pending, "max_deliver": 20,
        "backoff_s": (0.05,),
    }  # fmt: skip


async def run_source(args: argparse.Namespace) -> None:
    bus = MessageBus.with_nats(args.url, **js_options(args))
    runtime = ServiceRuntime(bus)

    @service
    class Exchange:
        async def run(self, ctx: ServiceContext) -> None:
            for seq in range(1, args.count + 1):
                await ctx.emit(order(args.publisher, seq))

    svc = await runtime.spawn_service(Exchange())
    say("READY")
    await svc.task
    await bus.transport.flush()
    say("DONE", stats_of(bus.transport))
    while (await read_line()) not in ("QUIT", ""):
        pass
    await runtime.shutdown()


async def run_stage(args: argparse.Namespace) -> None:
    bus = MessageBus.with_nats(args.url, **js_options(args))
    runtime = ServiceRuntime(bus)
    slow_s = args.slow_ms / 1000
    record = None
    if args.record:
        record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    handler: Any
    if args.role == "sink":

        class Books(MessageHandler[Fill]):
            def handle(self, msg: Fill) -> None:
                if slow_s:
                    time.sleep(slow_s)
                assert record is not None
                os.write(record, f"{msg.publisher} {msg.seq}\n".encode())

        handler = Books()
    elif args.mode == "sync":

        class Matcher(MessageHandler[Order]):
            def handle(self, msg: Order) -> None:
                if slow_s:
                    time.sleep(slow_s)
                self.emit(Fill(publisher=msg.publisher, seq=msg.seq,
                               notional=msg.price * msg.qty))

        handler = Matcher()
    else:

        class AsyncMatcher(MessageHandler[Order]):
            ctx: ServiceContext | None = None

            async def handle(self, msg: Order) -> None:
                assert self.ctx is not None
                if slow_s:
                    await asyncio.sleep(slow_s)
                await self.ctx.emit(Fill(publisher=msg.publisher, seq=msg.seq,
                                         notional=msg.price * msg.qty))

        handler = AsyncMatcher()
    svc = await runtime.spawn_service(handler)
    if hasattr(handler, "ctx"):
        handler.ctx = svc.context
    await bus.ready()
    say("READY")
    while (await read_line()) not in ("QUIT", ""):
        pass
    await runtime.shutdown()


async def run_burst(args: argparse.Namespace) -> None:
    from mycelium_mono.bus.transports.base import CallbackInlet
    from mycelium_mono.bus.transports.nats import NatsTransport

    pub = NatsTransport(args.url, jetstream=True, stream=args.stream)
    await pub.start(CallbackInlet(lambda msg: None))
    record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    say("READY")
    for seq in range(1, args.count + 1):
        await pub.publish(telemetry(args.publisher, seq))
        if seq % args.confirm_every == 0:
            await pub.flush()
            os.write(record, f"{seq}\n".encode())
    await pub.flush()
    os.write(record, f"{args.count}\n".encode())
    say("DONE")
    while (await read_line()) not in ("QUIT", ""):
        pass
    await pub.close()


async def run_zpub(args: argparse.Namespace) -> None:
    bus = MessageBus.with_tcp(args.bind, close_timeout_s=args.close_timeout)
    async with bus:
        pub = bus.publisher(Telemetry)
        say("READY", bus.transport.address)
        await bus.wait_for_subscribers(args.subscribers, Telemetry, timeout=30)
        say("SUBSCRIBED")
        while True:
            line = await read_line()
            if line == "GO":
                break
            if line in ("QUIT", ""):
                return
        for seq in range(1, args.count + 1):
            await pub.publish(telemetry(args.publisher, seq))
            if seq % args.report_every == 0:
                say("SENT", seq)
        say("RESULT", stats_of(bus.transport))
        while True:
            line = await read_line()
            if line == "CLOSE":
                break
            if line in ("QUIT", ""):
                return
    say("CLOSED", stats_of(bus.transport))
    while (await read_line()) not in ("QUIT", ""):
        pass


async def run_zsub(args: argparse.Namespace) -> None:
    record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    bus = MessageBus.with_tcp(args.bind, hwm=args.hwm)
    async with bus:
        sub = bus.subscribe(Telemetry, maxsize=args.maxsize, policy="block")
        for address in args.connect:
            await bus.connect_to(address)
        await bus.ready()
        say("READY")
        slow_s = args.slow_ms / 1000
        peak = 0

        async def consume() -> None:
            nonlocal peak
            async for msg in sub:
                peak = max(peak, len(sub) + 1)
                if slow_s:
                    await asyncio.sleep(slow_s)
                os.write(record, f"{msg.sensor} {msg.seq}\n".encode())

        task = asyncio.get_running_loop().create_task(consume())
        while (await read_line()) not in ("QUIT", ""):
            pass
        task.cancel()
        say("RESULT", {**stats_of(bus.transport), "peak": peak})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["source", "mid", "sink", "burst", "zpub", "zsub"])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="")
    parser.add_argument("--durable", default=None)
    parser.add_argument("--publisher", default="p")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--record", default="")
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--ack-wait", type=float, default=2.0)
    parser.add_argument("--fetch-batch", type=int, default=16)
    parser.add_argument("--max-ack-pending", type=int, default=64)
    parser.add_argument("--confirm-every", type=int, default=50)
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--maxsize", type=int, default=64)
    parser.add_argument("--hwm", type=int, default=100_000, help="zsub: the SUB's high-water mark")
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--report-every", type=int, default=500)
    parser.add_argument("--close-timeout", type=float, default=10.0)
    args = parser.parse_args()
    runner = {
        "source": run_source, "mid": run_stage, "sink": run_stage, "burst": run_burst,
        "zpub": run_zpub, "zsub": run_zsub,
    }[args.role]  # fmt: skip
    asyncio.run(runner(args))


if __name__ == "__main__":
    main()
