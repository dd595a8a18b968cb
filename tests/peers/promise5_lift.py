"""The elevator bank's dispatch side in its own process (``tests/promise5_app/liftbank``).

Runs ``Dispatcher``, ``SafetyMonitor`` and ``CarController`` on a ``ServiceRuntime`` over
``MessageBus.with_tcp``/``with_nats``; prints ``BOUND <address>`` (ZeroMQ) once bound and
``READY`` once its subscriptions are in effect (over ZeroMQ: once the test subscribed to its
door commands). On ``QUIT`` (with ``--quit-after N``: as soon as the monitor saw N calls) it
shuts the runtime down and prints ``RESULT`` with each service's ``handled``/``errors``, the
calls the safety monitor saw (as ``to_bytes().hex()``) and the transport's counters.
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

    def __init__(self, quit_after: int) -> None:
        self.seen: list[HallCall] = []
        self.quit_after = quit_after
        self.enough = asyncio.Event()

    def handle(self, call: HallCall) -> None:
        self.seen.append(call)
        if len(self.seen) == self.quit_after:
            self.enough.set()
        super().handle(call)


async def main() -> None:
    parser = argparse.ArgumentParser()
    add_transport_args(parser)
    parser.add_argument("--max-deliver", type=int, default=5)
    parser.add_argument("--quit-after", type=int, default=0,
                        help="shut down as soon as the monitor saw this many calls")
    args = parser.parse_args()
    address, options = transport_options(args)
    if args.engine == "zmq":
        bus = MessageBus.with_tcp(address, **options)
    else:
        if args.jetstream:
            options.update(max_deliver=args.max_deliver, backoff_s=(0.05,))
        bus = MessageBus.with_nats(address, **options)
    runtime = ServiceRuntime(bus)
    recorder = Recorder(args.quit_after)
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
    if args.quit_after:
        await recorder.enough.wait()   # the outputs of the last calls are still in flight
    else:
        await wait_for("QUIT")
    await runtime.shutdown()
    say("RESULT", {
        "services": {r.name: [r.handled, r.errors] for r in running},
        "seen": [c.to_bytes().hex() for c in recorder.seen],
        "transport": stats_dict(transport),
    })


if __name__ == "__main__":
    asyncio.run(main())
