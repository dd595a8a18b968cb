"""The same traffic through the bus and through hand-written calls in route order."""
from __future__ import annotations

from collections.abc import Sequence

from cache9farm import handlers
from cache9farm.messages import IrrigationCommand, SoilReading

READINGS = [(1, 250, 12), (2, 610, -3), (3, 120, -1), (4, 900, 20)]
ROUTE_ORDER = ("log", "planner", "frost")
"""routing.py's ``SoilReading = [MoistureLog, Planner, Valves]``, as the hand calls them."""


def through_bus(bus_class: type) -> list[str]:
    handlers.JOURNAL.clear()
    log, planner, valves = handlers.MoistureLog(), handlers.Planner(), handlers.Valves()
    bus = bus_class(moisture_log=log, planner=planner, valves=valves)
    for sensor, moisture, temp in READINGS:
        bus.emit_soil_reading(SoilReading(sensor_id=sensor, moisture_permille=moisture,
                                          temperature_dc=temp))
    return list(handlers.JOURNAL)


def by_hand(order: Sequence[str] = ROUTE_ORDER) -> list[str]:
    """What the routing table promises: each handler in route order, emits nested."""
    handlers.JOURNAL.clear()
    valves = handlers.Valves()

    class Planner(handlers.Planner):
        def emit(self, msg: object) -> None:  # the bus routes IrrigationCommand to Valves
            assert isinstance(msg, IrrigationCommand)
            valves.open_zone(msg)

    log, planner = handlers.MoistureLog(), Planner()
    calls = {"log": log.handle, "planner": planner.handle, "frost": valves.frost_check}
    for sensor, moisture, temp in READINGS:
        reading = SoilReading(sensor_id=sensor, moisture_permille=moisture, temperature_dc=temp)
        for name in order:
            calls[name](reading)
    return list(handlers.JOURNAL)
