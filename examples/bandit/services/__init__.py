"""Bandit's services: plain handler classes that run unchanged in every deployment mode."""

from bandit.services.adapter import AdapterConfig, PolygonAdapter
from bandit.services.audit import AuditConfig, AuditLogger
from bandit.services.database import DatabaseConfig, DatabaseLogger
from bandit.services.detector import ArbitrageDetector, DetectorConfig
from bandit.services.execution import ExecutionConfig, ExecutionService
from bandit.services.metrics import MetricsCollector, MetricsConfig
from bandit.services.risk import RiskConfig, RiskManager, RiskState

__all__ = [
    "AdapterConfig",
    "ArbitrageDetector",
    "AuditConfig",
    "AuditLogger",
    "DatabaseConfig",
    "DatabaseLogger",
    "DetectorConfig",
    "ExecutionConfig",
    "ExecutionService",
    "MetricsCollector",
    "MetricsConfig",
    "PolygonAdapter",
    "RiskConfig",
    "RiskManager",
    "RiskState",
]
