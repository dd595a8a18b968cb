"""Plain services of the elevator bank; each appends to a shared trace to show the order."""

from __future__ import annotations

import asyncio
import sys

from liftbank.messages import AuditNote, CarAssignment, DoorCommand, HallCall
from mycelium_mono import MessageHandler, handles

TOP_FLOOR = 40
TRACE: list[str] = []
SEEN_EXCEPTION: list[object] = []


class Dispatcher(MessageHandler[HallCall]):
    """Assigns a car; a call for a floor the building does not have is refused."""

    def handle(self, call: HallCall) -> None:
        TRACE.append(f"dispatch:{call.floor}")
        if call.floor > TOP_FLOOR:
            raise ValueError(f"no floor {call.floor}")
        self.emit(CarAssignment(car=call.floor % 3, floor=call.floor, going_up=call.going_up))
        TRACE.append(f"dispatched:{call.floor}")


class SafetyMonitor(MessageHandler[HallCall]):
    """Must see every hall call, even one the dispatcher refused."""

    def handle(self, call: HallCall) -> None:
        SEEN_EXCEPTION.append(sys.exception())
        TRACE.append(f"safety:{call.floor}")
        if call.floor == 99:
            raise RuntimeError("safety circuit open")


class CarController(MessageHandler[CarAssignment]):
    def handle(self, a: CarAssignment) -> None:
        TRACE.append(f"car:{a.car}@{a.floor}")
        if a.floor == 13:
            raise LookupError("car cannot stop at 13")
        self.emit(DoorCommand(car=a.car, floor=a.floor, open=True, load_kg=70.1))
        TRACE.append(f"car-done:{a.floor}")


class Logbook:
    @handles(CarAssignment)
    def on_assign(self, a: CarAssignment) -> None:
        TRACE.append(f"log-assign:{a.floor}")

    @handles(DoorCommand)
    def on_door(self, d: DoorCommand) -> None:
        TRACE.append(f"log-door:{d.floor}")


class Noter(MessageHandler[DoorCommand]):
    """Emits a message no routing class lists."""

    def handle(self, d: DoorCommand) -> None:
        if d.floor == 7:
            self.emit(AuditNote(text="door at 7"))


class Archive(MessageHandler[DoorCommand]):
    async def handle(self, d: DoorCommand) -> None:
        TRACE.append(f"archive:{d.floor}")
        if d.floor == 21:
            raise OSError("archive disk full")


class ChainingArchive(Archive):
    """Stores a door command, then (background, re-entrant) asks the bus to log the next
    floor's: each stored command queues another background call, up to floor 4."""

    async def handle(self, d: DoorCommand) -> None:
        await super().handle(d)
        await asyncio.sleep(0)   # a real archive writes to disk or a database
        if d.floor < 4:
            self.emit(d.replace(floor=d.floor + 1))
        elif d.floor == 4:
            raise OSError("archive full at floor 4")
