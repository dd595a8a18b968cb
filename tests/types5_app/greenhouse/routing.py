from mycelium_mono import route, routing_config
from greenhouse.messages import OpenValve, PHAlert, SoilReading  # noqa: F401
from greenhouse.services import CO2Sensor, HTTPNotifier, Historian, IrrigationPlanner, ValveDriver


@routing_config
class GreenhouseBus:
    SoilReading = [IrrigationPlanner, CO2Sensor]
    OpenValve = route(sync=[ValveDriver, HTTPNotifier], background=[Historian])
    PHAlert = [HTTPNotifier]
