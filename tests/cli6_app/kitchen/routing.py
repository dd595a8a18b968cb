from kitchen.messages import DishReady, OrderPlaced, OrderServed  # noqa: F401
from kitchen.stations import Board, Expo, Fryer, Grill
from mycelium_mono import routing_config


@routing_config
class KitchenBus:
    OrderPlaced = [Board, Grill]
    DishReady = [Expo, Fryer]
    OrderServed = [Board]
