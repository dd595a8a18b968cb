"""The ward process: sends samples, then collects every result and page the lab sends back.

argv: kind (zmq | nats | js), own address or NATS URL, peer address or stream name, count."""

import asyncio
import sys

from lab.messages import PageSent, ResultReady, SampleTaken
from lab.services import is_critical

from mycelium_mono import MessageBus


def make_bus(kind: str, where: str, stream: str) -> MessageBus:
    if kind == "zmq":
        return MessageBus.with_tcp(where)
    return MessageBus.with_nats(where, jetstream=kind == "js", name="ward", stream=stream)


async def main(kind: str, where: str, peer: str, count: int) -> None:
    bus = make_bus(kind, where, peer)
    results = bus.subscribe(ResultReady, maxsize=count)
    pages = bus.subscribe(PageSent, maxsize=count)
    if kind == "zmq":
        await bus.connect_to(peer)
    await bus.ready()
    if kind == "zmq":
        await bus.wait_for_subscribers(1, SampleTaken, timeout=20)
    publisher = bus.publisher(SampleTaken)
    for n in range(count):
        await publisher.publish(SampleTaken(sample_id=n, patient=f"Zoë {n}", taken_ns=n))
    critical = sum(map(is_critical, range(count)))
    async with asyncio.timeout(30):
        got = sorted([(await results.recv()).sample_id for _ in range(count)])
        paged = sorted([(await pages.recv()).sample_id for _ in range(critical)])
    print("ward got", len(got), got == list(range(count)), paged, flush=True)
    await bus.close()


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
