"""A hostile ZeroMQ peer: a raw XPUB that mixes broken frames into a valid Tick stream.

Acknowledges every subscription the way a real transport does (so ``ready()`` passes),
prints ``READY <address>``, and on ``GO`` sends ``--count`` valid Ticks (``value`` = 9,
seq 1..) with one broken frame of each kind after every ``--every`` of them. Prints
``RESULT {json}`` with how many of each kind it sent, then closes on ``QUIT``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct

import zmq
from peers.common import say, wait_for
from peers.messages import Tick

from mycelium_mono.bus.transports.wire import (
    HEADER,
    MAX_FRAME,
    Outbound,
    endpoint_token,
    wire_type,
)


def broken_frames(good: bytes, rng: random.Random) -> dict[str, bytes]:
    """One frame per kind of damage, each made from a valid frame ``good``."""
    prefix = wire_type(Tick).prefix
    head = len(prefix)
    header = bytearray(good[head : head + HEADER.size])
    bad_magic = bytes(prefix) + b"XX" + bytes(header[2:]) + good[head + HEADER.size :]
    unknown = bytearray(good)
    struct.pack_into("<H", unknown, head + 4, 65_000)  # a type id nobody defines
    return {
        "truncated_header": good[: head + HEADER.size // 2],
        "prefix_only": prefix,
        "short_payload": good[:-5],
        "long_payload": good + b"\x00" * 7,
        "bad_magic": bad_magic,
        "oversize": prefix + b"\x00" * (MAX_FRAME + 1),
        "no_nul": bytes(rng.randrange(1, 256) for _ in range(40)),
        "random_tail": prefix + rng.randbytes(HEADER.size + 20),
        "unknown_type": bytes(unknown),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ctx = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 5000)
    xpub.setsockopt(zmq.SNDHWM, 0)
    xpub.bind("tcp://127.0.0.1:0")
    endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
    out = Outbound()
    say("READY", endpoint)
    go = asyncio.get_running_loop().create_task(wait_for("GO"))
    while not go.done():  # acknowledge subscriptions until told to go
        while xpub.poll(0, zmq.POLLIN):
            event = xpub.recv()
            if event[:1] == b"\x01":
                xpub.send(out.ack(event[1:], Tick.TYPE_ID, endpoint_token(endpoint)))
        await asyncio.sleep(0.01)
    sent: dict[str, int] = {"valid": 0}
    for seq in range(1, args.count + 1):
        good = out.frame(Tick(seq=seq, value=9, blob=bytes(32)))
        xpub.send(good)
        sent["valid"] += 1
        if seq % args.every == 0:
            for kind, frame in broken_frames(good, rng).items():
                xpub.send(frame)
                sent[kind] = sent.get(kind, 0) + 1
    say("RESULT", sent)
    await wait_for("QUIT")
    xpub.close()
    ctx.term()


if __name__ == "__main__":
    asyncio.run(main())
