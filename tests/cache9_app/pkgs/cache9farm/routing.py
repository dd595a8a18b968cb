"""The farm's routing table (inlined: the handler bodies are pasted into the bus)."""
from cache9farm.handlers import MoistureLog, Planner, Valves
from cache9farm.messages import IrrigationCommand, SoilReading  # noqa: F401
from mycelium_mono import routing_config


@routing_config(inline=True)
class FarmBus:
    SoilReading = [MoistureLog, Planner, Valves]
    IrrigationCommand = [Valves]
