"""A second routing module whose handler class is written in it, with instance attributes."""

from mycelium_mono import MessageHandler, routing_config
from ward.messages import BedAssigned


class Porter(MessageHandler[BedAssigned]):
    def __init__(self) -> None:
        self.moves: list[int] = []
        self.busy = False

    def handle(self, b: BedAssigned) -> None:
        self.moves.append(b.bed)


@routing_config
class DeskBus:
    BedAssigned = [Porter]
