# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import MessageHandler, handles

from clishop.msgs import Signal, Swap


class Detector(MessageHandler[Swap]):
    def __init__(self) -> None:
        self.seen = 0

    def handle(self, swap: Swap) -> None:
        self.seen += 1
        if swap.amount > 10:
            self.emit(Signal(amount=swap.amount))


class Risk(MessageHandler[Swap]):
    def __init__(self) -> None:
        self.seen = 0

    def handle(self, swap: Swap) -> None:
        self.seen += 1


class Audit:
    def __init__(self) -> None:
        self.signals: list[Signal] = []

    @handles(Signal)
    def on_signal(self, signal: Signal) -> None:
        self.signals.append(signal)
