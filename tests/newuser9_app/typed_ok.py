"""What mypy --strict must accept once `mycelium-mono stubs ward.routing -o typings/` ran."""
import asyncio

from ward.messages import PagerAlert, VitalsReading
from ward.routing import WardBus, make_bus
from ward.services import AuditLog, ChartArchive, Pager, TriageNurse, VitalsMonitor


def on_error(exc: Exception, where: str, msg: object) -> None:
    print(where, exc)


async def shift() -> list[str]:
    bus = WardBus(vitals_monitor=VitalsMonitor(), audit_log=AuditLog(),
                  triage_nurse=TriageNurse(), pager=Pager(), chart_archive=ChartArchive(),
                  on_error=on_error)
    bus.emit_vitals_reading(VitalsReading(bed=1, heart_rate=60, spo2=99, temp_c=36.6))
    bus.emit_pager_alert_sync(PagerAlert(bed=1, level=1, pager=5551))
    await bus.emit_pager_alert_async(PagerAlert(bed=1, level=1, pager=5551))
    bus.emit(PagerAlert(bed=2, level=2, pager=5552))
    await bus.background.drain()
    return make_bus().audit_log.lines + bus.audit_log.lines


print(asyncio.run(shift()))
