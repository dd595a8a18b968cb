# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import route, routing_config

from clishop.msgs import Signal, Swap
from clishop.svc import Audit, Detector, Risk


@routing_config
class HybridBus:
    Swap = route(sync=[Detector], background=[Risk])
    Signal = [Audit]
