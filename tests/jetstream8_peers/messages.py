"""The grid's message types (type ids 8811..8812): readings in, invoice lines out."""

from __future__ import annotations

from mycelium_mono import I64, U64, message


@message(type_id=8811, topic="grid_meter")
class MeterRead:
    """One meter reading; ``seq`` counts from 1 so loss, repeats and order are checkable."""

    seq: U64
    kwh: I64


@message(type_id=8812, topic="grid_bill")
class InvoiceLine:
    """Billing's output: ``parts`` lines per reading, ``part`` counting from 0."""

    seq: U64
    part: U64
