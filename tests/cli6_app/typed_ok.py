from kitchen.messages import OrderPlaced, OrderServed
from kitchen.routing import KitchenBus
from kitchen.stations import Board, ElectricFryer, Expo, Grill

bus = KitchenBus(Board(), Grill(), Expo(), ElectricFryer())
bus.emit_order_placed(OrderPlaced(order_id=1, table=2, dishes=3))
bus.emit_order_served(OrderServed(order_id=1))
bus.emit(OrderServed(order_id=1))
served: list[int] = bus.board.served
