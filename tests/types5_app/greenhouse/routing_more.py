from greenhouse import services as svc
from greenhouse.messages import OpenValve as Valve  # noqa: F401
from greenhouse.messages import PHAlert, SoilReading  # noqa: F401
from greenhouse.services import ValveDriver as Driver
from mycelium_mono import handles, route
from mycelium_mono import routing_config as rc


class LocalPHLogger:
    def __init__(self) -> None:
        self.count = 0

    @handles(PHAlert)
    def log(self, alert: PHAlert) -> None:
        self.count += 1


@rc(inline=True)
class FastBus:
    Valve = [Driver, svc.HTTPNotifier]
    PHAlert = [LocalPHLogger]


@rc
class SlowBus:
    SoilReading = route(background=[svc.IrrigationPlanner])
