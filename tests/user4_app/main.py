import asyncio

import mycelium_mono

mycelium_mono.install_import_hook(packages=["gridwatch"])   # before importing gridwatch.routing

from gridwatch.feed import feed  # noqa: E402
from gridwatch.routing import GridBus  # noqa: E402
from gridwatch.services import (  # noqa: E402
    Archive,
    Auditor,
    Dispatcher,
    ThresholdRule,
    TrendRecorder,
)


async def main() -> None:
    bus = GridBus(threshold_rule=ThresholdRule(), trend_recorder=TrendRecorder(),
                  auditor=Auditor(), dispatcher=Dispatcher(), archive=Archive())
    for r in feed(21):
        bus.emit_meter_reading(r)
    await bus.background.drain()
    print(GridBus.__mycelium_origin__)
    print("\n".join(bus.auditor.lines))


asyncio.run(main())
