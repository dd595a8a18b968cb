"""Handlers that write what they saw into a shared journal, so order is observable."""
from cache9farm.messages import IrrigationCommand, SoilReading
from mycelium_mono import MessageHandler, handles

JOURNAL: list[str] = []


class MoistureLog(MessageHandler[SoilReading]):
    def handle(self, msg: SoilReading) -> None:
        JOURNAL.append(f"log:{msg.sensor_id}:{msg.moisture_permille}")


class Planner(MessageHandler[SoilReading]):
    def __init__(self) -> None:
        self.threshold = 300

    def handle(self, msg: SoilReading) -> None:
        if msg.moisture_permille < self.threshold:
            JOURNAL.append(f"plan:{msg.sensor_id}")
            self.emit(IrrigationCommand(zone=msg.sensor_id, litres=40))


class Valves:
    def __init__(self) -> None:
        self.opened: list[int] = []

    @handles(IrrigationCommand)
    def open_zone(self, cmd: IrrigationCommand) -> None:
        self.opened.append(cmd.zone)
        JOURNAL.append(f"valve:{cmd.zone}:{cmd.litres}")

    @handles(SoilReading)
    def frost_check(self, msg: SoilReading) -> None:
        if msg.temperature_dc < 0:
            JOURNAL.append(f"frost:{msg.sensor_id}")
