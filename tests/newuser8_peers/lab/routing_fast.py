"""The lab's routing table, with the handlers' bodies inlined."""

from lab.messages import PageSent, ResultReady, SampleTaken  # noqa: F401
from lab.services import Analyzer, Auditor, Notifier, PagerArchive, Registrar
from mycelium_mono import route, routing_config


@routing_config(inline=True)
class FastBus:
    SampleTaken = [Analyzer, Registrar]
    ResultReady = [Auditor, Notifier]
    PageSent = route(sync=[Auditor], background=[PagerArchive])
