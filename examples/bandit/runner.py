"""Running the pipeline in each deployment mode, with the same service instances' code.

- ``monolith``: :class:`bandit.routing.MonolithBus`, straight-line calls, no event loop.
- ``inproc``: a :class:`MessageBus` with every service spawned on a ``ServiceRuntime``.
- ``hybrid``: :class:`bandit.routing.HybridBus` — the critical path inline, database and
  metrics on the background backlog.
- ``distributed``: two OS processes over ZeroMQ — ``adapters`` (the feed) and
  ``strategies`` (everything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from bandit.config import BanditConfig
from bandit.protocol import V2Swap
from bandit.services import (
    ArbitrageDetector,
    AuditLogger,
    DatabaseLogger,
    ExecutionService,
    MetricsCollector,
    PolygonAdapter,
    RiskManager,
)
from bandit.tokens import TOKENS, Token
from mycelium_mono import LatencyTracker, MessageBus, ServiceRuntime

__all__ = ["MODES", "Pipeline", "Summary", "build_pipeline", "run_mode"]

MODES = ("monolith", "inproc", "hybrid", "distributed")


@dataclass
class Pipeline:
    """One instance of every service, built from the configuration."""

    adapter: PolygonAdapter
    detector: ArbitrageDetector
    risk: RiskManager
    execution: ExecutionService
    audit: AuditLogger
    database: DatabaseLogger
    metrics: MetricsCollector

    def handlers(self) -> list[object]:
        """The services that receive messages, downstream first: each one's subscriptions
        exist before anything upstream can publish to it."""
        return [self.audit, self.database, self.metrics, self.execution, self.risk,
                self.detector]

    def bus_services(self) -> dict[str, object]:
        """The keyword arguments of every routing class of ``bandit.routing`` (and of any bus
        routed with the same handler classes): one per handler class, snake_case."""
        return dict(arbitrage_detector=self.detector, risk_manager=self.risk,
                    execution_service=self.execution, audit_logger=self.audit,
                    database_logger=self.database, metrics_collector=self.metrics)

    def close(self) -> None:
        """Flush and close files, connections and the metrics endpoint."""
        self.execution.close()
        self.audit.close()
        self.database.close()
        self.metrics.close()


def fresh_outputs(cfg: BanditConfig) -> None:
    """Start a run with an empty audit log and database file (each run is one trail)."""
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    paths = [cfg.audit.path]
    if cfg.execution.report_path is not None:
        paths.append(cfg.execution.report_path)
    db = cfg.database.sqlite_path
    if db is not None and cfg.database.postgres_dsn is None:
        paths += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    for path in paths:
        path.unlink(missing_ok=True)


def build_pipeline(cfg: BanditConfig, *, tokens: Iterable[Token] = TOKENS) -> Pipeline:
    """Every service, configured; the detector prices in ``tokens`` (live mode: the chain's,
    see ``bandit.live.LiveSetup.tokens``)."""
    p = Pipeline(
        adapter=PolygonAdapter(cfg.adapter),
        detector=ArbitrageDetector(cfg.detector, tokens=tokens),
        risk=RiskManager(cfg.risk),
        execution=ExecutionService(cfg.execution),
        audit=AuditLogger(cfg.audit),
        database=DatabaseLogger(cfg.database),
        metrics=MetricsCollector(cfg.metrics),
    )
    if cfg.execution.report_path is not None:
        # An order is reported once its audit line is written, whatever the mode's delivery.
        p.execution.report_when_audited(p.audit)
    return p


@dataclass(frozen=True)
class Summary:
    """What a run did; printed at the end, compared across modes by the tests."""

    mode: str
    swaps: int
    signals: int
    filled: int
    rejected: int
    pnl_usd_e6: int
    halts: int
    latency_what: str
    latency_p50_ns: int | None
    latency_p99_ns: int | None
    elapsed_s: float

    def render(self) -> str:
        rate = self.swaps / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"bandit {self.mode}: {self.swaps} swaps in {self.elapsed_s:.2f} s "
            f"({rate:,.0f} swaps/s)",
            f"  signals {self.signals}, orders filled {self.filled}, rejected {self.rejected}, "
            f"risk halts {self.halts}",
            f"  {'on-chain' if self.mode.startswith('live') else 'paper'} PnL "
            f"{self.pnl_usd_e6 / 1e6:+,.2f} USD",
        ]
        if self.latency_p50_ns is not None and self.latency_p99_ns is not None:
            lines.append(f"  {self.latency_what}: p50 {self.latency_p50_ns / 1e3:.1f} µs, "
                         f"p99 {self.latency_p99_ns / 1e3:.1f} µs")
        else:
            lines.append(f"  {self.latency_what}")
        return "\n".join(lines)


def _summary(mode: str, p: Pipeline, tracker: Any, what: str, elapsed: float) -> Summary:
    p50 = p99 = None
    report = None if tracker is None else tracker.report()  # once: it walks the histogram
    if report is not None and report.count:
        p50, p99 = int(report.p50), int(report.p99)
    state = p.risk.state()
    return Summary(mode, p.detector.swaps_seen, p.detector.signals_emitted, p.execution.filled,
                   p.execution.rejected, p.execution.pnl_usd_e6, state.halts, what,
                   p50, p99, elapsed)


def _serve_metrics(metrics: MetricsCollector) -> None:
    """Start /metrics if configured; a taken port is a warning, not a failed run."""
    if metrics.config.http_port is None:
        return
    try:
        port = metrics.serve()
    except OSError as exc:
        print(f"bandit: metrics endpoint not started on {metrics.config.http_host}:"
              f"{metrics.config.http_port}: {exc}\n"
              "help: pick another port with --metrics-port, or --no-metrics-http",
              file=sys.stderr)
        return
    print(f"bandit: Prometheus metrics on http://{metrics.config.http_host}:{port}/metrics",
          file=sys.stderr)


def _progress(swaps: Iterable[V2Swap], cfg: BanditConfig, total: int | None) -> Iterable[V2Swap]:
    if not (cfg.progress and sys.stderr.isatty()):
        return swaps
    from tqdm import tqdm  # examples/bandit/requirements.txt; interactive runs only

    return tqdm(swaps, total=total, unit="swap", desc="replay", leave=False)


def _replay_timed(swaps: Iterable[V2Swap], emit: Any, tracker: Any,
                  metrics: MetricsCollector) -> None:
    """``emit`` every swap, recording each call's time as that swap's dispatch.

    A plain loop with everything bound once (it used to be a generator timing from yield to
    resume, which also timed its own resumption, and looked the histogram up per swap).
    """
    clock, record = time.perf_counter_ns, tracker.record
    observe = metrics.histogram("dispatch").observe
    for swap in swaps:
        start = clock()
        emit(swap)
        took = clock() - start
        record(took)
        observe(took / 1e9)


# --------------------------------------------------------------------------- monolith


def run_monolith(cfg: BanditConfig) -> Summary:
    """Replay through the generated MonolithBus (live sources run until Ctrl-C)."""
    from bandit.routing import MonolithBus

    fresh_outputs(cfg)
    p = build_pipeline(cfg)
    bus = MonolithBus(**p.bus_services())
    tracker = LatencyTracker()
    start = time.perf_counter()
    try:
        if cfg.adapter.source == "replay":
            swaps = _progress(p.adapter.swaps(), cfg, p.adapter.expected_swaps())
            _replay_timed(swaps, bus.emit_v2_swap, tracker, p.metrics)
        else:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_live_monolith(p, bus, tracker))
    finally:
        p.close()
    return _summary("monolith", p, tracker, "per-swap dispatch through the whole chain",
                    time.perf_counter() - start)


async def _live_monolith(p: Pipeline, bus: Any, tracker: Any) -> None:
    _serve_metrics(p.metrics)
    clock = time.perf_counter_ns
    async for swap in p.adapter.stream():
        start = clock()
        bus.emit_v2_swap(swap)
        tracker.record(clock() - start)


# --------------------------------------------------------------------------- hybrid


async def run_hybrid(cfg: BanditConfig) -> Summary:
    """Critical path inline on HybridBus; database and metrics on the background backlog."""
    from bandit.routing import HybridBus

    fresh_outputs(cfg)
    p = build_pipeline(cfg)
    bus = HybridBus(**p.bus_services())
    tracker = LatencyTracker()
    start = time.perf_counter()
    try:
        emit, record = bus.emit_v2_swap, tracker.record
        observe = p.metrics.histogram("dispatch").observe
        clock = time.perf_counter_ns
        n = 0
        async for swap in _hybrid_source(p, cfg):
            t0 = clock()
            emit(swap)
            took = clock() - t0
            record(took)
            observe(took / 1e9)
            n += 1
            if n % 256 == 0:
                # Let the backlog's worker run; back-pressure if it fell behind.
                await bus.background.wait_for_space()
                await asyncio.sleep(0)
        await bus.background.drain()
    finally:
        p.close()
    return _summary("hybrid", p, tracker, "per-swap sync dispatch (background excluded)",
                    time.perf_counter() - start)


async def _hybrid_source(p: Pipeline, cfg: BanditConfig) -> AsyncIterator[V2Swap]:
    if cfg.adapter.source != "replay":
        async for swap in p.adapter.stream():
            yield swap
        return
    for swap in _progress(p.adapter.swaps(), cfg, p.adapter.expected_swaps()):
        yield swap


# --------------------------------------------------------------------------- in-process bus


class _TimedAdapter:
    """The adapter's ``run`` with each publish timed (what ``ctx.emit`` costs per swap)."""

    def __init__(self, adapter: PolygonAdapter, tracker: Any) -> None:
        self.adapter, self.tracker = adapter, tracker

    async def run(self, ctx: Any) -> None:
        clock = time.perf_counter_ns
        emit = ctx.emit
        async for swap in self.adapter.stream():
            start = clock()
            await emit(swap)
            self.tracker.record(clock() - start)


