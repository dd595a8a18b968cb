# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import routing_config

from clishop.msgs import NotAMessage, Order, Signal, Swap
from clishop.slow import Archive
from clishop.svc import Audit, Detector, Risk

from clishop import svc


@routing_config
class Bus:
    Swap = [Detector, svc]  # error here
