"""ServiceRuntime: run services, handler services, restarts with backoff, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mycelium_mono import (
    U64,
    MessageBus,
    MessageHandler,
    ServiceContext,
    ServiceRuntime,
    handles,
    message,
    service,
)
from mycelium_mono.bus import QueueFullError


@message(type_id=5031, topic="runtime_test")
class Order:
    order_id: U64
    qty: U64


@message(type_id=5032, topic="runtime_test")
class Fill:
    order_id: U64
    qty: U64


@message(type_id=5033, topic="runtime_test")
class Cancel:
    order_id: U64


@service
class OrderFeed:
    """A producer: emits ``count`` orders, then returns."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def run(self, ctx: ServiceContext) -> None:
        for i in range(self.count):
            await ctx.emit(Order(order_id=i, qty=i % 7 + 1))


class Matcher(MessageHandler[Order]):
    """A handler that fills every order downstream through self.emit."""

    def handle(self, order: Order) -> None:
        self.emit(Fill(order_id=order.order_id, qty=order.qty))


class Ledger:
    """Several types through @handles, one of them async."""

    def __init__(self) -> None:
        self.filled = 0
        self.cancelled: list[int] = []

    @handles(Fill)
    def on_fill(self, fill: Fill) -> None:
        self.filled += fill.qty

    @handles(Cancel)
    async def on_cancel(self, cancel: Cancel) -> None:
        await asyncio.sleep(0)
        self.cancelled.append(cancel.order_id)


async def test_a_pipeline_of_a_run_service_and_handler_services_delivers_everything() -> None:
    runtime = ServiceRuntime(MessageBus())
    ledger = Ledger()
    await runtime.spawn_service(ledger)
    await runtime.spawn_service(Matcher())
    feed = await runtime.spawn_service(OrderFeed(500))
    assert feed.task is not None
    await asyncio.wait_for(feed.task, 10)
    await runtime.shutdown(timeout=10)
    assert ledger.filled == sum(i % 7 + 1 for i in range(500))


async def test_a_handler_with_several_types_gets_each_and_async_methods_are_awaited() -> None:
    runtime = ServiceRuntime()
    ledger = Ledger()
    running = await runtime.spawn_service(ledger)
    fills, cancels = runtime.bus.publisher(Fill), runtime.bus.publisher(Cancel)
    await fills.publish(Fill(order_id=1, qty=5))
    await cancels.publish(Cancel(order_id=1))
    await cancels.publish(Cancel(order_id=2))
    await runtime.shutdown(timeout=5)
    assert ledger.filled == 5
    assert ledger.cancelled == [1, 2]
    assert running.handled == 3


class Fragile(MessageHandler[Order]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, order: Order) -> None:
        if order.order_id == 1:
            raise ValueError("order 1 is malformed")
        self.seen.append(order.order_id)


