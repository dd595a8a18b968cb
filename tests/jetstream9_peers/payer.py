"""The payment front end: publishes ``--count`` PaymentRequests from ``--first`` on, in chunks
of ``--chunk`` followed by ``flush()``. After each chunk the server confirmed it prints
``CONFIRMED <last pay_id>``; a chunk whose flush failed (``ConnectionError``: the server went
away past ``flush_timeout_s``) is published again, as a user would, after ``RETRY <first>``.
Prints ``DONE`` once everything is confirmed, then waits for ``QUIT``."""

from __future__ import annotations

import argparse
import asyncio

from peers.common import say, wait_for

from jetstream9_peers.messages import PaymentRequest
from mycelium_mono import MessageBus


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("--pace-ms", type=float, default=0.0)
    parser.add_argument("--flush-timeout", type=float, default=3.0)
    args = parser.parse_args()
    bus = MessageBus.with_nats(
        args.url, jetstream=True, stream=args.stream, flush_timeout_s=args.flush_timeout,
        ack_timeout_s=1.0,
    )
    async with bus:
        requests = bus.publisher(PaymentRequest)
        say("READY")
        last = args.first + args.count
        for start in range(args.first, last, args.chunk):
            chunk = range(start, min(start + args.chunk, last))
            while True:
                try:
                    for pay_id in chunk:
                        request = PaymentRequest(pay_id=pay_id, amount_cents=pay_id * 100)
                        await requests.publish(request)
                        if args.pace_ms:
                            await asyncio.sleep(args.pace_ms / 1000)
                    await bus.transport.flush()
                except ConnectionError as exc:
                    say(f"RETRY {start} {str(exc).splitlines()[0]}")
                    continue
                break
            say(f"CONFIRMED {chunk[-1]}")
        say("DONE")
        await wait_for("QUIT")


if __name__ == "__main__":
    asyncio.run(main())
