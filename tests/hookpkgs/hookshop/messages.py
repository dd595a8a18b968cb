from mycelium_mono import U32, U64, message


@message(type_id=4101, topic="orders")
class Order:
    order_id: U64
    quantity: U32


@message(type_id=4102, topic="shipments")
class Shipment:
    order_id: U64
