# routing.py — the routing table
from mycelium_mono import route, routing_config
from warehouse.messages import ItemPicked, ItemReceived, ReorderPlaced, StockLow  # noqa: F401
from warehouse.services import (
    AuditLog,
    Inventory,
    PickList,
    Purchasing,
    Receiving,
    StockWatch,
    SupplierGateway,
)


@routing_config
class WarehouseBus:
    ItemReceived = [Inventory, Receiving]
    ItemPicked = [Inventory, PickList, StockWatch]
    StockLow = [AuditLog, Purchasing]
    ReorderPlaced = route(sync=[AuditLog], background=[SupplierGateway])


def make_bus() -> WarehouseBus:
    """The services wired together (StockWatch reads the Inventory's shelves)."""
    inventory = Inventory()
    return WarehouseBus(inventory=inventory, receiving=Receiving(), pick_list=PickList(),
                        stock_watch=StockWatch(inventory), audit_log=AuditLog(),
                        purchasing=Purchasing(), supplier_gateway=SupplierGateway())
