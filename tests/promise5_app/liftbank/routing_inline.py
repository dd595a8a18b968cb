from liftbank.messages import CarAssignment, DoorCommand, HallCall  # noqa: F401
from liftbank.services import (
    Archive,
    CarController,
    Dispatcher,
    Logbook,
    Noter,
    SafetyMonitor,
)
from mycelium_mono import route, routing_config


@routing_config(inline=True)
class InlineLiftBus:
    HallCall = [Dispatcher, SafetyMonitor]
    CarAssignment = [CarController, Logbook]
    DoorCommand = route(sync=[Logbook, Noter], background=[Archive])
