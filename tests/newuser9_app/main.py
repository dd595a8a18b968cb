import asyncio
import json

import mycelium_mono

mycelium_mono.install_import_hook(packages=["ward"])   # before importing ward.routing

from ward.messages import VitalsReading  # noqa: E402
from ward.routing import WardBus  # noqa: E402
from ward.services import AuditLog, ChartArchive, Pager, TriageNurse, VitalsMonitor  # noqa: E402


async def main() -> None:
    audit, pager, archive = AuditLog(), Pager(), ChartArchive()
    bus = WardBus(vitals_monitor=VitalsMonitor(), audit_log=audit, triage_nurse=TriageNurse(),
                  pager=pager, chart_archive=archive)
    bus.emit_vitals_reading(VitalsReading(bed=7, heart_rate=140, spo2=95, temp_c=37.0))
    bus.emit(VitalsReading(bed=8, heart_rate=80, spo2=97, temp_c=38.9))
    bus.emit_vitals_reading(VitalsReading(bed=9, heart_rate=70, spo2=98, temp_c=36.8))
    await bus.background.drain()
    print(json.dumps({"origin": WardBus.__mycelium_origin__, "audit": audit.lines,
                      "pages": pager.sent, "charted": archive.stored}))


asyncio.run(main())
