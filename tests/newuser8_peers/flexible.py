"""The same lab services, unchanged, on the asyncio bus in one process."""

import asyncio
from collections.abc import AsyncIterator

from lab.messages import SampleTaken
from lab.services import Analyzer, Auditor, Notifier, PagerArchive, Registrar

from mycelium_mono import MessageBus, ServiceContext, ServiceRuntime, service


@service
class Phlebotomist:
    async def run(self, ctx: ServiceContext) -> None:
        async for sample in self.feed():
            await ctx.emit(sample)

    async def feed(self) -> AsyncIterator[SampleTaken]:
        for n in range(16, 20):
            yield SampleTaken(sample_id=n, patient="Okafor", taken_ns=n)


async def main() -> None:
    runtime = ServiceRuntime(MessageBus())
    auditor = Auditor()
    for handler in (Analyzer(), Registrar(), Notifier(), auditor, PagerArchive()):
        await runtime.spawn_service(handler)  # a plain handler: no run() needed
    feeder = await runtime.spawn_service(Phlebotomist())  # after its subscribers
    await feeder.task
    await runtime.shutdown()  # graceful: every queue drained first
    print(sorted(auditor.lines))


asyncio.run(main())
