"""Reading Bandit's TOML configuration into the services' frozen config dataclasses."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from bandit.services import (
    AdapterConfig,
    AuditConfig,
    DatabaseConfig,
    DetectorConfig,
    ExecutionConfig,
    MetricsConfig,
    RiskConfig,
)

__all__ = ["BanditConfig", "default_config_path", "load_config"]

T = TypeVar("T")


@dataclass(frozen=True)
class BanditConfig:
    """Everything one run needs, resolved (paths absolute under ``output_dir``)."""

    output_dir: Path
    progress: bool
    adapter: AdapterConfig
    detector: DetectorConfig
    execution: ExecutionConfig
    risk: RiskConfig
    audit: AuditConfig
    database: DatabaseConfig
    metrics: MetricsConfig
    adapters_address: str
    strategies_address: str
    source: Path | None = None


def default_config_path() -> Path:
    """The bundled ``config/bandit.toml``."""
    return Path(str(resources.files("bandit") / "config" / "bandit.toml"))


def _section(raw: dict[str, Any], name: str, cls: type[T], **extra: Any) -> T:
    table = dict(raw.get(name, {}))
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - known - set(extra))
    if unknown:
        raise ValueError(
            f"[{name}] has unknown keys {unknown}\nhelp: known keys are {sorted(known)}"
        )
    table.update(extra)
    return cls(**{k: v for k, v in table.items() if k in known})


def load_config(path: Path | None = None, *, output_dir: Path | None = None,
                overrides: dict[str, dict[str, Any]] | None = None) -> BanditConfig:
    """Read ``path`` (the bundled config by default); ``overrides`` replace keys per section."""
    source = path or default_config_path()
    with open(source, "rb") as fh:
        raw = tomllib.load(fh)
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    run = raw.get("run", {})
    default_out = Path(str(resources.files("bandit"))) / "out"
    out = Path(output_dir or run.get("output_dir") or default_out).resolve()
    adapter = dict(raw.get("adapter", {}))
    if "feed_path" in adapter:
        adapter["feed_path"] = Path(adapter["feed_path"])
    adapter["pools"] = tuple(adapter.get("pools", ()))
    raw["adapter"] = adapter
    audit = dict(raw.get("audit", {}))
    audit_file = out / audit.pop("file", "audit.jsonl")
    raw["audit"] = audit
    database = dict(raw.get("database", {}))
    sqlite_file = database.pop("sqlite_file", "bandit.db")
    raw["database"] = database
    execution = dict(raw.get("execution", {}))
    report = execution.pop("report_file", "")
    raw["execution"] = execution
    dist = raw.get("distributed", {})
    return BanditConfig(
        output_dir=out,
        progress=bool(run.get("progress", True)),
        adapter=_section(raw, "adapter", AdapterConfig),
        detector=_section(raw, "detector", DetectorConfig),
        execution=_section(raw, "execution", ExecutionConfig,
                           report_path=(out / report) if report else None),
        risk=_section(raw, "risk", RiskConfig),
        audit=_section(raw, "audit", AuditConfig, path=audit_file),
        database=_section(raw, "database", DatabaseConfig,
                          sqlite_path=None if database.get("postgres_dsn") else out / sqlite_file),
        metrics=_section(raw, "metrics", MetricsConfig),
        adapters_address=dist.get("adapters", "127.0.0.1:9310"),
        strategies_address=dist.get("strategies", "127.0.0.1:9311"),
        source=source,
    )
