from greenhouse.messages import OpenValve, PHAlert, SoilReading  # noqa: F401
from greenhouse.services import HTTPNotifier, ValveDriver
from mycelium_mono import route, routing_config


@routing_config
class EdgeBus:
    OpenValve = route(sync=[ValveDriver])
    PHAlert = route(sync=[HTTPNotifier], background=[])
    SoilReading = []
