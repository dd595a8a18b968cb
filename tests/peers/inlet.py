"""An :class:`~mycelium_mono.bus.transports.base.Inlet` for tests that drive a transport alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mycelium_mono.bus.transports.base import Settle


class ListInlet:
    """Takes every offered message into ``got`` and settles it as done at once."""

    def __init__(self, got: list[Any] | None = None) -> None:
        self.got: list[Any] = got if got is not None else []

    def offer(self, msg: Any, settle: Settle | None = None) -> bool:
        self.got.append(msg)
        if settle is not None:
            settle(None)
        return True

    async def space(self, message_type: type[Any]) -> None:
        return None


class CallInlet(ListInlet):
    """Calls ``fn`` with every offered message (then settles it as done)."""

    def __init__(self, fn: Callable[[Any], None]) -> None:
        super().__init__()
        self.fn = fn

    def offer(self, msg: Any, settle: Settle | None = None) -> bool:
        self.fn(msg)
        if settle is not None:
            settle(None)
        return True
