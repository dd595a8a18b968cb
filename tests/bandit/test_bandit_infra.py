"""Audit log policy, PostgreSQL and SQLite logging, Prometheus metrics over HTTP."""

from __future__ import annotations

import sqlite3
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bandit.config import load_config
from bandit.protocol import OrderExecution, OrderStatus, RejectReason
from bandit.runner import run_monolith
from bandit.services import (
    AuditConfig,
    AuditLogger,
    DatabaseConfig,
    MetricsCollector,
    MetricsConfig,
)
from bandit.services.database import fetch_rows

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def execution(order_id: int) -> OrderExecution:
    return OrderExecution(order_id=order_id, source_seq=order_id, timestamp_ns=10 + order_id,
                          status=int(OrderStatus.FILLED), reason=int(RejectReason.NONE),
                          buy_pool=b"\x01" * 20, sell_pool=b"\x02" * 20, token_in=b"\x03" * 20,
                          amount_in=10**24, amount_out=10**24 + 5, gas_cost=1, pnl_usd_e6=-7,
                          tx_hash=0, gas_used=0, gas_price=0)


@pytest.mark.parametrize("policy", ["always", "every", "never"])
def test_audit_logger_appends_one_sorted_json_line_per_execution(tmp_path: Path,
                                                                 policy: str) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"earlier":"run"}\n')
    audit = AuditLogger(AuditConfig(path, fsync=policy, fsync_every=2))  # type: ignore[arg-type]
    for i in (1, 2, 3):
        audit.handle(execution(i))
    # Handed to the OS before handle() returned, whatever the fsync policy.
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and lines[0] == '{"earlier":"run"}'
    assert lines[1].startswith('{"amount_in":1000000000000000000000000,"amount_out":')
    assert '"status":"FILLED"' in lines[1] and '"pnl_usd_e6":-7' in lines[1]
    audit.close()


def test_audit_config_refuses_an_unknown_fsync_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="help: set \\[audit\\] fsync"):
        AuditConfig(tmp_path / "a.jsonl", fsync="sometimes")  # type: ignore[arg-type]


def test_sqlite_database_is_in_wal_mode(tmp_path: Path) -> None:
    from bandit.services import DatabaseLogger

    db = DatabaseLogger(DatabaseConfig(sqlite_path=tmp_path / "b.db"))
    db.on_execution(execution(1))
    db.close()
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = fetch_rows(DatabaseConfig(sqlite_path=tmp_path / "b.db"))
    assert rows["executions"][0][8:10] == (10**24, 10**24 + 5)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    import psycopg

    schema = f"bandit_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg.connect(PG_DSN, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_DSN}: {exc}\n"
                    "help: start it (e.g. `service postgresql start`) with trust auth for "
                    "user postgres and a database named test")
    conn.close()
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.network
def test_postgres_rows_equal_sqlite_rows_for_the_same_replay(tmp_path: Path,
                                                             pg_schema: str) -> None:
    overrides = {"adapter": {"limit": 2_000}, "metrics": {"http_port": None}}
    lite = load_config(output_dir=tmp_path / "lite", overrides=overrides)
    run_monolith(lite)
    pg = load_config(output_dir=tmp_path / "pg", overrides={
        **overrides, "database": {"postgres_dsn": PG_DSN, "schema": pg_schema}})
    summary = run_monolith(pg)
    expected = fetch_rows(lite.database)
    assert len(expected["executions"]) == summary.filled + summary.rejected > 0
    assert fetch_rows(pg.database) == expected


def test_metrics_are_served_in_prometheus_text_format() -> None:
    metrics = MetricsCollector(MetricsConfig(http_port=0))
    metrics.on_execution(execution(1))
    metrics.observe("dispatch", 3e-6)
    port = metrics.serve()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        metrics.close()
    assert "bandit_orders_filled_total 1" in body
    assert 'bandit_latency_seconds_bucket{stage="dispatch",le="5e-06"} 1' in body
    assert 'bandit_latency_seconds_count{stage="dispatch"} 1' in body


def test_config_rejects_unknown_keys_with_the_known_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk]\nmax_drawdown = 5\n")
    with pytest.raises(ValueError, match="unknown keys \\['max_drawdown'\\]"):
        load_config(bad, output_dir=tmp_path)


def test_cli_prints_a_summary_and_writes_outputs_where_told(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bandit", "monolith", "--limit", "1500", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first, signals, pnl, latency, *_ = proc.stdout.splitlines()
    assert first.startswith("bandit monolith: 1500 swaps in ")
    assert signals.startswith("  signals ") and "orders filled" in signals and "halts" in signals
    assert pnl.startswith("  paper PnL ")
    assert " p50 " in latency and " p99 " in latency
    assert (tmp_path / "audit.jsonl").stat().st_size > 0
    assert (tmp_path / "bandit.db").exists()
