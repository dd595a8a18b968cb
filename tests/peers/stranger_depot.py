"""A parcel depot: a ``MessageBus.with_tcp`` that publishes ``--count`` Scans of its ``--hub``.

As a README reader writes it: bind, ``wait_for_subscribers(1, Scan)``, then ``await publish``
each scan (seq ``1..count``). Prints ``READY <address>``, ``RESULT {stats}`` after the last
publish, and closes on ``QUIT``.
"""

from __future__ import annotations

import argparse
import asyncio

from mycelium_mono import MessageBus
from peers.common import say, stats_dict, wait_for
from peers.stranger_parcels import Scan


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--hub", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--hwm", type=int, default=100_000)
    parser.add_argument("--yield-every", type=int, default=0)
    args = parser.parse_args()
    bus = MessageBus.with_tcp(args.bind, hwm=args.hwm)
    await bus.start()
    say("READY", bus.transport.address)  # type: ignore[attr-defined]
    await bus.wait_for_subscribers(1, Scan, timeout=30)
    pub = bus.publisher(Scan)
    for seq in range(1, args.count + 1):
        await pub.publish(Scan(hub=args.hub, seq=seq, parcel=args.hub * 10_000_000 + seq))
        if args.yield_every and seq % args.yield_every == 0:
            await asyncio.sleep(0.001)
    say("RESULT", {**stats_dict(bus.transport), "published": bus.stats.published})
    await wait_for("QUIT")
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