async def run_inproc(cfg: BanditConfig) -> Summary:
    """Every service on one in-process MessageBus, each consuming its own queue."""
    fresh_outputs(cfg)
    p = build_pipeline(cfg)
    tracker = LatencyTracker()
    start = time.perf_counter()
    runtime = ServiceRuntime(MessageBus())
    try:
        _serve_metrics(p.metrics)
        for svc in p.handlers():
            await runtime.spawn_service(svc)
        source = await runtime.spawn_service(_TimedAdapter(p.adapter, tracker),
                                             name="PolygonAdapter")
        assert source.task is not None
        await source.task
        if source.failure is not None:
            raise source.failure
    finally:
        # Waits until every queued message is handled (quiescence), then stops the services.
        await runtime.shutdown()
        p.close()
    return _summary("inproc", p, tracker, "per-swap publish on the bus",
                    time.perf_counter() - start)


# --------------------------------------------------------------------------- distributed


async def run_adapters_node(cfg: BanditConfig, *, subscribers: int = 1,
                            wait_s: float = 60.0) -> tuple[int, Any]:
    """The feed's process: publish every swap to the strategies node over ZeroMQ.

    Returns the number of swaps sent and the publish latency report.
    """
    adapter = PolygonAdapter(cfg.adapter)
    tracker = LatencyTracker()
    # A long linger: the replay is published faster than the peer consumes it, and what is
    # still queued when we close must reach it.
    bus = MessageBus.with_tcp(cfg.adapters_address, linger_ms=60_000)
    runtime = ServiceRuntime(bus)
    try:
        await bus.start()
        await bus.wait_for_subscribers(subscribers, V2Swap, timeout=wait_s)
        running = await runtime.spawn_service(_TimedAdapter(adapter, tracker),
                                              name="PolygonAdapter")
        assert running.task is not None
        await running.task
        if running.failure is not None:
            raise running.failure
    finally:
        await runtime.shutdown(timeout=wait_s)
    return adapter.emitted, tracker.report()


