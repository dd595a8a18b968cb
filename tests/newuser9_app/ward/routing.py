from mycelium_mono import route, routing_config
from ward.messages import PagerAlert, TriageDecision, VitalsReading  # noqa: F401
from ward.services import AuditLog, ChartArchive, Pager, TriageNurse, VitalsMonitor


@routing_config
class WardBus:
    VitalsReading = [VitalsMonitor]
    TriageDecision = [AuditLog, TriageNurse]
    PagerAlert = route(sync=[AuditLog, Pager], background=[ChartArchive])


def make_bus() -> WardBus:
    return WardBus(vitals_monitor=VitalsMonitor(), audit_log=AuditLog(),
                   triage_nurse=TriageNurse(), pager=Pager(), chart_archive=ChartArchive())
