"""A slow telemetry sink: ``MessageBus.with_tcp`` subscribing to Readings from ``--connect``.

Prints ``READY`` once ``ready()`` returned. It takes one reading at a time and, every
``--stall-every`` readings, stalls its event loop with ``time.sleep(--stall-s)`` (a slow
database driver). A sampler reads the queue length from outside the consumer every loop
turn. After ``--expect`` readings it prints ``RESULT {json}``: count, in_order, the largest
queue length sampled, the subscriber's high_water, and the RSS (KiB) at 25 % and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from mycelium_mono import MessageBus
from peers.bounds3_wind import Reading
from peers.common import memory_kib, read_line, say


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect", required=True)
    parser.add_argument("--maxsize", type=int, default=64)
    parser.add_argument("--hwm", type=int, default=1000)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--stall-every", type=int, default=5000)
    parser.add_argument("--stall-s", type=float, default=0.05)
    args = parser.parse_args()
    bus = MessageBus.with_tcp("127.0.0.1:0", hwm=args.hwm)
    readings = bus.subscribe(Reading, maxsize=args.maxsize)
    await bus.start()
    await bus.connect_to(args.connect)
    await bus.ready()
    say("READY")
    biggest = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal biggest
        while not stop.is_set():
            biggest = max(biggest, len(readings))
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    count, in_order, last, rss_quarter = 0, True, 0, 0
    async for r in readings:
        biggest = max(biggest, len(readings) + 1)  # +1: the one just taken was queued too
        in_order = in_order and r.seq == last + 1
        last = r.seq
        count += 1
        if count % args.stall_every == 0:
            time.sleep(args.stall_s)
        if count == args.expect // 4:
            rss_quarter = memory_kib()
        if count == args.expect:
            break
    stop.set()
    await sampler
    say("RESULT", json.dumps({
        "count": count, "in_order": in_order, "biggest": biggest,
        "high_water": readings.stats.high_water, "rss_quarter": rss_quarter,
        "rss_end": memory_kib(), "stats": bus.transport.stats.extra,
    }))
    while await read_line() not in ("", "QUIT"):
        pass
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
