"""An elevator bank: hall calls in, car assignments and door commands out."""

from __future__ import annotations

from typing import Annotated

from mycelium_mono import F32, U8, U64, Bool, Message, Text, message


@message(type_id=8501, topic="lift.calls")
class HallCall(Message):
    floor: U8
    going_up: Bool
    at_ns: U64


@message(type_id=8502, topic="lift.assign")
class CarAssignment(Message):
    car: U8
    floor: U8
    going_up: Bool


@message(type_id=8503, topic="lift.doors")
class DoorCommand(Message):
    car: U8
    floor: U8
    open: Bool
    load_kg: F32


@message(type_id=8504, topic="lift.notes")
class AuditNote(Message):
    text: Annotated[str, Text(24)]
