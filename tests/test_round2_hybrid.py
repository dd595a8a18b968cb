"""Round 2 attacks on the hybrid emit that queues the background call before the sync path."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any

import pytest

from mycelium_mono import U64, MessageHandler, message, route, routing_config
from mycelium_mono.bus import BackgroundBacklog

LOG: list[str] = []


@message(type_id=5391, topic="round2_hybrid")
class Outer:
    n: U64


@message(type_id=5392, topic="round2_hybrid")
class Inner:
    n: U64


class OuterSync(MessageHandler[Outer]):
    bus: Any = None

    def handle(self, msg: Outer) -> None:
        LOG.append(f"sync outer {msg.n}")
        if self.bus is not None:
            self.bus.emit_inner(Inner(n=msg.n))
        if msg.n == 99:
            raise LookupError("outer 99")


class OuterBackground(MessageHandler[Outer]):
    async def handle(self, msg: Outer) -> None:  # type: ignore[override]
        LOG.append(f"background outer {msg.n}")


class InnerSync(MessageHandler[Inner]):
    def handle(self, msg: Inner) -> None:
        LOG.append(f"sync inner {msg.n}")


class InnerBackground(MessageHandler[Inner]):
    async def handle(self, msg: Inner) -> None:  # type: ignore[override]
        LOG.append(f"background inner {msg.n}")


@routing_config
class Round2HybridBus:
    Outer = route(sync=[OuterSync], background=[OuterBackground])
    Inner = route(sync=[InnerSync], background=[InnerBackground])


@routing_config(inline=True)
class Round2InlineHybridBus:
    Outer = route(sync=[OuterSync], background=[OuterBackground])
    Inner = route(sync=[InnerSync], background=[InnerBackground])


def _bus(nested: bool = False, inline: bool = False, **kwargs: Any) -> Any:
    LOG.clear()
    outer = OuterSync()
    cls: Any = Round2InlineHybridBus if inline else Round2HybridBus
    bus = cls(
        outer_sync=outer, outer_background=OuterBackground(), inner_sync=InnerSync(),
        inner_background=InnerBackground(), **kwargs,
    )  # fmt: skip
    if nested:
        outer.bus = bus
    return bus


def _eager_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                   **kwargs: Any) -> asyncio.Task[Any]:  # fmt: skip
    """Python 3.12's asyncio.eager_task_factory, for 3.11: the first step runs right now."""
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        result = done.value

        async def finished() -> Any:
            return result

        return asyncio.Task(finished(), loop=loop, **kwargs)

    @types.coroutine
    def rest() -> Generator[Any, Any, Any]:
        nonlocal yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # handed to the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    return done.value

    async def resumed() -> Any:
        return await rest()

    return asyncio.Task(resumed(), loop=loop, **kwargs)


EAGER = getattr(asyncio, "eager_task_factory", _eager_factory)


@pytest.mark.parametrize("inline", [False, True])
async def test_the_sync_handlers_run_first_under_an_eager_task_factory(inline: bool) -> None:
    # README: "the backlog's task cannot start before the emit returns, so the sync handlers
    # still run first". An eager task factory (Python 3.12+) starts a task inside
    # create_task: the backlog's worker, started by the first emit, ran the background
    # handler before the sync one.
    loop = asyncio.get_running_loop()
    loop.set_task_factory(EAGER)  # type: ignore[arg-type]
    try:
        bus = _bus(inline=inline)
        bus.emit_outer(Outer(n=1))
        bus.emit_outer(Outer(n=2))
        await asyncio.wait_for(bus.background.drain(), 5)
        assert LOG.index("sync outer 1") < LOG.index("background outer 1"), LOG
        assert LOG.index("sync outer 2") < LOG.index("background outer 2"), LOG
        await bus.background.close()
    finally:
        loop.set_task_factory(None)


@pytest.mark.parametrize("inline", [False, True])
async def test_a_raising_sync_handler_does_not_cancel_the_background_call(inline: bool) -> None:
    # Every routed handler runs even if an earlier one raised (README, monolith): the
    # background half included, now that it is queued first.
    bus = _bus(inline=inline)
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit_outer(Outer(n=99))
    assert caught.group_contains(LookupError, match="outer 99")
    await asyncio.wait_for(bus.background.drain(), 5)
    assert LOG == ["sync outer 99", "background outer 99"]


@pytest.mark.parametrize("inline", [False, True])
async def test_nested_hybrid_emits_queue_background_calls_in_publish_order(inline: bool) -> None:
    # The outer message's background call is queued before its sync handler emits Inner:
    # the order a MessageBus's subscribers would receive Outer and Inner in.
    bus = _bus(nested=True, inline=inline)
    for n in range(1, 4):
        bus.emit_outer(Outer(n=n))
    await asyncio.wait_for(bus.background.drain(), 5)
    background = [line for line in LOG if line.startswith("background")]
    assert background == [f"background {kind} {n}" for n in range(1, 4)
                          for kind in ("outer", "inner")]  # fmt: skip
    assert [line for line in LOG if line.startswith("sync")] == [
        f"sync {kind} {n}" for n in range(1, 4) for kind in ("outer", "inner")
    ]


@pytest.mark.parametrize("inline", [False, True])
async def test_a_nested_emit_that_fills_the_backlog_is_reported(inline: bool) -> None:
    # Backlog of 1: Outer's background call takes the slot, its sync handler's Inner is
    # refused before any Inner handler ran; the outer emit reports it.
    bus = _bus(nested=True, inline=inline, background=BackgroundBacklog(maxsize=1))
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit_outer(Outer(n=1))
    from mycelium_mono import BacklogFull

    assert caught.group_contains(BacklogFull)
    await asyncio.wait_for(bus.background.drain(), 5)
    assert LOG == ["sync outer 1", "background outer 1"]


async def test_a_drop_oldest_backlog_drops_the_outer_call_for_a_nested_one() -> None:
    bus = _bus(nested=True, background=BackgroundBacklog(maxsize=1, policy="drop_oldest"))
    bus.emit_outer(Outer(n=1))
    await asyncio.wait_for(bus.background.drain(), 5)
    assert LOG == ["sync outer 1", "sync inner 1", "background inner 1"]
    assert bus.background.stats.dropped == 1
