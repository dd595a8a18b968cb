"""A ZeroMQ subscriber process that checks what it receives, per (tag, run) stream.

Connects to every ``--connect``, prints ``READY`` once ``ready()`` returned, ``GOT <n>``
every ``--every`` messages, and ``RESULT {json}`` once it holds a Tick with ``seq`` equal
to ``--until`` (or the number after ``UNTIL`` on stdin) from every stream it heard (or
from stream ``--key``), or
after ``--timeout``. Per stream: first and last seq, count, and how many arrived repeated
or out of order (``bad``: a seq not exactly one more than the last one of that stream;
``back``: one at or below it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from peers.common import memory_kib, say, stats_dict, wait_for
from peers.inlet import CallInlet
from peers.messages import Tick

from mycelium_mono.bus.transports.zmq import ZmqTransport


class Streams:
    def __init__(self, every: int) -> None:
        self.every = every
        self.total = 0
        self.until = 0
        self.key = ""
        self.per: dict[str, dict[str, int]] = {}
        self.done = asyncio.Event()

    def deliver(self, msg: Any) -> None:
        assert isinstance(msg, Tick)
        key = f"{msg.value}/{int.from_bytes(msg.blob, 'little')}"
        s = self.per.get(key)
        if s is None:
            s = self.per[key] = {"first": msg.seq, "last": msg.seq, "count": 1, "bad": 0,
                                 "back": 0}  # fmt: skip
        else:
            if msg.seq != s["last"] + 1:
                s["bad"] += 1  # a repeat, a step back, or a hole
            if msg.seq <= s["last"]:
                s["back"] += 1  # a repeat or a step back: order broken, not just a loss
            s["last"] = max(s["last"], msg.seq)
            s["count"] += 1
        self.total += 1
        if self.total % self.every == 0:
            say("GOT", self.total)
        self.check()

    def check(self) -> None:
        if not self.until:
            return
        if self.key:  # only that one stream must get there
            s = self.per.get(self.key)
            if s is not None and s["last"] >= self.until:
                self.done.set()
        elif self.per and all(s["last"] >= self.until for s in self.per.values()):
            self.done.set()


async def until_from_stdin(streams: Streams) -> None:
    streams.until = int(await wait_for("UNTIL"))
    streams.check()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--until", type=int, default=0)
    parser.add_argument("--key", default="", help="'tag/run': only this stream must reach it")
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--hwm", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    streams = Streams(args.every)
    streams.until = args.until
    streams.key = args.key
    transport = ZmqTransport("127.0.0.1:0", hwm=args.hwm)
    await transport.start(CallInlet(streams.deliver))
    transport.subscribe(Tick)
    for address in args.connect:
        await transport.connect_to(address)
    await transport.ready(timeout=30)
    say("READY")
    if not args.until:
        asyncio.get_running_loop().create_task(until_from_stdin(streams))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(streams.done.wait(), args.timeout)
    await asyncio.sleep(0.3)  # a duplicate or a straggler would show up now
    say("RESULT", {"streams": streams.per, "rss_peak_kb": memory_kib("VmHWM"),
                   **stats_dict(transport)})  # fmt: skip
    await transport.close()


if __name__ == "__main__":
    asyncio.run(main())
