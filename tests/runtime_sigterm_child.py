"""Child process for tests/test_runtime_shutdown.py: a pipeline that runs until SIGTERM.

A producer emits orders as fast as the "block" queues allow, a relay handler turns each into
a fill, and a slow async consumer appends every fill's id to the file named by argv[1]. On
SIGTERM the runtime shuts down gracefully; the last stdout line is a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TextIO

from mycelium_mono import (
    U64,
    MessageBus,
    MessageHandler,
    ServiceContext,
    ServiceRuntime,
    message,
    service,
)


@message(type_id=5041, topic="sigterm_child")
class Job:
    job_id: U64


@message(type_id=5042, topic="sigterm_child")
class Done:
    job_id: U64


@service
class Producer:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.produced = 0
        self.queued_at_shutdown = -1

    async def run(self, ctx: ServiceContext) -> None:
        while not ctx.shutting_down:
            await ctx.emit(Job(job_id=self.produced))
            self.produced += 1
            if self.produced == 200:
                print("READY", flush=True)
        self.queued_at_shutdown = sum(len(s) for s in self.bus.subscribers())


class Relay(MessageHandler[Job]):
    def handle(self, job: Job) -> None:
        self.emit(Done(job_id=job.job_id))


class SlowSink(MessageHandler[Done]):
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0

    async def handle(self, done: Done) -> None:  # type: ignore[override]
        await asyncio.sleep(0.0005)
        self.out.write(f"{done.job_id}\n")
        self.count += 1


async def main(path: Path) -> None:
    bus = MessageBus()
    runtime = ServiceRuntime(bus, maxsize=64, policy="block")
    producer = Producer(bus)
    with path.open("w") as out:
        sink = SlowSink(out)
        await runtime.spawn_service(sink)
        await runtime.spawn_service(Relay())
        await runtime.spawn_service(producer)
        await runtime.wait_for_shutdown(timeout=60)
    summary = {
        "produced": producer.produced,
        "consumed": sink.count,
        "queued_at_shutdown": producer.queued_at_shutdown,
        "dropped": bus.stats.dropped,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
