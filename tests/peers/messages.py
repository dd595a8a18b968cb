"""Message types shared by the distributed tests and their peer processes (type ids 4001..4009)."""

from __future__ import annotations

from mycelium_mono import F64, I64, U64, Bytes32, message


@message(type_id=4001, topic="dist_test")
class Tick:
    """The stream type: ``seq`` counts from 1 so order and loss are checkable."""

    seq: U64
    value: I64
    blob: Bytes32


@message(type_id=4002, topic="dist_chain")
class Quote:
    """Adapter → strategy."""

    seq: U64
    price: F64


@message(type_id=4003, topic="dist_chain")
class Signal:
    """Strategy → execution."""

    seq: U64
    edge: F64


@message(type_id=4004, topic="dist_chain")
class Fill:
    """Execution's result (published back so the test can see the chain's output)."""

    seq: U64
    qty: I64


def tick(seq: int) -> Tick:
    """A deterministic Tick for sequence number ``seq``."""
    return Tick(seq=seq, value=-seq, blob=seq.to_bytes(32, "little"))
