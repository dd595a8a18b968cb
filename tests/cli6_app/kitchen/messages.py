from mycelium_mono import U32, U64, message


@message(type_id=601, topic="kitchen.orders")
class OrderPlaced:
    order_id: U64
    table: U32
    dishes: U32


@message(type_id=602, topic="kitchen.dishes")
class DishReady:
    order_id: U64
    remaining: U32


@message(type_id=603, topic="kitchen.orders")
class OrderServed:
    order_id: U64
