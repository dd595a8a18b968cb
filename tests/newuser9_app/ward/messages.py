from typing import Annotated

from mycelium_mono import F32, U8, U16, U32, Message, Text, message


@message(type_id=39500, topic="ward.vitals")
class VitalsReading(Message):
    bed: U16
    heart_rate: U16
    spo2: U8
    temp_c: F32


@message(type_id=39501, topic="ward.triage")
class TriageDecision(Message):
    bed: U16
    level: U8          # 1 = resuscitate ... 5 = non-urgent
    reason: Annotated[str, Text(24)]


@message(type_id=39502, topic="ward.pager")
class PagerAlert(Message):
    bed: U16
    level: U8
    pager: U32


@message(type_id=39503, topic="ward.audit")
class AuditEntry(Message):
    line: Annotated[str, Text(48)]
