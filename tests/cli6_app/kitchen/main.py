"""`mycelium-mono run -m kitchen.main TABLE DISHES...`: exit status = orders served
(+10 per order left open)."""
import sys

from kitchen.messages import OrderPlaced
from kitchen.routing import KitchenBus
from kitchen.stations import Board, Expo, Fryer, Grill


def main(argv: list[str]) -> int:
    bus = KitchenBus(Board(), Grill(), Expo(), Fryer())
    for order_id, dishes in enumerate(argv[2:], start=1):
        if dishes == "0":
            raise ValueError(f"order {order_id} has no dishes")
        bus.emit_order_placed(OrderPlaced(order_id=order_id, table=int(argv[1]),
                                          dishes=int(dishes)))
    print("origin", KitchenBus.__mycelium_origin__, "served", bus.board.served,
          "argv", sys.argv)
    return len(bus.board.served) + 10 * len(bus.board.open)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
