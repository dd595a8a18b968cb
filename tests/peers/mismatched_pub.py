"""A publisher whose Tick (type id 4001) is defined differently: it must be refused loudly.

``--engine zmq`` (default) or ``nats``; ``--differ layout`` (default: same id and topic,
other fields) or ``--differ topic`` (same fields, other topic). Prints ``READY <address>``;
on ``GO <n>`` publishes ``n`` of its Ticks; runs until ``QUIT``.
"""

from __future__ import annotations

import argparse
import asyncio

from mycelium_mono.bus.transports.zmq import ZmqTransport
from peers.common import add_transport_args, make_transport, say, wait_for
from peers.inlet import ListInlet


def make_tick(differ: str, seq: int) -> object:
    if differ == "topic":
        from peers import messages_topic

        return messages_topic.Tick(seq=seq, value=seq, blob=bytes(32))
    from peers import messages_v2

    return messages_v2.Tick(seq=seq, spare=0, value=seq, blob=bytes(32))


async def main() -> None:
    parser = argparse.ArgumentParser()
    add_transport_args(parser)
    parser.add_argument("--differ", choices=["layout", "topic"], default="layout")
    args = parser.parse_args()
    make_tick(args.differ, 0)  # registers the definition before any subscription arrives
    transport = make_transport(args)
    await transport.start(ListInlet())
    say("READY", transport.address if isinstance(transport, ZmqTransport) else "")
    count = int(await wait_for("GO"))
    for seq in range(1, count + 1):
        await transport.publish(make_tick(args.differ, seq))
    await wait_for("QUIT")
    await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
