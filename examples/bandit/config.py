"""Reading Bandit's TOML configuration into the services' frozen config dataclasses."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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

__all__ = ["BanditConfig", "PriceConfig", "default_config_path", "load_config"]

T = TypeVar("T")


@dataclass(frozen=True)
class PriceConfig:
    """Live mode's reference prices (``[prices]``), by the tokens' on-chain symbols.

    ``usd_e6``: micro-USD per whole token; ``None`` (the key absent) means the bundled tokens'
    prices (``bandit.tokens.TOKENS``). ``reference_pools``: a token priced at start by a pool
    of the deployment against a token ``usd_e6`` prices (the numeraire), from that pool's
    ``getReserves``; the pool is ``"SYMBOL/SYMBOL"`` (the first watched pool of that token
    pair) or a ``0x`` pair address. A token priced neither way is skipped, counted.
    """

    usd_e6: Mapping[str, int] | None = None
    reference_pools: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for symbol, price in (self.usd_e6 or {}).items():
            if type(price) is not int or price <= 0:
                raise ValueError(f"[prices] usd_e6.{symbol} = {price!r} is not a positive "
                                 "integer\nhelp: micro-USD per whole token, e.g. 1_000_000 = "
                                 "1 USD")
        for symbol, pool in self.reference_pools.items():
            if not isinstance(pool, str) or not pool:
                raise ValueError(f"[prices] reference_pools.{symbol} = {pool!r} is not a pool"
                                 "\nhelp: \"SYMBOL/NUMERAIRE\" (e.g. \"LINK/WETH\") or a "
                                 "0x pair address")
            if self.usd_e6 is not None and symbol in self.usd_e6:
                raise ValueError(f"[prices] {symbol} is priced twice, in usd_e6 and in "
                                 "reference_pools\nhelp: keep one of the two")


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
    prices: PriceConfig = field(default_factory=PriceConfig)


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
        prices=_section(raw, "prices", PriceConfig),
    )
