"""The shop's routing table."""

from hookshop.handlers import Auditor, Counter
from hookshop.messages import Order, Shipment
from mycelium_mono import routing_config


@routing_config
class MonolithBus:
    Order = [Counter, Auditor]
    Shipment = [Auditor]


def run_demo() -> tuple[int, list[str]]:
    """Emit a little traffic; the result must be the same however the bus was built."""
    counter, auditor = Counter(), Auditor()
    bus = MonolithBus(counter=counter, auditor=auditor)
    bus.emit_order(Order(order_id=1, quantity=3))
    bus.emit_order(Order(order_id=2, quantity=4))
    bus.emit_shipment(Shipment(order_id=1))
    return counter.total, auditor.log
