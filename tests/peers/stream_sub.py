"""Subscribe to Ticks and report how many arrived, in order or not.

Prints ``READY`` once its subscription is in effect at every peer, then ``RESULT {...}``
after ``--count`` Ticks (or after ``EXPECT <n>`` on stdin sets the count). ``--slow-every``
and ``--slow-ms`` block the event loop now and then, like a consumer doing real work;
``--record`` appends every received seq to a file (flushed before the next message, so it
survives SIGKILL). ``--bus-maxsize N`` consumes through a ``MessageBus`` subscriber bounded
to ``N`` (policy "block") instead of straight from the transport, and reports the longest
queue seen; ``--stall-at K --stall-s S`` blocks the event loop ``S`` seconds at message ``K``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from mycelium_mono import MessageBus
from peers.common import (
    add_transport_args,
    make_transport,
    memory_kib,
    say,
    stats_dict,
    wait_for,
)
from peers.inlet import CallInlet
from peers.messages import Tick


class Tally:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.received = 0
        self.last = 0
        self.out_of_order = 0
        self.first = 0
        self.target = args.count
        self.done = asyncio.Event()
        self.record = open(args.record, "a") if args.record else None  # noqa: SIM115

    def deliver(self, msg: Any) -> None:
        assert isinstance(msg, Tick)
        self.received += 1
        if self.first == 0:
            self.first = msg.seq
        elif msg.seq <= self.last:
            self.out_of_order += 1
        self.last = msg.seq
        if self.record is not None:
            self.record.write(f"{msg.seq}\n")
            self.record.flush()
        if self.args.slow_every and self.received % self.args.slow_every == 0:
            time.sleep(self.args.slow_ms / 1000)
        if self.args.stall_at and self.received == self.args.stall_at:
            time.sleep(self.args.stall_s)  # the whole event loop stalls, transport included
        if self.target and self.received >= self.target:
            self.done.set()


async def expect_from_stdin(tally: Tally) -> None:
    tally.target = int(await wait_for("EXPECT"))
    if tally.received >= tally.target:
        tally.done.set()


async def finish_when_quiet(tally: Tally, idle: float) -> None:
    """For lossy runs, where nobody knows how many will arrive: done after ``idle`` s of quiet."""
    seen = -1
    while tally.received == 0 or tally.received != seen:
        seen = tally.received
        await asyncio.sleep(idle)
    tally.done.set()


async def main() -> None:
    parser = argparse.ArgumentParser()
    add_transport_args(parser)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--slow-every", type=int, default=0)
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--record", default="")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=0.0, help="done after this quiet time")
    parser.add_argument("--bus-maxsize", type=int, default=0)
    parser.add_argument("--stall-at", type=int, default=0)
    parser.add_argument("--stall-s", type=float, default=0.0)
    args = parser.parse_args()
    tally = Tally(args)
    transport = make_transport(args)
    peak = [0]
    if args.bus_maxsize:
        bus = MessageBus(transport)
        sub = bus.subscribe(Tick, maxsize=args.bus_maxsize, policy="block")
        await bus.start()
        for address in args.connect:
            await bus.connect_to(address)
        await bus.ready()

        async def consume() -> None:
            async for msg in sub:
                peak[0] = max(peak[0], len(sub) + 1)
                tally.deliver(msg)

        asyncio.get_running_loop().create_task(consume())
    else:
        await transport.start(CallInlet(tally.deliver))
        transport.subscribe(Tick)
        for address in args.connect:
            await transport.connect_to(address)
        await transport.ready()
    say("READY")
    if args.idle:
        asyncio.get_running_loop().create_task(finish_when_quiet(tally, args.idle))
    elif not args.count:
        asyncio.get_running_loop().create_task(expect_from_stdin(tally))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.done.wait(), args.timeout)
    await asyncio.sleep(0.2)  # let anything unexpected (a duplicate, an extra) show up
    say(
        "RESULT",
        {
            "count": tally.received,
            "first": tally.first,
            "last": tally.last,
            "out_of_order": tally.out_of_order,
            "queue_peak": peak[0],
            "rss_peak_kb": memory_kib("VmHWM"),
            **stats_dict(transport),
        },
    )
    await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
