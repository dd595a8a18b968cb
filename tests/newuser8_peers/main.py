"""The README's tour main.py for the lab: the hook, then the bus on an event loop."""

import asyncio

import mycelium_mono

mycelium_mono.install_import_hook(packages=["lab"])  # before importing lab.routing

from lab.messages import SampleTaken  # noqa: E402
from lab.routing import MonolithBus  # noqa: E402
from lab.services import Analyzer, Auditor, Notifier, PagerArchive, Registrar  # noqa: E402


async def main() -> None:
    auditor = Auditor()
    bus = MonolithBus(analyzer=Analyzer(), registrar=Registrar(), auditor=auditor,
                      notifier=Notifier(), pager_archive=PagerArchive())
    sample = SampleTaken(sample_id=19, patient="Müller", taken_ns=0)
    bus.emit_sample_taken(sample)
    bus.emit(sample)
    await bus.background.drain()  # prints "archived page 19" twice
    print(auditor.lines, MonolithBus.__mycelium_origin__)


asyncio.run(main())
