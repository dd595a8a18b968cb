# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import MessageHandler

from clishop.msgs import Signal, Swap


class Forgotten(MessageHandler[Signal]):
    """Handles Signal, but the `unrouted` routing module never routes it there."""

    def handle(self, signal: Signal) -> None:
        pass


class SwapHandlerBase(MessageHandler[Swap]):
    """An abstract base (no handle of its own): doctor must not ask to route it."""
