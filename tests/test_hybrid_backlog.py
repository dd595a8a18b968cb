"""Hybrid routes: sync handlers inline, background handlers on one worker via BackgroundBacklog.

``HandWrittenHybridBus`` has the shape the generated ``MonolithBus`` gives a
``route(sync=[AuditTrail], background=[OrderStore, FillMetrics])`` entry, so the same calls
are exercised here as there.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from mycelium_mono import U64, BackgroundBacklog, MessageHandler, message
from mycelium_mono.bus import BacklogFull, NoEventLoopError, default_backlog
from mycelium_mono.bus.hybrid import BacklogClosedError


@message(type_id=5051, topic="hybrid_test")
class OrderExecution:
    order_id: U64
    qty: U64


class AuditTrail(MessageHandler[OrderExecution]):
    """Sync, on the critical path."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def handle(self, order: OrderExecution) -> None:
        self.ids.append(order.order_id)


class OrderStore(MessageHandler[OrderExecution]):
    """Async background handler, held back by ``gate`` until the test opens it."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.ids: list[int] = []
        self.fail_on: set[int] = set()

    async def handle(self, order: OrderExecution) -> None:  # type: ignore[override]
        await self.gate.wait()
        if order.order_id in self.fail_on:
            raise OSError(f"database rejected order {order.order_id}")
        self.ids.append(order.order_id)


class FillMetrics(MessageHandler[OrderExecution]):
    """Sync background handler."""

    def __init__(self) -> None:
        self.total_qty = 0

    def handle(self, order: OrderExecution) -> None:
        self.total_qty += order.qty


class HandWrittenHybridBus:
    """What the generated bus does for ``OrderExecution = route(sync=[...], background=[...])``."""

    def __init__(self, backlog: BackgroundBacklog | None = None) -> None:
        self.audit_trail = AuditTrail()
        self.order_store = OrderStore()
        self.fill_metrics = FillMetrics()
        self.background = backlog if backlog is not None else default_backlog()

    def emit_order_execution_sync(self, msg: OrderExecution) -> None:
        self.audit_trail.handle(msg)

    async def emit_order_execution_async(self, msg: OrderExecution) -> None:
        errors: list[Exception] = []
        try:
            await self.order_store.handle(msg)
        except Exception as exc:
            errors.append(exc)
        try:
            self.fill_metrics.handle(msg)
        except Exception as exc:
            errors.append(exc)
        if errors:
            raise ExceptionGroup("background handlers failed for OrderExecution", errors)

    def emit_order_execution(self, msg: OrderExecution) -> None:
        self.emit_order_execution_sync(msg)
        self.background.submit(self.emit_order_execution_async, msg)


def _order(i: int) -> OrderExecution:
    return OrderExecution(order_id=i, qty=i + 1)


async def test_sync_handlers_run_inline_and_background_ones_do_not_block_the_caller() -> None:
    bus = HandWrittenHybridBus()
    bus.order_store.gate.clear()  # the database is slow: background work cannot finish
    for i in range(5):
        bus.emit_order_execution(_order(i))
    assert bus.audit_trail.ids == [0, 1, 2, 3, 4]
    assert bus.order_store.ids == []
    assert bus.background.stats.queued + bus.background.stats.completed <= 5
    bus.order_store.gate.set()
    await asyncio.wait_for(bus.background.drain(), 5)
    assert bus.order_store.ids == [0, 1, 2, 3, 4]
    assert bus.fill_metrics.total_qty == 15
    assert bus.background.stats.completed == 5


async def test_drain_waits_for_everything_submitted_so_far() -> None:
    bus = HandWrittenHybridBus()
    for i in range(1000):
        bus.emit_order_execution(_order(i))
    await asyncio.wait_for(bus.background.drain(), 10)
    assert bus.order_store.ids == list(range(1000))
    stats = bus.background.stats
    assert (stats.submitted, stats.completed, stats.failed, stats.queued) == (1000, 1000, 0, 0)


async def test_one_worker_task_serves_the_whole_backlog() -> None:
    bus = HandWrittenHybridBus()
    before = len(asyncio.all_tasks())
    for i in range(500):
        bus.emit_order_execution(_order(i))
    assert len(asyncio.all_tasks()) - before == 1
    await bus.background.drain()


async def test_background_failures_reach_on_error_and_the_rest_still_runs() -> None:
    reported: list[BaseException] = []
    bus = HandWrittenHybridBus(BackgroundBacklog(on_error=reported.append))
    bus.order_store.fail_on = {1}
    for i in range(3):
        bus.emit_order_execution(_order(i))
    await asyncio.wait_for(bus.background.drain(), 5)
    assert bus.order_store.ids == [0, 2]
    assert bus.fill_metrics.total_qty == 1 + 2 + 3  # every background handler ran
    assert len(reported) == 1
    group = reported[0]
    assert isinstance(group, ExceptionGroup)
    assert "database rejected order 1" in str(group.exceptions[0])
    assert bus.background.stats.failed == 1


async def test_background_failures_without_a_callback_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = HandWrittenHybridBus()
    bus.order_store.fail_on = {0}
    with caplog.at_level(logging.ERROR, logger="mycelium_mono.hybrid"):
        bus.emit_order_execution(_order(0))
        with pytest.raises(ExceptionGroup):  # and raised by drain(): tests/test_hybrid_failures
            await asyncio.wait_for(bus.background.drain(), 5)
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1
    assert isinstance(logged[0].exc_info[1], ExceptionGroup)  # type: ignore[index]


async def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    bus = HandWrittenHybridBus(BackgroundBacklog(maxsize=3, policy="drop_oldest"))
    bus.order_store.gate.clear()
    bus.emit_order_execution(_order(0))
    await asyncio.sleep(0)  # the worker takes order 0 and waits at the gate
    for i in range(1, 8):
        bus.emit_order_execution(_order(i))
    bus.order_store.gate.set()
    await asyncio.wait_for(bus.background.drain(), 5)
    assert bus.order_store.ids == [0, 5, 6, 7]
    assert bus.background.stats.dropped == 4
    assert bus.audit_trail.ids == list(range(8))  # the sync path never drops


async def test_raise_refuses_a_full_backlog_with_a_clear_error() -> None:
    bus = HandWrittenHybridBus(BackgroundBacklog(maxsize=2, policy="raise"))
    bus.order_store.gate.clear()
    bus.emit_order_execution(_order(0))
    await asyncio.sleep(0)
    bus.emit_order_execution(_order(1))
    bus.emit_order_execution(_order(2))
    with pytest.raises(BacklogFull, match="wait_for_space"):
        bus.emit_order_execution(_order(3))
    bus.order_store.gate.set()
    await asyncio.wait_for(bus.background.drain(), 5)
    assert bus.order_store.ids == [0, 1, 2]


async def test_block_refuses_a_call_past_the_bound_with_nothing_queued() -> None:
    backlog = BackgroundBacklog(maxsize=4, policy="block")
    bus = HandWrittenHybridBus(backlog)
    bus.order_store.gate.clear()
    for i in range(4):
        bus.emit_order_execution(_order(i))
    with pytest.raises(BacklogFull, match=r"(?s)policy='block'.*wait_for_space"):
        bus.emit_order_execution(_order(4))
    assert len(backlog) == 4
    bus.order_store.gate.set()
    await asyncio.wait_for(backlog.drain(), 5)
    assert bus.order_store.ids == [0, 1, 2, 3]


async def test_a_producer_awaiting_wait_for_space_stays_within_the_bound_and_loses_none() -> None:
    backlog = BackgroundBacklog(maxsize=4, policy="block")
    bus = HandWrittenHybridBus(backlog)
    bus.order_store.gate.clear()
    released = asyncio.get_running_loop().call_later(0.05, bus.order_store.gate.set)
    peak = 0
    for i in range(50):
        await asyncio.wait_for(backlog.wait_for_space(), 5)
        bus.emit_order_execution(_order(i))
        peak = max(peak, len(backlog))
    await asyncio.wait_for(backlog.drain(), 5)
    released.cancel()
    assert peak <= 4
    assert bus.order_store.ids == list(range(50))
    assert backlog.stats.dropped == 0


def test_submit_without_an_event_loop_points_at_the_sync_emit() -> None:
    bus = HandWrittenHybridBus()
    with pytest.raises(NoEventLoopError, match="emit_order_execution_sync"):
        bus.emit_order_execution(_order(0))
    assert bus.background.stats.submitted == 0


async def test_close_runs_what_is_queued_then_refuses_new_calls() -> None:
    bus = HandWrittenHybridBus()
    for i in range(10):
        bus.emit_order_execution(_order(i))
    await asyncio.wait_for(bus.background.close(), 5)
    assert bus.order_store.ids == list(range(10))
    with pytest.raises(BacklogClosedError):
        bus.emit_order_execution(_order(10))


def test_the_backlog_survives_a_new_event_loop() -> None:
    bus = HandWrittenHybridBus()

    async def emit_and_drain(start: int) -> None:
        for i in range(start, start + 3):
            bus.emit_order_execution(_order(i))
        await asyncio.wait_for(bus.background.drain(), 5)

    async def emit_one_and_drain(i: int) -> None:
        bus.emit_order_execution(_order(i))
        await asyncio.wait_for(bus.background.drain(), 5)

    asyncio.run(emit_and_drain(0))
    asyncio.run(emit_one_and_drain(3))
    asyncio.run(emit_and_drain(4))
    assert bus.order_store.ids == [0, 1, 2, 3, 4, 5, 6]


def test_default_backlog_gives_each_bus_its_own_backlog() -> None:
    first, second = default_backlog(), default_backlog()
    assert first is not second
    assert (first.maxsize, first.policy) == (10_000, "block")
