"""Inlets for tests that drive a transport alone (no bus): messages go into a list."""

from __future__ import annotations

from typing import Any

from mycelium_mono.bus.transports.base import CallbackInlet

CallInlet = CallbackInlet


class ListInlet(CallbackInlet):
    """Takes every offered message into ``got`` and settles it as done at once."""

    def __init__(self, got: list[Any] | None = None) -> None:
        self.got: list[Any] = got if got is not None else []
        super().__init__(self.got.append)
