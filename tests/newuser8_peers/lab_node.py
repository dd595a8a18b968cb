"""The lab process: Analyzer and Notifier on a ServiceRuntime over ZeroMQ, NATS or JetStream.

argv: kind (zmq | nats | js), own address or NATS URL, peer address or stream name, count.
The Notifier consumes the ResultReady its own process's Analyzer emits."""

import asyncio
import sys

from lab.services import Analyzer, Notifier

from mycelium_mono import MessageBus, ServiceRuntime


def make_bus(kind: str, where: str, stream: str) -> MessageBus:
    if kind == "zmq":
        return MessageBus.with_tcp(where)
    return MessageBus.with_nats(where, jetstream=kind == "js", name="lab", stream=stream)


async def main(kind: str, where: str, peer: str, count: int) -> None:
    bus = make_bus(kind, where, peer)
    runtime = ServiceRuntime(bus)
    analyzer = await runtime.spawn_service(Analyzer())
    notifier = await runtime.spawn_service(Notifier())
    if kind == "zmq":
        await bus.connect_to(peer)
    await bus.ready()
    print("ready", flush=True)  # the ward may publish now (NATS cannot count subscribers)
    async with asyncio.timeout(30):
        while analyzer.handled < count or notifier.handled < count:
            await asyncio.sleep(0.01)
    await runtime.shutdown()
    print("lab handled", analyzer.handled, notifier.handled, flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
