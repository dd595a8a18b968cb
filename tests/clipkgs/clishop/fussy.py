# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import MessageHandler, routing_config

from clishop.msgs import Swap
from clishop.svc import Risk


class Fussy(MessageHandler[Swap]):
    """Refuses the all-zero message `bench` emits once before timing."""

    def handle(self, swap: Swap) -> None:
        if swap.amount == 0:
            raise ValueError("amount must be positive")


@routing_config
class FussyBus:
    Swap = [Risk, Fussy]
