"""Process 2 of the ZeroMQ run: the ward's bed allocator on the flexible bus."""

import asyncio
import sys

from ward.messages import Admission, BedAssigned, WardFull
from ward.routing import WardBus
from ward.services import BedAllocator

from mycelium_mono import MessageBus, ServiceRuntime


async def main(port: int, peer: int) -> None:
    bus = MessageBus.with_tcp(f"127.0.0.1:{port}")
    runtime = ServiceRuntime(bus)
    allocator = BedAllocator(beds=2)
    await runtime.spawn_service(allocator)
    await bus.connect_to(f"127.0.0.1:{peer}")
    await bus.ready()
    await bus.wait_for_subscribers(1, BedAssigned, timeout=20)
    await bus.wait_for_subscribers(1, WardFull, timeout=20)
    async with asyncio.timeout(20):
        while allocator.free or allocator.waiting < 1:  # both beds given, then one waits
            await asyncio.sleep(0.01)
    await runtime.shutdown()
    print("ward served", Admission.__name__, "x3; hook:", WardBus.__mycelium_origin__)


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
