"""Publish ``--count`` Ticks (seq ``--first``..) when told ``GO`` (or when subscribers arrive).

Prints ``READY <address>``, then ``RESULT {stats}`` after the last publish, then waits for
``QUIT`` on stdin before closing (closing earlier could cut off a lossless backlog).
"""

from __future__ import annotations

import argparse
import asyncio

from mycelium_mono.bus.transports.nats import NatsTransport
from mycelium_mono.bus.transports.zmq import ZmqTransport
from peers.common import add_transport_args, make_transport, say, stats_dict, wait_for
from peers.inlet import ListInlet
from peers.messages import Tick, tick


async def main() -> None:
    parser = argparse.ArgumentParser()
    add_transport_args(parser)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--wait-subscribers", type=int, default=0, help="zmq: instead of GO")
    parser.add_argument("--nowait", action="store_true", help="use publish_nowait")
    args = parser.parse_args()
    transport = make_transport(args)
    await transport.start(ListInlet())
    address = transport.address if isinstance(transport, ZmqTransport) else args.url
    say("READY", address)
    if args.wait_subscribers and isinstance(transport, ZmqTransport):
        await transport.wait_for_subscribers(args.wait_subscribers, Tick, timeout=30)
    else:
        await wait_for("GO")
    for seq in range(args.first, args.first + args.count):
        if args.nowait:
            transport.publish_nowait(tick(seq))
            if seq % 1000 == 0:
                await asyncio.sleep(0)
        else:
            await transport.publish(tick(seq))
    if isinstance(transport, NatsTransport):
        await transport.flush()
    say("RESULT", stats_dict(transport))
    await wait_for("QUIT")
    await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
