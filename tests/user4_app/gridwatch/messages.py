"""Every field kind the README's table lists, on a substation's wire."""

from typing import Annotated

from mycelium_mono import (
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    U128,
    U256,
    Address,
    Bool,
    Bytes,
    Bytes32,
    Message,
    Text,
    message,
)


@message(type_id=4401, topic="grid.meters")
class MeterReading(Message):
    seq: U64
    feeder_id: U16
    phase: U8
    voltage: F32
    current: F64
    temp_c: I16
    trim: I8
    delta_wh: I32
    energy_wh: I64
    ts_s: U32
    serial: U128
    tariff: U256
    online: Bool
    station: Address
    cert: Bytes32
    meter: Bytes[6]
    label: Annotated[str, Text(12)]


@message(type_id=4402, topic="grid.alarms")
class Alarm(Message):
    seq: U64
    feeder_id: U16
    severity: U8
    voltage: F32
    label: Text[12]


@message(type_id=4403, topic="grid.commands")
class BreakerCommand(Message):
    seq: U64
    feeder_id: U16
    trip: Bool


@message(type_id=4404, topic="grid.notes")
class OperatorNote(Message):
    text: Text[32]
