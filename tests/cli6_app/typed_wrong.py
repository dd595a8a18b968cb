from kitchen.messages import OrderPlaced, OrderServed
from kitchen.routing import KitchenBus
from kitchen.stations import Board, ElectricFryer, Expo, Grill

bus = KitchenBus(Board(), Grill(), Expo(), ElectricFryer())
bus.emit_order_placed(OrderServed(order_id=1))
bus.emit_order_cancelled(OrderPlaced(order_id=1, table=2, dishes=3))
