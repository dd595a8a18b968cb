"""A greenhouse irrigation controller's messages: one field of every type the README lists."""

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


@message(type_id=55001, topic="greenhouse.sensors")
class SoilReading(Message):
    zone: U8
    probe: U16
    seq: U32
    taken_ns: U64
    serial: U128
    checksum: U256
    offset: I8
    trend: I16
    delta: I32
    drift_ns: I64
    moisture: F32
    temperature_c: F64
    wet: Bool
    gateway: Address
    digest: Bytes32
    tag: Annotated[bytes, Bytes(4)]
    label: Annotated[str, Text(16)]


@message(type_id=55002, topic="greenhouse.commands")
class OpenValve(Message):
    zone: U8
    seconds: U16


@message(type_id=55003, topic="greenhouse.alerts")
class PHAlert(Message):
    zone: U8
    ph: F32
