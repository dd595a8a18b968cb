"""The meters: publish ``--count`` MeterReads from seq ``--first`` on into ``--stream``
(``--pace-ms`` apart; default options otherwise), flush, print ``DONE {seconds}``, then wait
for ``QUIT``."""

from __future__ import annotations

import argparse
import asyncio
import time

from peers.common import say, wait_for

from jetstream8_peers.messages import MeterRead
from mycelium_mono import MessageBus


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--pace-ms", type=float, default=0.0)
    args = parser.parse_args()
    bus = MessageBus.with_nats(args.url, jetstream=True, stream=args.stream)
    async with bus:
        meters = bus.publisher(MeterRead)
        say("READY")
        began = time.monotonic()
        for seq in range(args.first, args.first + args.count):
            await meters.publish(MeterRead(seq=seq, kwh=seq * 7))
            if args.pace_ms:
                await asyncio.sleep(args.pace_ms / 1000)
        await bus.transport.flush()
        say(f"DONE {time.monotonic() - began:.2f}")
        await wait_for("QUIT")


if __name__ == "__main__":
    asyncio.run(main())
