"""One stage of the chain in its own process, on ``MessageBus.with_tcp``/``with_nats``.

``--role adapter`` waits for ``GO`` then publishes ``--count`` quotes; ``strategy`` and
``execution`` run their handler. Every role prints ``READY`` once its subscriptions are in
effect (and, over ZeroMQ, once its downstream peer subscribed), then runs until ``QUIT``.
"""

from __future__ import annotations

import argparse
import asyncio

from mycelium_mono.bus import MessageBus, ServiceRuntime
from mycelium_mono.bus.transports.zmq import ZmqTransport
from peers.chain_services import Adapter, Execution, Strategy
from peers.common import add_transport_args, say, stats_dict, transport_options, wait_for
from peers.messages import Fill, Quote, Signal

DOWNSTREAM = {"adapter": Quote, "strategy": Signal, "execution": Fill}


async def main() -> None:
    parser = argparse.ArgumentParser()
    add_transport_args(parser)
    parser.add_argument("--role", choices=sorted(DOWNSTREAM), required=True)
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    address, options = transport_options(args)
    if args.engine == "zmq":
        bus = MessageBus.with_tcp(address, **options)
    else:
        bus = MessageBus.with_nats(address, **options)
    runtime = ServiceRuntime(bus)
    if args.role == "strategy":
        await runtime.spawn_service(Strategy())
    elif args.role == "execution":
        await runtime.spawn_service(Execution())
    for peer in args.connect:
        await bus.connect_to(peer)
    await bus.ready()
    transport = bus.transport
    if isinstance(transport, ZmqTransport):
        await transport.wait_for_subscribers(1, DOWNSTREAM[args.role], timeout=30)
    say("READY", transport.address if isinstance(transport, ZmqTransport) else "")
    if args.role == "adapter":
        await wait_for("GO")
        await runtime.spawn_service(Adapter(args.count))
    await wait_for("QUIT")
    say("RESULT", stats_dict(transport))
    await runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
