"""A game-server node: simulation (publishes Snapshots), relay, or viewer — one process.

Options: ``--bind``; ``--connect`` (repeatable); ``--publish N`` Snapshots as sim ``--sim``
run ``--run`` (0: until killed), after ``--wait-subscribers`` subscriptions (else on ``GO``);
``--view snapshot|relayed`` subscribes and checks each stream per (sim, run); ``--relay``
republishes every Snapshot as a Relayed (sim ``--sim``, run ``--run``). Prints
``BOUND <address>`` once bound, ``READY <address>`` once connected and subscribed to,
``PROGRESS n`` every ``--every`` publishes, ``GOT n`` every ``--every`` received, and on
``STATS`` ``RESULT {json}``; closes on ``QUIT`` (and prints ``CLOSED {json}`` with the stats then).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from typing import Any

from mycelium_mono.bus.transports.base import CallbackInlet
from mycelium_mono.bus.transports.zmq import ZmqTransport
from zmq9_peers.arena import Relayed, Snapshot


def say(word: str, payload: Any = "") -> None:
    text = json.dumps(payload) if isinstance(payload, dict) else str(payload)
    print(f"{word} {text}".rstrip(), flush=True)


def stats(t: ZmqTransport) -> dict[str, Any]:
    s = t.stats
    return {"sent": s.sent, "received": s.received, "dropped_malformed": s.dropped_malformed,
            "dropped_unknown_type": s.dropped_unknown_type,
            "dropped_overflow": s.dropped_overflow, "sequence_gaps": s.sequence_gaps,
            **s.extra}  # fmt: skip


class Ledger:
    """Per stream key: first and last seq, count, lost (holes), back (repeat/step back)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.total = 0
        self.per: dict[str, dict[str, int]] = {}

    def note(self, key: str, seq: int, *, counted: bool = True) -> None:
        s = self.per.get(key)
        if s is None:
            self.per[key] = {"first": seq, "last": seq, "count": 1, "lost": 0, "back": 0}
        else:
            if seq > s["last"] + 1:
                s["lost"] += seq - s["last"] - 1
            elif seq <= s["last"]:
                s["back"] += 1
            s["last"] = max(s["last"], seq)
            s["count"] += 1
        if not counted:
            return
        self.total += 1
        if self.total % self.every == 0:
            say("GOT", self.total)


async def commands(t: ZmqTransport, ledger: Ledger, go: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "GO":
            go.set()
        elif line == "STATS":
            say("RESULT", {"streams": ledger.per, **stats(t)})
        elif line.startswith("CONNECT"):
            await t.connect_to(line.split()[1])
            say("CONNECTED")
        elif not line or line == "QUIT":
            return


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", default="127.0.0.1:0")
    p.add_argument("--connect", action="append", default=[])
    p.add_argument("--publish", type=int, default=-1)
    p.add_argument("--sim", type=int, default=1)
    p.add_argument("--run", type=int, default=1)
    p.add_argument("--wait-subscribers", type=int, default=0)
    p.add_argument("--view", choices=["snapshot", "relayed"], default=None)
    p.add_argument("--relay", action="store_true")
    p.add_argument("--hwm", type=int, default=100_000)
    p.add_argument("--lossy", action="store_true")
    p.add_argument("--heartbeat-ms", type=int, default=0)
    p.add_argument("--keepalive", type=int, default=10, help="keepalive_s")
    p.add_argument("--close-timeout", type=float, default=10.0)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--pause-every", type=int, default=200)
    args = p.parse_args()
    ledger = Ledger(args.every)
    out_seq = itertools.count(1)
    t: ZmqTransport

    def deliver(msg: Any) -> None:
        if isinstance(msg, Snapshot):
            ledger.note(f"{msg.sim}/{msg.run}", msg.seq)
            if args.relay:
                t.publish_nowait(Relayed(seq=next(out_seq), sim=args.sim, run=args.run,
                                         origin_seq=msg.seq, origin_run=msg.run))  # fmt: skip
        elif isinstance(msg, Relayed):
            ledger.note(f"{msg.sim}/{msg.run}", msg.seq)
            # The origin's stream as this relay incarnation saw it: gapless, in order.
            ledger.note(f"origin{msg.origin_run}@{msg.sim}/{msg.run}", msg.origin_seq,
                        counted=False)

    t = ZmqTransport(args.bind, hwm=args.hwm, lossless=not args.lossy,
                     heartbeat_ms=args.heartbeat_ms, close_timeout_s=args.close_timeout,
                     keepalive_s=args.keepalive)  # fmt: skip
    await t.start(CallbackInlet(deliver))
    say("BOUND", t.address)  # before any wait: a peer may need the address to subscribe
    if args.view == "snapshot" or args.relay:
        t.subscribe(Snapshot)
    if args.view == "relayed":
        t.subscribe(Relayed)
    if args.wait_subscribers:
        # Before anything comes in: a relay's output published with nobody subscribed yet
        # would go nowhere (ZeroMQ sends only to connected subscribers).
        await t.wait_for_subscribers(args.wait_subscribers,
                                     Relayed if args.relay else Snapshot, timeout=30)
    for address in args.connect:
        await t.connect_to(address)
    if args.connect:
        await t.ready(timeout=30)
    say("READY", t.address)
    go = asyncio.Event()
    cmd = asyncio.get_running_loop().create_task(commands(t, ledger, go))
    if args.publish >= 0:
        if not args.wait_subscribers:
            await go.wait()
        seqs = itertools.count(1) if args.publish == 0 else range(1, args.publish + 1)
        for seq in seqs:
            await t.publish(Snapshot(seq=seq, sim=args.sim, run=args.run, x=seq * 0.5, y=-1.0))
            if seq % args.every == 0:
                say("PROGRESS", seq)
            if args.pause_every and seq % args.pause_every == 0:
                await asyncio.sleep(0.001)
        say("PUBLISHED", {"count": args.publish, **stats(t)})
    await cmd
    await t.close()
    say("CLOSED", {"streams": ledger.per, **stats(t)})


if __name__ == "__main__":
    asyncio.run(main())
