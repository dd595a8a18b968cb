from gridwatch.messages import Alarm, BreakerCommand, MeterReading  # noqa: F401
from gridwatch.services import Archive, Auditor, Dispatcher, ThresholdRule, TrendRecorder
from mycelium_mono import route, routing_config


@routing_config
class GridBus:
    MeterReading = [ThresholdRule, TrendRecorder]
    Alarm = [Auditor, Dispatcher]
    BreakerCommand = route(sync=[Auditor], background=[Archive])
