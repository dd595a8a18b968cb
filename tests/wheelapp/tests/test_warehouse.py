"""The warehouse's own tests, as its authors would write them from the README.

The pytest plugin installs the import hook for `mycelium_packages` (pyproject.toml) before this
module is imported, so `WarehouseBus` below is the one the hook generated.
"""

from __future__ import annotations

import asyncio

import pytest
from warehouse.messages import ItemPicked, ItemReceived, ReorderPlaced, StockLow
from warehouse.routing import WarehouseBus, make_bus
from warehouse.services import PickList

from mycelium_mono import (
    LatencyTracker,
    MessageBus,
    MessageHandler,
    RoutingError,
    ServiceRuntime,
    service,
)

BOLT = b"BOLT-M6-0001"
NUTS = b"NUT-M6-00001"


def receive(bus: WarehouseBus, sku: bytes, qty: int) -> None:
    bus.emit_item_received(ItemReceived(sku=sku, qty=qty, dock=1))


def test_the_bus_was_generated_by_the_import_hook() -> None:
    assert WarehouseBus.__mycelium_origin__ == "import hook"


def test_every_handler_is_a_constructor_keyword_and_a_missing_one_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        WarehouseBus(inventory=make_bus().inventory)  # type: ignore[call-arg]


async def test_a_pick_below_the_low_water_mark_reorders_through_two_emitting_handlers() -> None:
    bus = make_bus()
    receive(bus, BOLT, 12)
    bus.emit_item_picked(ItemPicked(sku=BOLT, qty=9, order_id=7))
    await bus.background.drain()
    assert bus.inventory.stock[BOLT] == 3
    assert bus.pick_list.orders == [7]
    assert bus.audit_log.lines == ["low BOLT-M6-0001 3", "reorder BOLT-M6-0001 50"]
    assert bus.supplier_gateway.sent == [(BOLT, 50)]


def test_the_generic_emit_reaches_the_same_handlers() -> None:
    bus = make_bus()
    bus.emit(ItemReceived(sku=NUTS, qty=4, dock=2))
    assert bus.inventory.stock == {NUTS: 4}
    assert bus.receiving.docks == {2: 1}


def test_a_failing_handler_does_not_stop_the_others_and_is_raised_as_a_group() -> None:
    bus = make_bus()
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit_item_picked(ItemPicked(sku=NUTS, qty=1, order_id=8))  # nothing in stock
    assert caught.group_contains(ValueError, match="order 8: only 0")
    assert bus.pick_list.orders == [8]  # the handler after the failing one still ran


async def test_a_background_failure_is_raised_by_drain() -> None:
    bus = make_bus()
    bus.supplier_gateway.refuse.add(BOLT)
    bus.emit_reorder_placed(ReorderPlaced(sku=BOLT, qty=50))
    with pytest.raises(ExceptionGroup) as caught:
        await bus.background.drain()
    assert caught.group_contains(ConnectionError, match="supplier refused")
    assert bus.audit_log.lines == ["reorder BOLT-M6-0001 50"]  # the sync path ran


def test_messages_round_trip_through_their_fixed_layout() -> None:
    low = StockLow(sku=BOLT, remaining=3)
    assert StockLow.from_bytes(low.to_bytes()) == low
    assert len(low.to_bytes()) == StockLow.SIZE


def test_latency_tracker_times_emits_as_the_readme_shows() -> None:
    bus = make_bus()
    latency = LatencyTracker(sample_every=10)
    for n in range(100):
        latency.time(bus.emit_item_received, ItemReceived(sku=BOLT, qty=1, dock=n % 4))
    assert latency.report().count == 10
    assert bus.inventory.stock[BOLT] == 100


async def test_the_same_handler_runs_as_a_service_on_the_flexible_bus() -> None:
    bus = MessageBus()
    runtime = ServiceRuntime(bus)
    picks = PickList()
    await runtime.spawn_service(picks)  # a plain handler: no run() needed

    @service
    class Scanner:
        async def run(self, ctx: object) -> None:
            for order_id in (1, 2, 3):
                await ctx.emit(ItemPicked(sku=BOLT, qty=1, order_id=order_id))  # type: ignore[attr-defined]

    await runtime.spawn_service(Scanner())
    for _ in range(200):
        if len(picks.orders) == 3:
            break
        await asyncio.sleep(0.01)
    await runtime.shutdown()
    assert picks.orders == [1, 2, 3]


def test_a_routing_mistake_is_an_error_with_a_caret(routing_module: object) -> None:
    source = '''
from mycelium_mono import routing_config
from warehouse.messages import ItemPicked, StockLow
from warehouse.services import Purchasing

@routing_config
class BrokenBus:
    ItemPicked = [Purchasing]
'''
    with pytest.raises(RoutingError) as caught:
        routing_module(source)  # type: ignore[operator]
    text = caught.value.render(color=False)
    assert "error[E0001]: Purchasing does not handle ItemPicked" in text
    assert "^^^^^^^^^^" in text
    assert "help: " in text


class _Unused(MessageHandler[StockLow]):
    """A handler nobody routes: doctor names it (see the wheel test's doctor run)."""

    def handle(self, low: StockLow) -> None:
        pass
