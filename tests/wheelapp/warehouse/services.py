# services.py — plain classes; they never name each other
from mycelium_mono import MessageHandler, handles
from warehouse.messages import ItemPicked, ItemReceived, ReorderPlaced, StockLow

LOW_WATER = 5
REORDER_QTY = 50


class Inventory:
    """Two message types, so @handles methods; emits StockLow (reaches the bus in any mode)."""

    def __init__(self) -> None:
        self.stock: dict[bytes, int] = {}

    @handles(ItemReceived)
    def on_received(self, item: ItemReceived) -> None:
        self.stock[item.sku] = self.stock.get(item.sku, 0) + item.qty

    @handles(ItemPicked)
    def on_picked(self, pick: ItemPicked) -> None:
        if pick.qty > self.stock.get(pick.sku, 0):
            raise ValueError(f"order {pick.order_id}: only {self.stock.get(pick.sku, 0)} "
                             f"of {pick.sku!r} in stock, {pick.qty} picked")
        self.stock[pick.sku] -= pick.qty


class StockWatch(MessageHandler[ItemPicked]):
    """Emits StockLow when a pick leaves too little on the shelf."""

    def __init__(self, inventory: Inventory | None = None) -> None:
        self.inventory = inventory or Inventory()

    def handle(self, pick: ItemPicked) -> None:
        remaining = self.inventory.stock.get(pick.sku, 0)
        if remaining < LOW_WATER:
            self.emit(StockLow(sku=pick.sku, remaining=remaining))


class Purchasing(MessageHandler[StockLow]):
    def handle(self, low: StockLow) -> None:
        self.emit(ReorderPlaced(sku=low.sku, qty=REORDER_QTY))


class PickList(MessageHandler[ItemPicked]):
    def __init__(self) -> None:
        self.orders: list[int] = []

    def handle(self, pick: ItemPicked) -> None:
        self.orders.append(pick.order_id)


class Receiving(MessageHandler[ItemReceived]):
    def __init__(self) -> None:
        self.docks: dict[int, int] = {}

    def handle(self, item: ItemReceived) -> None:
        self.docks[item.dock] = self.docks.get(item.dock, 0) + 1


class AuditLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @handles(StockLow)
    def on_low(self, low: StockLow) -> None:
        self.lines.append(f"low {low.sku.decode()} {low.remaining}")

    @handles(ReorderPlaced)
    def on_reorder(self, order: ReorderPlaced) -> None:
        self.lines.append(f"reorder {order.sku.decode()} {order.qty}")


class SupplierGateway(MessageHandler[ReorderPlaced]):
    """An async handler: it talks to the supplier, so it runs in the background."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.refuse: set[bytes] = set()

    async def handle(self, order: ReorderPlaced) -> None:  # type: ignore[override]
        if order.sku in self.refuse:
            raise ConnectionError(f"supplier refused {order.sku!r}")
        self.sent.append((order.sku, order.qty))
