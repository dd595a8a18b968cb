"""The elevator bank's dispatch side in its own process (``tests/promise5_app/liftbank``).

Runs ``Dispatcher``, ``SafetyMonitor`` and ``CarController`` on a ``ServiceRuntime`` over
``MessageBus.with_tcp``/``with_nats``; prints ``BOUND <address>`` (ZeroMQ) once bound and
``READY`` once its subscriptions are in
effect (over ZeroMQ: once the test subscribed to its door commands), and on ``QUIT`` shuts the
runtime down and prints ``RESULT`` with each service's ``handled``/``errors``, the calls the
safety monitor saw (as ``to_bytes().hex()``) and the transport's counters.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "promise5_app"))

from liftbank.messages import DoorCommand, HallCall
from liftbank.services import CarController, Dispatcher, SafetyMonitor

from mycelium_mono.bus import MessageBus, ServiceRuntime
from mycelium_mono.bus.transports.zmq import ZmqTransport
from peers.common import add_transport_args, say, stats_dict, transport_options, wait_for


class Recorder(SafetyMonitor):
    """The safety monitor, keeping what it saw."""

    def __init__(self) -> None:
        self.seen: list[HallCall] = []

    def handle(self, call: HallCall) -> None:
        self.seen.append(call)
        super().handle(call)


async def main() -> None:
    parser = argparse.ArgumentParser()
    add_transport_args(parser)
    parser.add_argument("--max-deliver", type=int, default=5)
    args = parser.parse_args()
    address, options = transport_options(args)
    if args.engine == "zmq":
        bus = MessageBus.with_tcp(address, **options)
    else:
        if args.jetstream:
            options.update(max_deliver=args.max_deliver, backoff_s=(0.05,))
        bus = MessageBus.with_nats(address, **options)
    runtime = ServiceRuntime(bus)
    recorder = Recorder()
    running = [await runtime.spawn_service(s) for s in (Dispatcher(), recorder, CarController())]
    await bus.start()
    transport = bus.transport
    if isinstance(transport, ZmqTransport):
        say("BOUND", transport.address)   # the test connects back to this address
    for peer in args.connect:
        await bus.connect_to(peer)
    await bus.ready()
    if isinstance(transport, ZmqTransport):
        await transport.wait_for_subscribers(1, DoorCommand, timeout=30)
    say("READY")
    await wait_for("QUIT")
    await runtime.shutdown()
    say("RESULT", {
        "services": {r.name: [r.handled, r.errors] for r in running},
        "seen": [c.to_bytes().hex() for c in recorder.seen],
        "transport": stats_dict(transport),
    })


if __name__ == "__main__":
    asyncio.run(main())
