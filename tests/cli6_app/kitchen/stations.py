import os

from kitchen.messages import DishReady, OrderPlaced, OrderServed
from mycelium_mono import MessageHandler, handles


class Grill(MessageHandler[OrderPlaced]):
    def handle(self, msg: OrderPlaced) -> None:
        for left in reversed(range(msg.dishes)):
            self.emit(DishReady(order_id=msg.order_id, remaining=left))


class Expo(MessageHandler[DishReady]):
    def handle(self, msg: DishReady) -> None:
        if msg.remaining == 0:
            self.emit(OrderServed(order_id=msg.order_id))


class Board:
    def __init__(self) -> None:
        self.open: dict[int, int] = {}
        self.served: list[int] = []

    @handles(OrderPlaced)
    def on_order(self, msg: OrderPlaced) -> None:
        self.open[msg.order_id] = msg.dishes

    @handles(OrderServed)
    def on_served(self, msg: OrderServed) -> None:
        self.open.pop(msg.order_id, None)
        self.served.append(msg.order_id)


class GasFryer(MessageHandler[DishReady]):
    def handle(self, msg: DishReady) -> None:
        pass


class ElectricFryer(MessageHandler[DishReady]):
    def handle(self, msg: DishReady) -> None:
        pass


# The site picks its fryer at import: the hook's cache must notice when the choice changes.
Fryer = GasFryer if os.environ.get("KITCHEN_GAS") else ElectricFryer
