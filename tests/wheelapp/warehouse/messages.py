# messages.py — typed, immutable, fixed binary layout (the README's tour, in a warehouse)
from mycelium_mono import U16, U32, U64, Bytes, message


@message(type_id=701, topic="warehouse")
class ItemReceived:
    sku: Bytes[12]
    qty: U32
    dock: U16


@message(type_id=702, topic="warehouse")
class ItemPicked:
    sku: Bytes[12]
    qty: U32
    order_id: U64


@message(type_id=703, topic="warehouse")
class StockLow:
    sku: Bytes[12]
    remaining: U32


@message(type_id=704, topic="warehouse")
class ReorderPlaced:
    sku: Bytes[12]
    qty: U32
