# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import routing_config

from clishop.msgs import Order
from clishop.slow import Ledger


def make_bus() -> "LedgerBus":
    return LedgerBus(Ledger("/dev/null"))


@routing_config
class LedgerBus:
    Order = [Ledger]
