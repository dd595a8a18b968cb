from mycelium_mono import route, routing_config
from ward.messages import Admission, BedAssigned, WardFull  # noqa: F401
from ward.services import BedAllocator, Journal, Pager, Triage


@routing_config
class WardBus:
    Admission = [Triage, BedAllocator]
    BedAssigned = [Journal]
    WardFull = route(sync=[Journal], background=[Pager])
