"""Hospital bed allocation: every field type the README lists."""
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


@message(type_id=9101, topic="ward.admissions")
class Admission(Message):
    patient_ref: Annotated[bytes, Bytes(8)]
    name: Annotated[str, Text(24)]
    acuity: U8
    ward_no: U16
    bed_hint: U32
    admitted_ns: U64
    insurer_id: U128
    record_hash: U256
    temp_delta: I8
    bp_offset: I16
    fluid_ml: I32
    balance_cents: I64
    temperature_c: F32
    weight_kg: F64
    isolation: Bool
    device: Address
    chart_digest: Bytes32


@message(type_id=9102, topic="ward.beds")
class BedAssigned(Message):
    patient_ref: Annotated[bytes, Bytes(8)]
    bed: U32
    isolation: Bool


@message(type_id=9103, topic="ward.alerts")
class WardFull(Message):
    ward_no: U16
    waiting: U32
