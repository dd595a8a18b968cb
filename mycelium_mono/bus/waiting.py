"""Waiting on a listed future: the one wake-up pattern the bus, the backlog and ZeroMQ share."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

__all__ = ["wait_listed"]

T = TypeVar("T")


async def wait_listed(listed: list[T], entry: T, future: asyncio.Future[Any]) -> None:
    """List ``entry`` in ``listed`` and await ``future`` (whoever wakes it takes the list).

    A wait cut short (a timeout, a cancelled task) takes its entry out again. Left listed, it
    stayed until the next wake-up, which a stalled consumer may never bring: a producer or a
    health check polling under a timeout grew the list by one future per attempt
    (tests/test_stranger9_bounds9.py).
    """
    listed.append(entry)
    try:
        await future
    finally:
        if future.cancelled():
            with contextlib.suppress(ValueError):
                listed.remove(entry)
