import asyncio

import mycelium_mono

mycelium_mono.install_import_hook(packages=["ward"])

from ward.messages import Admission  # noqa: E402
from ward.routing import WardBus  # noqa: E402
from ward.services import BedAllocator, Journal, Pager, Triage  # noqa: E402


def admission(n: int) -> Admission:
    return Admission(patient_ref=n.to_bytes(8, "little"), name="Zoë Ångström", acuity=3,
                     ward_no=7, bed_hint=0, admitted_ns=n, insurer_id=2**100,
                     record_hash=2**255, temp_delta=-2, bp_offset=-300, fluid_ml=-5000,
                     balance_cents=-(2**40), temperature_c=37.2, weight_kg=71.5,
                     isolation=n % 2 == 0, device=bytes(20), chart_digest=bytes(32))


async def main() -> None:
    journal, pager = Journal(), Pager()
    bus = WardBus(triage=Triage(), bed_allocator=BedAllocator(beds=2), journal=journal,
                  pager=pager)
    for n in range(4):
        bus.emit_admission(admission(n))
    await bus.background.drain()
    print(journal.lines, pager.paged, WardBus.__mycelium_origin__)


asyncio.run(main())
