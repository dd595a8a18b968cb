"""A parcel-sorting line over NATS, for tests/test_stranger6_stall6.py (stalls and SIGSTOPs).

``Parcel`` (type id 47601): ``seq`` counts one induction belt's parcels from 1, so loss,
repeats and reordering are countable. Modes (``python -m peers.stall6_line MODE ...``):

- ``sorter``: a JetStream consumer, a ``Sorter`` handler on a ``ServiceRuntime``. It appends
  each parcel's seq to ``--record`` with one ``os.write`` once handled, and stalls its event
  loop (``time.sleep``, or ``await asyncio.sleep`` with ``--stall-kind async``) for
  ``--stall-s`` on the seqs in ``--stall-at``. Says ``READY``, then ``STALLING <seq>`` as a
  stall begins; on ``STATS`` prints ``RESULT {...}`` (transport stats, queue high water,
  VmRSS); on ``SHUTDOWN <timeout>`` runs ``runtime.shutdown(timeout)``, prints ``RESULT``
  and exits.
- ``induct``: a JetStream publisher of ``--count`` parcels in one burst; after
  ``--pause-at`` publishes (PubAcks still outstanding) it says ``PAUSING {...}`` and
  SIGSTOPs itself; the test SIGCONTs it. Then flush, ``RESULT``, exit.
- ``core-sorter``: a core NATS raw subscriber (``--maxsize``, ``--pending-limit``) that
  takes ``--slow-ms`` per parcel; ``STATS`` prints what it received and counted.
- ``core-induct``: a core NATS publisher of ``--count`` parcels, as fast as it can; RESULT
  with the slowest single publish and its VmRSS before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
from typing import Any

from mycelium_mono import U32, U64, MessageBus, MessageHandler, ServiceRuntime, message
from peers.common import memory_kib, read_line, say, serve_runtime, stats_dict


@message(type_id=47601, topic="stall6.parcels")
class Parcel:
    belt: U32
    seq: U64
    chute: U32


def parcel(seq: int) -> Parcel:
    return Parcel(belt=1, seq=seq, chute=seq % 13)


class Sorter(MessageHandler[Parcel]):
    def __init__(self, fd: int, stall_at: set[int], stall_s: float, work_s: float) -> None:
        self.fd = fd
        self.work_s = work_s
        self.stall_at = stall_at
        self.stall_s = stall_s
        self.stalled: set[int] = set()

    def _stall_now(self, p: Parcel) -> bool:
        if p.seq in self.stall_at and p.seq not in self.stalled:
            self.stalled.add(p.seq)  # once per seq: its redelivery goes through
            say("STALLING", p.seq)
            return True
        return False

    def handle(self, p: Parcel) -> None:
        if self._stall_now(p):
            time.sleep(self.stall_s)  # the whole event loop stops: no acks, no reads
        if self.work_s:
            time.sleep(self.work_s)
        os.write(self.fd, f"{p.seq}\n".encode())


class AsyncSorter(Sorter):
    async def handle(self, p: Parcel) -> None:  # type: ignore[override]
        if self._stall_now(p):
            await asyncio.sleep(self.stall_s)  # stalled, the loop still runs
        os.write(self.fd, f"{p.seq}\n".encode())


def nats_bus(args: argparse.Namespace, jetstream: bool) -> MessageBus:
    if jetstream:
        return MessageBus.with_nats(
            args.url, jetstream=True, stream=args.stream, durable=args.durable,
            ack_wait_s=args.ack_wait, fetch_batch=args.fetch_batch,
        )  # fmt: skip
    return MessageBus.with_nats(args.url, pending_limit=args.pending_limit)


async def sorter(args: argparse.Namespace) -> None:
    fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stall_at = {int(s) for s in args.stall_at.split(",") if s}
    cls = AsyncSorter if args.stall_kind == "async" else Sorter
    bus = nats_bus(args, jetstream=True)
    runtime = ServiceRuntime(bus, maxsize=args.maxsize)
    running = await runtime.spawn_service(cls(fd, stall_at, args.stall_s, args.work_ms / 1000))
    await bus.ready()
    say("READY")

    def result() -> dict[str, Any]:
        subs = running.context.subscriptions
        return {
            **stats_dict(bus.transport),
            "high_water": max(s.stats.high_water for s in subs),
            "maxsize": args.maxsize,
            "vmrss_kib": memory_kib("VmRSS"),
            "handled": running.handled,
        }

    await serve_runtime(runtime, result)


async def induct(args: argparse.Namespace) -> None:
    bus = nats_bus(args, jetstream=True)
    await bus.start()
    pub = bus.publisher(Parcel)
    transport: Any = bus.transport
    for seq in range(1, args.count + 1):
        await pub.publish(parcel(seq))
        if seq == args.pause_at:
            unacked = sum(not u.future.done() for u in transport._unacked)
            say("PAUSING", {"unacked": unacked})
            os.kill(os.getpid(), signal.SIGSTOP)  # the test SIGCONTs us
    await transport.flush()
    say("RESULT", stats_dict(transport))
    await bus.close()


async def core_sorter(args: argparse.Namespace) -> None:
    bus = nats_bus(args, jetstream=False)
    sub = bus.subscribe(Parcel, maxsize=args.maxsize)
    await bus.ready()
    say("READY")
    seqs: list[int] = []

    async def take() -> None:
        async for p in sub:
            seqs.append(p.seq)
            time.sleep(args.slow_ms / 1000)  # a slow sorter: its loop reads nothing meanwhile

    taker = asyncio.get_running_loop().create_task(take())
    while await read_line() == "STATS":
        ordered = all(a < b for a, b in itertools.pairwise(seqs))
        say("RESULT", {
            **stats_dict(bus.transport), "got": len(seqs), "unique": len(set(seqs)),
            "ordered": ordered, "high_water": sub.stats.high_water, "queued": len(sub),
            "vmrss_kib": memory_kib("VmRSS"),
        })  # fmt: skip
    taker.cancel()
    await bus.close()


async def core_induct(args: argparse.Namespace) -> None:
    bus = nats_bus(args, jetstream=False)
    await bus.start()
    pub = bus.publisher(Parcel)
    before = memory_kib("VmRSS")
    slowest = 0.0
    started = time.perf_counter()
    for seq in range(1, args.count + 1):
        t0 = time.perf_counter()
        await pub.publish(parcel(seq))
        slowest = max(slowest, time.perf_counter() - t0)
        if seq == args.count // 10:
            before = memory_kib("VmRSS")  # warmed up
    elapsed = time.perf_counter() - started
    await bus.transport.flush()  # type: ignore[attr-defined]
    say("RESULT", {**stats_dict(bus.transport), "slowest_s": slowest, "elapsed_s": elapsed,
                   "vmrss_before_kib": before, "vmrss_after_kib": memory_kib("VmRSS")})
    await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["sorter", "induct", "core-sorter", "core-induct"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", default="STALL6")
    parser.add_argument("--durable", default=None)
    parser.add_argument("--record", default="/dev/null")
    parser.add_argument("--ack-wait", type=float, default=30.0)
    parser.add_argument("--fetch-batch", type=int, default=64)
    parser.add_argument("--maxsize", type=int, default=100)
    parser.add_argument("--stall-at", default="")
    parser.add_argument("--stall-s", type=float, default=0.0)
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--stall-kind", choices=["sync", "async"], default="sync")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--pause-at", type=int, default=0)
    parser.add_argument("--pending-limit", type=int, default=512 * 1024)
    parser.add_argument("--slow-ms", type=float, default=0.0)
    args = parser.parse_args()
    modes = {"sorter": sorter, "induct": induct, "core-sorter": core_sorter,
             "core-induct": core_induct}
    asyncio.run(modes[args.mode](args))


if __name__ == "__main__":
    main()
