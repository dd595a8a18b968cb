# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
"""The shop's routing module: correct, used by show, stubs, bench and doctor."""

from mycelium_mono import routing_config

from clishop.msgs import Signal, Swap
from clishop.svc import Audit, Detector, Risk

SHOP_NAME = "clishop"


def make_bus() -> "MonolithBus":
    return MonolithBus(Detector(), Risk(), Audit())


@routing_config
class MonolithBus:
    Swap = [Detector, Risk]
    Signal = [Audit]
