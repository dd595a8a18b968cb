"""crash4's own message types (type ids 48101..48104): not Bandit's, not tests/peers'.

``publisher`` + ``seq`` identify each message, so loss, repeats and order per publisher can
be counted; the sizes differ on purpose (an order of ~90 bytes, a telemetry frame of ~6 KB).
"""

from __future__ import annotations

from mycelium_mono import F64, I64, Bytes, Text, message


@message(type_id=48101, topic="c4_orders")
class Order:
    publisher: Text[16]
    seq: I64
    symbol: Text[8]
    price: F64
    qty: I64


@message(type_id=48102, topic="c4_fills")
class Fill:
    publisher: Text[16]
    seq: I64
    notional: F64


@message(type_id=48103, topic="c4_telemetry")
class Telemetry:
    sensor: Text[16]
    seq: I64
    reading: F64
    samples: Bytes[6000]


def order(publisher: str, seq: int) -> Order:
    return Order(publisher=publisher, seq=seq, symbol="KÄSE", price=seq * 0.25, qty=-seq)


def telemetry(sensor: str, seq: int) -> Telemetry:
    return Telemetry(sensor=sensor, seq=seq, reading=seq / 7,
                     samples=(seq % 251).to_bytes(1, "little") * 6000)


# The largest frame a transport takes is 65,536 bytes: prefix "c4_big.48104\0" (13) +
# header (30) + layout (65,493).
@message(type_id=48104, topic="c4_big")
class Big:
    seq: I64
    blob: Bytes[65485]
