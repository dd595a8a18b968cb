"""A ZeroMQ publisher process: Ticks tagged with ``--tag`` (``value``) and ``--run`` (``blob``).

Prints ``READY <address>``; starts once ``--wait-subscribers`` subscriptions arrived (else on
``GO``), then publishes ``seq`` 1.. with ``await publish`` (``--count 0``: until killed),
printing ``PROGRESS <n>`` every ``--every`` publishes, then ``RESULT {stats}``; closes on
``QUIT``. The test SIGKILLs it mid-stream, so nothing here relies on a clean exit.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from peers.common import say, stats_dict, wait_for
from peers.inlet import ListInlet
from peers.messages import Tick

from mycelium_mono.bus.transports.zmq import ZmqTransport


def tagged(seq: int, tag: int, run: int) -> Tick:
    """Tick ``seq`` of publisher ``tag``'s ``run``-th incarnation (both readable back)."""
    return Tick(seq=seq, value=tag, blob=run.to_bytes(32, "little"))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--tag", type=int, default=1)
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--wait-subscribers", type=int, default=0)
    parser.add_argument("--hwm", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--pause-every", type=int, default=0, help="sleep now and then")
    parser.add_argument("--pause-ms", type=float, default=1.0)
    args = parser.parse_args()
    transport = ZmqTransport(args.bind, hwm=args.hwm)
    await transport.start(ListInlet())
    say("READY", transport.address)
    if args.wait_subscribers:
        await transport.wait_for_subscribers(args.wait_subscribers, Tick, timeout=30)
    else:
        await wait_for("GO")
    seqs = itertools.count(1) if args.count == 0 else range(1, args.count + 1)
    for seq in seqs:
        await transport.publish(tagged(seq, args.tag, args.run))
        if seq % args.every == 0:
            say("PROGRESS", seq)
            await asyncio.sleep(0)  # let the XPUB's subscription events in
        if args.pause_every and seq % args.pause_every == 0:
            await asyncio.sleep(args.pause_ms / 1000)  # a paced stream, not a CPU hog
    say("RESULT", stats_dict(transport))
    await wait_for("QUIT")
    await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
