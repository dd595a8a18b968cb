"""A parcel sorter: ``MessageBus.with_tcp`` subscribing to Scans from ``--connect`` peers.

Prints ``READY`` once ``ready()`` returned. ``--stuck`` never takes a message (its queue of
``--maxsize`` fills and it stops reading its socket). Otherwise it takes every scan and, on
``REPORT``, prints ``RESULT {"first": seq, "last": seq, "count": n, "in_order": bool}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json

from mycelium_mono import MessageBus
from peers.common import read_line, say
from peers.stranger_parcels import Scan


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--maxsize", type=int, default=10_000)
    parser.add_argument("--hwm", type=int, default=100_000)
    parser.add_argument("--stuck", action="store_true")
    args = parser.parse_args()
    bus = MessageBus.with_tcp("127.0.0.1:0", hwm=args.hwm)
    bins = bus.subscribe(Scan, maxsize=args.maxsize)
    await bus.start()
    for address in args.connect:
        await bus.connect_to(address)
    await bus.ready()
    say("READY")
    seqs: list[int] = []

    async def take() -> None:
        async for s in bins:
            seqs.append(s.seq)

    taker = None if args.stuck else asyncio.create_task(take())
    while (line := await read_line()) not in ("", "QUIT"):
        if line == "REPORT":
            in_order = all(b == a + 1 for a, b in itertools.pairwise(seqs))
            say("RESULT", json.dumps({
                "first": seqs[0] if seqs else 0, "last": seqs[-1] if seqs else 0,
                "count": len(seqs), "in_order": in_order,
            }))
    if taker is not None:
        taker.cancel()
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
