# main.py — what the README's tour does, printed as JSON for the test that runs it
import asyncio
import json
import sys

import mycelium_mono

if "--no-install" not in sys.argv:
    mycelium_mono.install_import_hook(packages=["warehouse"])   # before importing the routing

from warehouse.messages import ItemPicked, ItemReceived
from warehouse.routing import WarehouseBus, make_bus


async def main() -> dict[str, object]:
    bus = make_bus()
    bus.emit_item_received(ItemReceived(sku=b"BOLT-M6-0001", qty=12, dock=3))
    bus.emit(ItemPicked(sku=b"BOLT-M6-0001", qty=9, order_id=1001))   # the same, after a lookup
    await bus.background.drain()
    return {
        "origin": WarehouseBus.__mycelium_origin__,
        "stock": bus.inventory.stock[b"BOLT-M6-0001"],
        "audit": bus.audit_log.lines,
        "sent": len(bus.supplier_gateway.sent),
    }


print(json.dumps(asyncio.run(main())))
