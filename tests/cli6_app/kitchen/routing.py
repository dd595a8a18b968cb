from mycelium_mono import routing_config  # noqa: I001 (line numbers are asserted)

from kitchen.messages import DishReady, OrderPlaced, OrderServed  # noqa: F401
from kitchen.stations import Board, Fryer, Grill, Expo


@routing_config
class KitchenBus:
    OrderPlaced = [Board, Grill]
    DishReady = [Expo, Fryer]
    OrderServed = [Board]
