"""Type-checked with the stubs `mycelium-mono stubs` writes (mypy --strict)."""

import asyncio

from ward.desk import DeskBus, Porter
from ward.messages import Admission, BedAssigned
from ward.routing import WardBus
from ward.services import BedAllocator, Journal, Pager, Triage


async def main() -> None:
    journal = Journal()
    bus = WardBus(triage=Triage(), bed_allocator=BedAllocator(), journal=journal, pager=Pager())
    bus.emit_admission(Admission.from_bytes(bytes(Admission.SIZE)))
    bus.emit(BedAssigned(patient_ref=bytes(8), bed=1, isolation=False))
    await bus.background.drain()
    porter = Porter()
    DeskBus(porter=porter).emit_bed_assigned(BedAssigned(bytes(8), bed=2, isolation=True))
    moves: list[int] = porter.moves
    busy: bool = porter.busy
    lines: list[str] = journal.lines
    print(moves, busy, lines)


asyncio.run(main())
