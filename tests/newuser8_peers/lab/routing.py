"""The lab's routing table."""

from lab.messages import PageSent, ResultReady, SampleTaken  # noqa: F401
from lab.services import Analyzer, Auditor, Notifier, PagerArchive, Registrar
from mycelium_mono import route, routing_config


@routing_config
class MonolithBus:
    SampleTaken = [Analyzer, Registrar]
    ResultReady = [Auditor, Notifier]
    PageSent = route(sync=[Auditor], background=[PagerArchive])
