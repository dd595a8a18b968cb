"""A job-queue worker over JetStream, for tests/test_stranger7_progress7.py.

``Job`` (type id 47707): ``seq`` counts one producer's jobs from 1. Modes
(``python -m progress7_peers.worker MODE ...``):

- ``service``: a ``Worker`` handler on a ``ServiceRuntime`` (``--maxsize``), consuming the
  durable ``--durable`` (shared with other workers: a work queue). Each job: one
  ``os.write`` of ``B <seq>`` to ``--record`` as it begins, ``await asyncio.sleep(--work-s)``
  (or first ``time.sleep(--stall-s)`` once, on the first seq of ``--stall-at`` it gets:
  the loop stops), then
  ``D <seq>``. Says ``READY``, ``STALLING <seq>``; on ``STATS`` prints ``RESULT {...}``; on
  ``SHUTDOWN <timeout>`` runs ``runtime.shutdown(timeout)``, prints ``RESULT`` and exits.
- ``raw``: ``bus.subscribe(Job, maxsize=--maxsize, policy=--policy)`` and a loop that
  ``recv()``s, records ``B``, holds the job ``--work-s`` (awaited), records ``D``. On
  ``CLOSE`` it closes the subscription (whatever is queued stays queued, nobody reads it)
  and goes on running the bus.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from peers.common import memory_kib, read_line, say, serve_runtime, stats_dict

from mycelium_mono import U32, U64, MessageBus, MessageHandler, ServiceRuntime, message


@message(type_id=47707, topic="progress7.jobs")
class Job:
    producer: U32
    seq: U64


def job(seq: int) -> Job:
    return Job(producer=1, seq=seq)


class Recorder:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, what: str, seq: int) -> None:
        os.write(self.fd, f"{what} {seq}\n".encode())


class Worker(MessageHandler[Job]):
    def __init__(self, rec: Recorder, work_s: float, stall_at: set[int], stall_s: float) -> None:
        self.rec = rec
        self.work_s = work_s
        self.stall_at = stall_at
        self.stall_s = stall_s

    async def handle(self, j: Job) -> None:
        self.rec.write("B", j.seq)
        if j.seq in self.stall_at:
            self.stall_at.clear()  # one stall, on the first of these seqs it gets
            say("STALLING", j.seq)
            time.sleep(self.stall_s)  # the whole loop stops: no heartbeat, no ack
        await asyncio.sleep(self.work_s)
        self.rec.write("D", j.seq)


def make_bus(args: argparse.Namespace) -> MessageBus:
    return MessageBus.with_nats(
        args.url, jetstream=True, stream=args.stream, durable=args.durable,
        ack_wait_s=args.ack_wait, fetch_batch=args.fetch_batch,
        max_ack_pending=args.max_ack_pending, max_deliver=args.max_deliver,
    )  # fmt: skip


async def service(args: argparse.Namespace) -> None:
    rec = Recorder(args.record)
    stall_at = {int(s) for s in args.stall_at.split(",") if s}
    bus = make_bus(args)
    runtime = ServiceRuntime(bus, maxsize=args.maxsize)
    running = await runtime.spawn_service(Worker(rec, args.work_s, stall_at, args.stall_s))
    await bus.ready()
    say("READY")

    def result() -> dict[str, Any]:
        return {**stats_dict(bus.transport), "handled": running.handled,
                "vmrss_kib": memory_kib("VmRSS")}

    await serve_runtime(runtime, result)


async def raw(args: argparse.Namespace) -> None:
    rec = Recorder(args.record)
    bus = make_bus(args)
    sub = bus.subscribe(Job, maxsize=args.maxsize, policy=args.policy)
    await bus.ready()
    say("READY")

    async def take() -> None:
        async for j in sub:
            rec.write("B", j.seq)
            await asyncio.sleep(args.work_s)
            rec.write("D", j.seq)

    taker = asyncio.get_running_loop().create_task(take())
    while True:
        line = await read_line()
        if line == "STATS":
            say("RESULT", {**stats_dict(bus.transport), "queued": len(sub),
                           "dropped": sub.stats.dropped})
        elif line == "CLOSE":
            taker.cancel()
            sub.close()
            say("CLOSED", len(sub))
        else:
            taker.cancel()
            await bus.close()
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["service", "raw"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--durable", default="workers")
    parser.add_argument("--record", default="/dev/null")
    parser.add_argument("--ack-wait", type=float, default=1.0)
    parser.add_argument("--fetch-batch", type=int, default=4)
    parser.add_argument("--max-ack-pending", type=int, default=64)
    parser.add_argument("--max-deliver", type=int, default=3)
    parser.add_argument("--maxsize", type=int, default=16)
    parser.add_argument("--policy", default="block")
    parser.add_argument("--work-s", type=float, default=0.0)
    parser.add_argument("--stall-at", default="")
    parser.add_argument("--stall-s", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run({"service": service, "raw": raw}[args.mode](args))


if __name__ == "__main__":
    main()
