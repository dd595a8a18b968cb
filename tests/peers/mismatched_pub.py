"""A publisher whose Tick (type id 4001) has a different layout: it must be refused loudly.

Prints ``READY <address>``; on ``GO <n>`` publishes ``n`` of its Ticks; runs until ``QUIT``.
"""

from __future__ import annotations

import asyncio
import sys

from mycelium_mono.bus.transports.zmq import ZmqTransport
from peers.common import say, wait_for
from peers.messages_v2 import Tick


async def main() -> None:
    transport = ZmqTransport(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0")
    await transport.start(lambda msg: None)
    say("READY", transport.address)
    count = int(await wait_for("GO"))
    for seq in range(1, count + 1):
        await transport.publish(Tick(seq=seq, spare=0, value=seq, blob=bytes(32)))
    await wait_for("QUIT")
    await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
