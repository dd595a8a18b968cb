# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import MessageHandler, routing_config

from clishop.msgs import Swap


class Background(MessageHandler[Swap]):
    def handle(self, swap: Swap) -> None:
        pass


@routing_config
class Bus:
    Swap = [Background]  # error here
