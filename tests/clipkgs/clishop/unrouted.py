# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import routing_config

from clishop.extra import Forgotten, SwapHandlerBase
from clishop.msgs import Signal, Swap
from clishop.svc import Audit, Detector, Risk


@routing_config
class MonolithBus:
    Swap = [Detector, Risk]
    Signal = [Audit]
