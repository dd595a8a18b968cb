"""Plain classes that never name each other."""

from __future__ import annotations

from gridwatch.messages import Alarm, BreakerCommand, MeterReading
from mycelium_mono import MessageHandler, handles

LIMIT_V = 250.0


class ThresholdRule(MessageHandler[MeterReading]):
    def handle(self, r: MeterReading) -> None:
        if r.voltage > LIMIT_V:
            severity = 2 if r.voltage > LIMIT_V * 1.1 else 1
            self.emit(Alarm(r.seq, r.feeder_id, severity, r.voltage, r.label))


class TrendRecorder(MessageHandler[MeterReading]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, r: MeterReading) -> None:
        self.seen.append(r.seq)


class Dispatcher(MessageHandler[Alarm]):
    def handle(self, a: Alarm) -> None:
        if a.severity >= 2:
            self.emit(BreakerCommand(a.seq, a.feeder_id, trip=True))


class Auditor:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @handles(Alarm)
    def on_alarm(self, a: Alarm) -> None:
        self.lines.append(f"alarm {a.seq} feeder={a.feeder_id} sev={a.severity}")

    @handles(BreakerCommand)
    def on_command(self, c: BreakerCommand) -> None:
        self.lines.append(f"trip {c.seq} feeder={c.feeder_id}")


class Archive(MessageHandler[BreakerCommand]):
    def __init__(self) -> None:
        self.stored: list[int] = []

    async def handle(self, c: BreakerCommand) -> None:   # may await: runs in the background
        self.stored.append(c.seq)
        print("archived trip", c.seq)