async def test_a_handler_that_raises_is_logged_and_keeps_handling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = ServiceRuntime()
    fragile = Fragile()
    running = await runtime.spawn_service(fragile)
    pub = runtime.bus.publisher(Order)
    for i in range(3):
        await pub.publish(Order(order_id=i, qty=1))
    with caplog.at_level(logging.ERROR, logger="mycelium_mono.runtime"):
        await runtime.shutdown(timeout=5)
    assert fragile.seen == [0, 2]
    assert running.errors == 1
    assert any("order 1 is malformed" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


@service
class FlakyConsumer:
    """Raises on its first two runs, then consumes orders normally."""

    def __init__(self) -> None:
        self.runs = 0
        self.seen: list[int] = []

    async def run(self, ctx: ServiceContext) -> None:
        self.runs += 1
        orders = ctx.subscribe(Order)
        if self.runs <= 2:
            raise ConnectionError(f"upstream unavailable (attempt {self.runs})")
        async for order in orders:
            self.seen.append(order.order_id)


async def test_a_failing_service_is_restarted_with_backoff_and_each_restart_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = ServiceRuntime(max_restarts=5, backoff_initial=0.01)
    flaky = FlakyConsumer()
    with caplog.at_level(logging.WARNING, logger="mycelium_mono.runtime"):
        running = await runtime.spawn_service(flaky)
        pub = runtime.bus.publisher(Order)
        # Published while the service is failing: its subscription survives the restarts.
        await asyncio.sleep(0)
        for i in range(3):
            await pub.publish(Order(order_id=i, qty=1))
        for _ in range(500):
            if flaky.runs >= 3:
                break
            await asyncio.sleep(0.01)
        await runtime.shutdown(timeout=5)
    assert running.restarts == 2
    assert flaky.seen == [0, 1, 2]
    restarts = [r for r in caplog.records if "restart" in r.getMessage()]
    assert [r.getMessage().split(";")[1].strip() for r in restarts] == [
        "restart 1 of 5 in 0.010s",
        "restart 2 of 5 in 0.020s",
    ]
    assert all(isinstance(r.exc_info[1], ConnectionError) for r in restarts if r.exc_info)
    assert len([r for r in restarts if r.exc_info]) == 2


@service
class AlwaysBroken:
    def __init__(self) -> None:
        self.runs = 0

    async def run(self, ctx: ServiceContext) -> None:
        self.runs += 1
        raise RuntimeError("misconfigured")


async def test_a_service_that_keeps_failing_is_given_up_after_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = ServiceRuntime(max_restarts=3, backoff_initial=0.001)
    broken = AlwaysBroken()
    with caplog.at_level(logging.WARNING, logger="mycelium_mono.runtime"):
        running = await runtime.spawn_service(broken)
        assert running.task is not None
        await asyncio.wait_for(running.task, 10)
    assert broken.runs == 4
    assert running.restarts == 3
    assert isinstance(running.failure, RuntimeError)
    assert any("giving up" in r.getMessage() for r in caplog.records)
    await runtime.shutdown(timeout=1)


@service
class SubscribesThenBreaks:
    def __init__(self) -> None:
        self.runs = 0

    async def run(self, ctx: ServiceContext) -> None:
        self.runs += 1
        ctx.subscribe(Order, maxsize=2, policy="block")
        raise RuntimeError("misconfigured")


async def test_a_service_given_up_no_longer_holds_back_block_publishers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = ServiceRuntime(max_restarts=1, backoff_initial=0.2)
    other = runtime.bus.subscribe(Order, maxsize=100)
    with caplog.at_level(logging.ERROR, logger="mycelium_mono.runtime"):
        running = await runtime.spawn_service(SubscribesThenBreaks())
        pub = runtime.bus.publisher(Order)
        for _ in range(100):  # its first run subscribed and raised: it waits out the backoff
            if running.context.subscriptions:
                break
            await asyncio.sleep(0.001)
        await pub.publish(Order(order_id=0, qty=1))  # queued for it while it still restarts
        assert running.task is not None
        await asyncio.wait_for(running.task, 10)
        # Its "block" subscription held 2: left open, the third publish would wait forever.
        for i in range(1, 10):
            await asyncio.wait_for(pub.publish(Order(order_id=i, qty=1)), 5)
    assert [other.recv_nowait().order_id for _ in range(10)] == list(range(10))
    assert all(sub.closed for sub in running.context.subscriptions)
    assert any("subscriptions are closed, 1 queued messages unhandled" in r.getMessage()
               for r in caplog.records)
    await runtime.shutdown(timeout=1)


@service
class Ticker:
    """A producer that sleeps between messages until shutdown."""

    def __init__(self) -> None:
        self.sent = 0
        self.woke_early = False

    async def run(self, ctx: ServiceContext) -> None:
        while not ctx.shutting_down:
            await ctx.emit(Order(order_id=self.sent, qty=1))
            self.sent += 1
            if not await ctx.sleep(60):
                self.woke_early = True


async def test_shutdown_wakes_sleeping_producers_at_once() -> None:
    runtime = ServiceRuntime()
    ticker = Ticker()
    await runtime.spawn_service(ticker)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(runtime.shutdown(timeout=30), 10)
    assert ticker.woke_early
    assert ticker.sent == 1


class SlowCounter(MessageHandler[Fill]):
    def __init__(self) -> None:
        self.count = 0

    async def handle(self, fill: Fill) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.count += 1


async def test_shutdown_drains_everything_queued_through_a_pipeline_under_block() -> None:
    runtime = ServiceRuntime(maxsize=16, policy="block")
    counter = SlowCounter()
    await runtime.spawn_service(counter)
    await runtime.spawn_service(Matcher())
    pub = runtime.bus.publisher(Order)
    for i in range(1000):
        await pub.publish(Order(order_id=i, qty=1))  # far past the bound: waits for space
    await runtime.shutdown(timeout=30)
    assert counter.count == 1000
    assert runtime.bus.stats.dropped == 0


@service
class Stubborn:
    """Ignores the shutdown signal entirely."""

    def __init__(self) -> None:
        self.cancelled = False

    async def run(self, ctx: ServiceContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_a_service_that_ignores_shutdown_is_cancelled_after_the_timeout() -> None:
    runtime = ServiceRuntime()
    stubborn = Stubborn()
    await runtime.spawn_service(stubborn)
    await asyncio.sleep(0)
    await asyncio.wait_for(runtime.shutdown(timeout=0.2), 10)
    assert stubborn.cancelled


async def test_wait_for_shutdown_returns_after_a_shutdown_request() -> None:
    runtime = ServiceRuntime()
    ledger = Ledger()
    await runtime.spawn_service(ledger)
    waiter = asyncio.create_task(runtime.wait_for_shutdown(timeout=5))
    await runtime.bus.publisher(Fill).publish(Fill(order_id=1, qty=2))
    await asyncio.sleep(0)
    assert not waiter.done()
    runtime.request_shutdown()
    await asyncio.wait_for(waiter, 10)
    assert ledger.filled == 2


async def test_spawning_something_that_handles_nothing_explains_what_to_write() -> None:
    runtime = ServiceRuntime()
    with pytest.raises(TypeError, match="MessageHandler"):
        await runtime.spawn_service(object())
    await runtime.shutdown(timeout=1)


class Placeholder(MessageHandler[Order]):
    """Subclasses MessageHandler[Order] but never defines handle()."""


async def test_a_message_handler_without_handle_is_refused_at_spawn() -> None:
    # MessageHandler.handle is only a placeholder: spawning used to succeed and then fail
    # (and restart) on every Order with NotImplementedError.
    runtime = ServiceRuntime()
    with pytest.raises(TypeError, match="cannot spawn Placeholder"):
        await runtime.spawn_service(Placeholder())
    await runtime.shutdown(timeout=1)


def test_service_decorator_requires_an_async_run() -> None:
    with pytest.raises(TypeError, match=r"async def run\(self, ctx"):

        @service
        class NoRun:
            def run(self) -> None: ...


class FillsTwice(MessageHandler[Order]):
    """Two downstream emits per message: the second finds a one-slot queue full."""

    def handle(self, order: Order) -> None:
        self.emit(Fill(order_id=order.order_id, qty=1))
        self.emit(Fill(order_id=order.order_id, qty=2))


async def test_a_handler_emitting_into_a_full_block_queue_waits_and_never_overfills() -> None:
    runtime = ServiceRuntime(maxsize=1, policy="block")
    fills = runtime.bus.subscribe(Fill, maxsize=1, policy="block")
    await runtime.spawn_service(FillsTwice())
    pub = runtime.bus.publisher(Order)
    got: list[tuple[int, int]] = []
    async def produce() -> None:
        for i in range(20):
            await pub.publish(Order(order_id=i, qty=1))

    producer = asyncio.create_task(produce())
    async with asyncio.timeout(10):
        while len(got) < 40:
            fill = await fills.recv()
            got.append((fill.order_id, fill.qty))
            assert len(fills) <= 1
    await producer
    assert got == [(i, q) for i in range(20) for q in (1, 2)]
    assert fills.stats.high_water <= 1
    await runtime.shutdown()


async def test_emit_nowait_outside_a_handler_on_a_full_block_queue_raises_queue_full() -> None:
    runtime = ServiceRuntime()
    runtime.bus.subscribe(Fill, maxsize=1, policy="block")
    running = await runtime.spawn_service(Matcher())
    running.context.emit_nowait(Fill(order_id=1, qty=1))
    with pytest.raises(QueueFullError):
        running.context.emit_nowait(Fill(order_id=2, qty=1))
    await runtime.shutdown(timeout=1)
