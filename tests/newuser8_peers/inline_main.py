"""inline=True, under the hook (argv "hook") or built when the class statement runs."""

import asyncio
import sys

import mycelium_mono

if sys.argv[1:] == ["hook"]:
    mycelium_mono.install_import_hook(packages=["lab"])

from lab.messages import SampleTaken
from lab.routing_fast import FastBus
from lab.services import Analyzer, Auditor, Notifier, PagerArchive, Registrar


async def main() -> None:
    auditor, registrar = Auditor(), Registrar()
    bus = FastBus(analyzer=Analyzer(), registrar=registrar, auditor=auditor,
                  notifier=Notifier(), pager_archive=PagerArchive())
    for n in range(16, 20):
        bus.emit_sample_taken(SampleTaken(sample_id=n, patient="Ng", taken_ns=n))
    await bus.background.drain()
    print(FastBus.__mycelium_origin__, registrar.seen, auditor.lines)
    print(" ".join(note[3] for note in FastBus.__mycelium_notes__))


asyncio.run(main())
