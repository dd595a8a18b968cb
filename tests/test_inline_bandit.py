"""Bandit's real handlers, inlined and called, over the bundled feed: identical results (issue 7).

The two routing classes here repeat :class:`bandit.routing.MonolithBus`'s table with
``inline=False`` and ``inline=True`` (built by the decorator at run time: this module is not
under the hook). Each replays the whole deterministic feed through a fresh pipeline; the audit
trail must be byte-identical and every service must end in the same state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bandit.config import load_config

# The routing classes name these message classes on the left of each line.
from bandit.protocol import ArbitrageSignal, OrderExecution, OrderRequest, V2Swap  # noqa: F401
from bandit.runner import build_pipeline, fresh_outputs
from bandit.services import (
    ArbitrageDetector,
    AuditLogger,
    DatabaseLogger,
    ExecutionService,
    MetricsCollector,
    RiskManager,
)

from mycelium_mono import routing_config


@routing_config(inline=False)
class CalledBandit:
    V2Swap = [ArbitrageDetector, MetricsCollector]
    ArbitrageSignal = [RiskManager, DatabaseLogger, MetricsCollector]
    OrderRequest = [ExecutionService]
    OrderExecution = [AuditLogger, DatabaseLogger, MetricsCollector]


@routing_config(inline=True)
class InlinedBandit:
    V2Swap = [ArbitrageDetector, MetricsCollector]
    ArbitrageSignal = [RiskManager, DatabaseLogger, MetricsCollector]
    OrderRequest = [ExecutionService]
    OrderExecution = [AuditLogger, DatabaseLogger, MetricsCollector]


def run(bus_cls: Any, out: Path) -> dict[str, Any]:
    """Replay the bundled feed through ``bus_cls``; what every service ends up holding."""
    cfg = load_config(output_dir=out, overrides={"run": {"progress": False}})
    fresh_outputs(cfg)
    p = build_pipeline(cfg)
    bus = bus_cls(**p.bus_services())
    try:
        for swap in p.adapter.swaps():
            bus.emit_v2_swap(swap)
        inline_ok = getattr(bus, "_mycelium_inline_ok", False)
    finally:
        p.close()
    return {
        "inline_ok": inline_ok,
        "detector": (p.detector.swaps_seen, p.detector.signals_emitted),
        "risk": p.risk.state(),
        "execution": (p.execution.filled, p.execution.rejected, p.execution.pnl_usd_e6),
        "metrics": (dict(p.metrics.counters), p.metrics.pnl_usd_e6),
        "audit": (p.audit.records, cfg.audit.path.read_bytes()),
    }


def test_every_bandit_handler_is_inlined() -> None:
    inlined = {(attr, method) for attr, method, *_ in InlinedBandit.__mycelium_inlined__}
    assert inlined == {
        ("arbitrage_detector", "handle"), ("metrics_collector", "on_swap"),
        ("risk_manager", "handle"), ("database_logger", "on_signal"),
        ("metrics_collector", "on_signal"), ("execution_service", "handle"),
        ("audit_logger", "handle"), ("database_logger", "on_execution"),
        ("metrics_collector", "on_execution"),
    }


def test_bandit_feed_gives_identical_results_inlined_and_called(tmp_path: Path) -> None:
    called = run(CalledBandit, tmp_path / "called")
    inlined = run(InlinedBandit, tmp_path / "inlined")
    assert inlined.pop("inline_ok") is True
    assert called.pop("inline_ok") is False
    assert inlined == called
    swaps, signals = called["detector"]
    assert swaps > 0 and signals > 0 and called["audit"][0] > 0  # the feed exercised the chain
