from hookshop.messages import Order, Shipment
from mycelium_mono import MessageHandler, handles


class Counter(MessageHandler[Order]):
    def __init__(self) -> None:
        self.total = 0

    def handle(self, order: Order) -> None:
        self.total += order.quantity


class Auditor:
    def __init__(self) -> None:
        self.log: list[str] = []

    @handles(Order)
    def on_order(self, order: Order) -> None:
        self.log.append(f"order {order.order_id}")

    @handles(Shipment)
    def on_shipment(self, shipment: Shipment) -> None:
        self.log.append(f"shipped {shipment.order_id}")
