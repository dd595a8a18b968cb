"""The lab's three messages: a sample, its result and the page a critical result sends."""

from typing import Annotated

from mycelium_mono import F32, U32, U64, Bool, Message, Text, message


@message(type_id=8101, topic="lab.samples")
class SampleTaken(Message):
    sample_id: U64
    patient: Annotated[str, Text(16)]
    taken_ns: U64


@message(type_id=8102, topic="lab.results")
class ResultReady(Message):
    sample_id: U64
    glucose: F32
    critical: Bool


@message(type_id=8103, topic="lab.pages")
class PageSent(Message):
    sample_id: U64
    ward: U32
