"""The same handler classes give the same observable state in monolith mode and on the bus.

The monolith side is a plain function taking fresh handlers and the feed, so a new way of
building the monolith is one more entry in ``MONOLITHS``. Two are here: the direct call
sequence a person would write by hand, and the ``@routing_config`` bus built at run time.

What "the same state" means: every count, total and position, and every per-type sequence.
Across types the order may differ by design — in the monolith a handler's ``emit`` runs the
downstream handlers before it returns, on the bus the downstream message is queued — and the
bus promises per-publisher order, which is what the per-type lists check.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mycelium_mono import (
    U32,
    U64,
    MessageBus,
    MessageHandler,
    ServiceRuntime,
    handles,
    message,
    routing_config,
)
from mycelium_mono.bus import OverflowPolicy
from mycelium_mono.handlers import attach_emitter


@message(type_id=5061, topic="equivalence")
class Swap:
    pool: U32
    amount_in: U64
    price_e6: U64


@message(type_id=5062, topic="equivalence")
class Signal:
    pool: U32
    edge_bps: U32
    seq: U64


@message(type_id=5063, topic="equivalence")
class Fill:
    pool: U32
    qty: U64


class SwapCounter(MessageHandler[Swap]):
    """A plain counter."""

    def __init__(self) -> None:
        self.count = 0
        self.volume: Counter[int] = Counter()

    def handle(self, swap: Swap) -> None:
        self.count += 1
        self.volume[swap.pool] += swap.amount_in


class EdgeDetector(MessageHandler[Swap]):
    """Accumulates prices per pool and emits a Signal when a price jumps by > 50 bps."""

    def __init__(self) -> None:
        self.last_price: dict[int, int] = {}
        self.emitted = 0

    def handle(self, swap: Swap) -> None:
        last = self.last_price.get(swap.pool)
        self.last_price[swap.pool] = swap.price_e6
        if last is None:
            return
        edge = abs(swap.price_e6 - last) * 10_000 // last
        if edge > 50:
            self.emitted += 1
            self.emit(Signal(pool=swap.pool, edge_bps=edge, seq=self.emitted))


class Executor(MessageHandler[Signal]):
    """Turns strong signals into fills and keeps a position per pool."""

    def __init__(self) -> None:
        self.position: Counter[int] = Counter()

    def handle(self, signal: Signal) -> None:
        if signal.edge_bps >= 100:
            qty = signal.edge_bps * 10
            self.position[signal.pool] += qty
            self.emit(Fill(pool=signal.pool, qty=qty))


class AuditLog:
    """Two types through @handles."""

    def __init__(self) -> None:
        self.signals: list[tuple[int, int]] = []
        self.fills: list[tuple[int, int]] = []

    @handles(Signal)
    def on_signal(self, signal: Signal) -> None:
        self.signals.append((signal.seq, signal.edge_bps))

    @handles(Fill)
    def on_fill(self, fill: Fill) -> None:
        self.fills.append((fill.pool, fill.qty))


@dataclass
class Services:
    swap_counter: SwapCounter
    edge_detector: EdgeDetector
    executor: Executor
    audit_log: AuditLog

    @classmethod
    def fresh(cls) -> Services:
        return cls(SwapCounter(), EdgeDetector(), Executor(), AuditLog())

    def observable(self) -> dict[str, Any]:
        return {
            "swaps": self.swap_counter.count,
            "volume": dict(self.swap_counter.volume),
            "signals_emitted": self.edge_detector.emitted,
            "last_price": dict(self.edge_detector.last_price),
            "position": dict(self.executor.position),
            "audited_signals": list(self.audit_log.signals),
            "audited_fills": list(self.audit_log.fills),
        }


def feed(seed: int, count: int) -> list[Swap]:
    rng = random.Random(seed)
    price = dict.fromkeys(range(5), 1_000_000)
    swaps = []
    for _ in range(count):
        pool = rng.randrange(5)
        price[pool] = max(1_000, price[pool] + rng.randint(-20_000, 20_000))
        swaps.append(Swap(pool=pool, amount_in=rng.randint(1, 10**9), price_e6=price[pool]))
    return swaps


# -- the monolith side: direct calls ------------------------------------------------------


def run_hand_written_monolith(services: Services, swaps: list[Swap]) -> None:
    """What a person would write: straight-line calls, emit wired to the same calls."""

    def emit(msg: Any) -> None:
        if type(msg) is Swap:
            services.swap_counter.handle(msg)
            services.edge_detector.handle(msg)
        elif type(msg) is Signal:
            services.executor.handle(msg)
            services.audit_log.on_signal(msg)
        elif type(msg) is Fill:
            services.audit_log.on_fill(msg)

    for handler in (services.swap_counter, services.edge_detector, services.executor):
        attach_emitter(handler, emit)
    for swap in swaps:
        emit(swap)


def run_routing_config_monolith(services: Services, swaps: list[Swap]) -> None:
    """The generated MonolithBus (built at run time when the hook is not installed)."""

    @routing_config
    class MonolithBus:
        Swap = [SwapCounter, EdgeDetector]
        Signal = [Executor, AuditLog]
        Fill = [AuditLog]

    bus: Any = MonolithBus(
        swap_counter=services.swap_counter,
        edge_detector=services.edge_detector,
        executor=services.executor,
        audit_log=services.audit_log,
    )
    for swap in swaps:
        bus.emit_swap(swap)


MONOLITHS: dict[str, Callable[[Services, list[Swap]], None]] = {
    "hand_written": run_hand_written_monolith,
    "routing_config": run_routing_config_monolith,
}


# -- the flexible side: ServiceRuntime on the in-process bus -----------------------------------


async def run_on_service_runtime(
    services: Services, swaps: list[Swap], maxsize: int, policy: OverflowPolicy
) -> MessageBus:
    bus = MessageBus()
    runtime = ServiceRuntime(bus, maxsize=maxsize, policy=policy)
    for svc in (services.swap_counter, services.edge_detector, services.executor):
        await runtime.spawn_service(svc)
    await runtime.spawn_service(services.audit_log)
    pub = bus.publisher(Swap)
    for swap in swaps:
        await pub.publish(swap)
    await runtime.shutdown(timeout=30)
    return bus


@pytest.mark.parametrize("monolith", list(MONOLITHS))
@pytest.mark.parametrize(
    ("seed", "maxsize"),
    [(1, 10_000), (2, 4), (3, 1)],
    ids=["roomy", "tight", "one-slot"],
)
async def test_monolith_and_service_runtime_reach_the_same_state(
    monolith: str, seed: int, maxsize: int
) -> None:
    swaps = feed(seed, 3000)
    direct = Services.fresh()
    MONOLITHS[monolith](direct, swaps)
    flexible = Services.fresh()
    bus = await run_on_service_runtime(flexible, swaps, maxsize, "block")
    expected = direct.observable()
    assert expected["audited_fills"], "the feed produced no fills: the test proved nothing"
    assert flexible.observable() == expected
    assert bus.stats.dropped == 0


def test_the_feed_is_deterministic() -> None:
    assert feed(7, 50) == feed(7, 50)
    assert feed(7, 50) != feed(8, 50)


def test_the_two_monoliths_agree_with_each_other() -> None:
    swaps = feed(4, 1000)
    states = []
    for run in MONOLITHS.values():
        services = Services.fresh()
        run(services, swaps)
        states.append(services.observable())
    assert states[0] == states[1]
