from greenhouse.messages import OpenValve, PHAlert, SoilReading  # noqa: F401
from greenhouse.services import CO2Sensor, Historian, HTTPNotifier, IrrigationPlanner, ValveDriver
from mycelium_mono import route, routing_config


@routing_config
class GreenhouseBus:
    SoilReading = [IrrigationPlanner, CO2Sensor]
    OpenValve = route(sync=[ValveDriver, HTTPNotifier], background=[Historian])
    PHAlert = [HTTPNotifier]