async def run_strategies_node(cfg: BanditConfig, *, wait_s: float = 300.0) -> Summary:
    """Detector, risk, execution, audit, database and metrics, fed from the adapters node."""
    fresh_outputs(cfg)
    p = build_pipeline(cfg)
    expected = p.adapter.expected_swaps()
    runtime = ServiceRuntime(MessageBus.with_tcp(cfg.strategies_address))
    start = time.perf_counter()
    try:
        _serve_metrics(p.metrics)
        for svc in p.handlers():
            await runtime.spawn_service(svc)
        await runtime.bus.connect_to(cfg.adapters_address)
        await runtime.bus.ready()
        if expected is None:
            await runtime.wait_for_shutdown()
        else:
            await _wait_for_swaps(p.detector, expected, wait_s)
    finally:
        await runtime.shutdown()
        p.close()
    return _summary("distributed", p, None,
                    "swaps arrive over ZeroMQ: the adapters node reports publish latency",
                    time.perf_counter() - start)


async def _wait_for_swaps(detector: ArbitrageDetector, expected: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while detector.swaps_seen < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"strategies node saw {detector.swaps_seen} of {expected} swaps in {wait_s}s\n"
                "help: is `python -m bandit distributed --node adapters` running with the "
                "same config?"
            )
        await asyncio.sleep(0.02)


def run_mode(mode: str, cfg: BanditConfig) -> Summary:
    """Run one single-process mode to completion."""
    if mode == "monolith":
        return run_monolith(cfg)
    if mode == "inproc":
        return asyncio.run(run_inproc(cfg))
    if mode == "hybrid":
        return asyncio.run(run_hybrid(cfg))
    raise ValueError(f"unknown mode {mode!r}\nhelp: one of {', '.join(MODES)}")
