"""A publisher whose Tick (type id 4001) has a different layout: it must be refused loudly.

``--engine zmq`` (default) or ``nats``. Prints ``READY <address>``; on ``GO <n>`` publishes
``n`` of its Ticks; runs until ``QUIT``.
"""

from __future__ import annotations

import argparse
import asyncio

from mycelium_mono.bus.transports.zmq import ZmqTransport
from peers.common import add_transport_args, make_transport, say, wait_for
from peers.messages_v2 import Tick


async def main() -> None:
    parser = argparse.ArgumentParser()
    add_transport_args(parser)
    transport = make_transport(parser.parse_args())
    await transport.start(lambda msg: None)
    say("READY", transport.address if isinstance(transport, ZmqTransport) else "")
    count = int(await wait_for("GO"))
    for seq in range(1, count + 1):
        await transport.publish(Tick(seq=seq, spare=0, value=seq, blob=bytes(32)))
    await wait_for("QUIT")
    await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
