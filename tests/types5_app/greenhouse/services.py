"""Services of the controller; they never name each other."""

from greenhouse.messages import OpenValve, PHAlert, SoilReading
from mycelium_mono import MessageHandler, handles


class IrrigationPlanner(MessageHandler[SoilReading]):
    def __init__(self) -> None:
        self.opened = 0

    def handle(self, reading: SoilReading) -> None:
        if reading.moisture < 0.3:
            self.opened += 1
            self.emit(OpenValve(zone=reading.zone, seconds=30))


class CO2Sensor(MessageHandler[SoilReading]):
    def handle(self, reading: SoilReading) -> None:
        if reading.offset < -100:
            self.emit(PHAlert(zone=reading.zone, ph=5.5))


class ValveDriver(MessageHandler[OpenValve]):
    def __init__(self) -> None:
        self.seconds = 0

    def handle(self, cmd: OpenValve) -> None:
        self.seconds += cmd.seconds


class HTTPNotifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    @handles(PHAlert)
    def on_alert(self, alert: PHAlert) -> None:
        self.sent.append(f"zone {alert.zone}: pH {alert.ph}")

    @handles(OpenValve)
    def on_valve(self, cmd: OpenValve) -> None:
        self.sent.append(f"valve {cmd.zone}")


class Historian(MessageHandler[OpenValve]):
    def __init__(self) -> None:
        self.rows = 0

    async def handle(self, cmd: OpenValve) -> None:
        self.rows += 1
