# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import handles

from clishop.msgs import Order


class Archive:
    """Handles Order with an async method: on a sync path that is error E0004."""

    @handles(Order)
    async def on_order(self, order: Order) -> None:
        pass


class Ledger:
    """Needs a constructor argument: `bench` cannot build it without --factory."""

    def __init__(self, path: str) -> None:
        self.path = path

    @handles(Order)
    def on_order(self, order: Order) -> None:
        pass
