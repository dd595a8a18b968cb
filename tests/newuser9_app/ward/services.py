from mycelium_mono import MessageHandler, handles
from ward.messages import AuditEntry, PagerAlert, TriageDecision, VitalsReading

ON_CALL = {1: 5551, 2: 5552}


class VitalsMonitor(MessageHandler[VitalsReading]):
    """Turns a reading into a triage decision (a real one runs an early-warning score)."""

    def handle(self, reading: VitalsReading) -> None:
        if reading.spo2 < 90 or reading.heart_rate > 130:
            self.emit(TriageDecision(bed=reading.bed, level=1, reason="hypoxia or tachycardia"))
        elif reading.temp_c >= 38.5:
            self.emit(TriageDecision(bed=reading.bed, level=3, reason="fever"))


class TriageNurse(MessageHandler[TriageDecision]):
    def handle(self, decision: TriageDecision) -> None:
        if decision.level <= 2:
            self.emit(PagerAlert(bed=decision.bed, level=decision.level,
                                 pager=ON_CALL[decision.level]))


class Pager:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    @handles(PagerAlert)
    def page(self, alert: PagerAlert) -> None:
        self.sent.append((alert.pager, alert.bed))


class AuditLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @handles(TriageDecision)
    def on_triage(self, decision: TriageDecision) -> None:
        self.lines.append(f"triage bed {decision.bed} level {decision.level}")

    @handles(PagerAlert)
    def on_page(self, alert: PagerAlert) -> None:
        self.lines.append(f"page {alert.pager} bed {alert.bed}")


class ChartArchive(MessageHandler[PagerAlert]):
    def __init__(self) -> None:
        self.stored: list[int] = []

    async def handle(self, alert: PagerAlert) -> None:   # may await: runs in the background
        self.stored.append(alert.bed)
        print("charted page for bed", alert.bed)


class Handover(MessageHandler[AuditEntry]):
    """Handles a type nobody routes to it: doctor must say so."""

    def handle(self, entry: AuditEntry) -> None:
        pass
