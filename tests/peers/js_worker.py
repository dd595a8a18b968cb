"""A JetStream consumer on a real MessageBus, for the crash tests (issue 12).

Consumes Ticks from ``--stream`` under the durable name ``--name`` and, *after* processing
each one, appends its seq to ``--record`` with one ``os.write`` (O_APPEND: it survives a
SIGKILL a moment later). ``--mode handler`` spawns a ``MessageHandler`` on a
``ServiceRuntime``; ``--mode raw`` reads ``async for msg in sub``. ``--slow-ms`` is the work
per message. Prints ``READY`` once consuming, then runs until killed (or ``QUIT``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from mycelium_mono import MessageBus, MessageHandler, ServiceRuntime
from peers.common import say, wait_for
from peers.messages import Tick


class Recorder(MessageHandler[Tick]):
    def __init__(self, fd: int, slow_s: float) -> None:
        self.fd = fd
        self.slow_s = slow_s

    def handle(self, msg: Tick) -> None:
        if self.slow_s:
            time.sleep(self.slow_s)  # the work: the message is not done until this returns
        os.write(self.fd, f"{msg.seq}\n".encode())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--mode", choices=["handler", "raw"], default="handler")
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--maxsize", type=int, default=100)
    args = parser.parse_args()
    fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    recorder = Recorder(fd, args.slow_ms / 1000)
    bus = MessageBus.with_nats(
        args.url, jetstream=True, stream=args.stream, durable=args.name,
        ack_wait_s=2.0, fetch_batch=64,
    )  # fmt: skip
    if args.mode == "handler":
        runtime = ServiceRuntime(bus, maxsize=args.maxsize)
        await runtime.spawn_service(recorder)
        await bus.ready()
        say("READY")
        await wait_for("QUIT")
        await runtime.shutdown()
        return
    sub = bus.subscribe(Tick, maxsize=args.maxsize)
    await bus.ready()
    say("READY")
    async for msg in sub:  # asking for the next one acknowledges this one
        recorder.handle(msg)
        await asyncio.sleep(0)


if __name__ == "__main__":
    asyncio.run(main())
