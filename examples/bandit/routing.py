"""Bandit's routing tables: which service receives which message, in monolith and hybrid mode.

The chain is linear — each message type has exactly one producer — and the audit logger logs
one type, so it records in the same order under the monolith's depth-first calls as under a
bus's FIFO delivery. That is what makes the audit log byte-identical in every mode.
"""

from __future__ import annotations

# The routing classes name these on the left; ruff cannot see that use (F401).
from bandit.protocol import ArbitrageSignal, OrderExecution, OrderRequest, V2Swap  # noqa: F401
from bandit.services import (
    ArbitrageDetector,
    AuditLogger,
    DatabaseLogger,
    ExecutionService,
    MetricsCollector,
    RiskManager,
)
from mycelium_mono import route, routing_config

__all__ = ["HybridBus", "MonolithBus"]


@routing_config
class MonolithBus:
    """Everything in one process, as straight-line calls."""

    V2Swap = [ArbitrageDetector, MetricsCollector]
    ArbitrageSignal = [RiskManager, DatabaseLogger, MetricsCollector]
    OrderRequest = [ExecutionService]
    OrderExecution = [AuditLogger, DatabaseLogger, MetricsCollector]


@routing_config
class HybridBus:
    """The critical path as straight-line calls; database writes and metrics in the background."""

    V2Swap = route(sync=[ArbitrageDetector], background=[MetricsCollector])
    ArbitrageSignal = route(sync=[RiskManager], background=[DatabaseLogger, MetricsCollector])
    OrderRequest = [ExecutionService]
    OrderExecution = route(sync=[AuditLogger], background=[DatabaseLogger, MetricsCollector])
