"""DatabaseLogger: signals and executions into SQLite (WAL) or PostgreSQL (psycopg)."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

from bandit.protocol import ArbitrageSignal, OrderExecution
from mycelium_mono import MessageHandler, handles

__all__ = ["DatabaseConfig", "DatabaseLogger", "fetch_rows"]


@dataclass(frozen=True)
class DatabaseConfig:
    """SQLite at ``sqlite_path`` unless ``postgres_dsn`` is set.

    ``schema`` names the PostgreSQL schema the tables live in (created if missing), so tests
    and parallel runs can keep apart. Rows are committed every ``commit_every`` inserts and on
    :meth:`DatabaseLogger.flush` / :meth:`DatabaseLogger.close`: each commit sends the rows
    since the last one (one ``executemany`` per table) and commits them in one transaction, so
    what a killed process leaves behind is what it committed, as with one INSERT per row.
    """

    sqlite_path: Path | None = None
    postgres_dsn: str | None = None
    schema: str = "bandit"
    commit_every: int = 256

    def __post_init__(self) -> None:
        if self.sqlite_path is None and self.postgres_dsn is None:
            raise ValueError("DatabaseConfig needs sqlite_path or postgres_dsn\n"
                             "help: set [database] sqlite_path or postgres_dsn in the config")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.schema):
            raise ValueError(f"database schema {self.schema!r} must be a lowercase identifier")


# Amounts are U256: too wide for SQLite's INTEGER, so SQLite stores them as decimal text and
# PostgreSQL as NUMERIC(78, 0). fetch_rows() hands both back as the same Python tuples.
_SIGNAL_COLUMNS = ("opportunity_id", "source_seq", "timestamp_ns", "buy_pool", "sell_pool",
                   "token_in", "amount_in", "expected_out", "gas_cost")
_EXECUTION_COLUMNS = ("order_id", "source_seq", "timestamp_ns", "status", "reason", "buy_pool",
                      "sell_pool", "token_in", "amount_in", "amount_out", "gas_cost",
                      "pnl_usd_e6", "tx_hash", "gas_used", "gas_price")
_AMOUNTS = {"amount_in", "expected_out", "gas_cost", "amount_out", "tx_hash", "gas_price"}
_KEYS = {"signals": "opportunity_id", "executions": "order_id"}


def _ddl(table: str, columns: tuple[str, ...], numeric: str) -> str:
    def kind(col: str) -> str:
        if col in _AMOUNTS:
            return numeric
        if col.endswith(("pool", "token_in")):
            return "TEXT"
        return "BIGINT"

    cols = ", ".join(f"{c} {kind(c)} NOT NULL" for c in columns)
    key = _KEYS[table.split(".")[-1]]
    return f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({key}))"


class _Cursor(Protocol):
    def executemany(self, sql: str, params: Any, /) -> Any: ...
    def close(self) -> None: ...


class _Connection(Protocol):
    def execute(self, sql: str, params: Any = ..., /) -> Any: ...
    def cursor(self) -> _Cursor: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


class _Rows:
    """One table's row builder and the rows inserted since the last commit.

    Which columns are addresses (``"0x" + hex``) and which are amounts (``amount(value)``) is
    worked out once here, not per value (issue 16's profile: a getattr, an isinstance and a set
    lookup per column of every row).
    """

    __slots__ = ("_addresses", "_amounts", "_values", "pending", "sql")

    def __init__(self, msg_type: Any, columns: tuple[str, ...], sql: str) -> None:
        self.sql = sql
        self._values = attrgetter(*columns)
        kinds = dict(msg_type.FIELDS)
        self._addresses = tuple(i for i, c in enumerate(columns) if kinds[c].kind == "bytes")
        self._amounts = tuple(i for i, c in enumerate(columns)
                              if c in _AMOUNTS and kinds[c].kind != "bytes")
        self.pending: list[tuple[Any, ...]] = []

    def row(self, msg: Any, amount: type) -> tuple[Any, ...]:
        values = list(self._values(msg))
        for i in self._addresses:
            values[i] = "0x" + values[i].hex()
        for i in self._amounts:
            values[i] = amount(values[i])
        return tuple(values)


class DatabaseLogger(MessageHandler):  # type: ignore[type-arg]  # @handles methods
    """Stores every signal and execution; meant for the background path (it does I/O)."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.rows = 0
        self._pending = 0
        self._conn, self._prefix, self._mark, self._amount = self._connect()
        self._signals = _Rows(ArbitrageSignal, _SIGNAL_COLUMNS, self._insert_sql("signals"))
        self._executions = _Rows(OrderExecution, _EXECUTION_COLUMNS,
                                 self._insert_sql("executions"))

    def _insert_sql(self, table: str) -> str:
        cols = _SIGNAL_COLUMNS if table == "signals" else _EXECUTION_COLUMNS
        return (f"INSERT INTO {self._prefix}{table} ({', '.join(cols)}) VALUES "
                f"({', '.join([self._mark] * len(cols))})")

    def _connect(self) -> tuple[_Connection, str, str, type]:
        cfg = self.config
        if cfg.postgres_dsn is not None:
            import psycopg  # examples/bandit/requirements.txt; only needed with a DSN

            pg = psycopg.connect(cfg.postgres_dsn)
            pg.execute(f"CREATE SCHEMA IF NOT EXISTS {cfg.schema}")
            for table, cols in (("signals", _SIGNAL_COLUMNS), ("executions", _EXECUTION_COLUMNS)):
                pg.execute(_ddl(f"{cfg.schema}.{table}", cols, "NUMERIC(78, 0)"))
            pg.commit()
            return pg, f"{cfg.schema}.", "%s", int
        assert cfg.sqlite_path is not None
        cfg.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the hybrid bus may run this handler on its event loop thread.
        lite = sqlite3.connect(cfg.sqlite_path, check_same_thread=False)
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute("PRAGMA synchronous=NORMAL")
        for table, cols in (("signals", _SIGNAL_COLUMNS), ("executions", _EXECUTION_COLUMNS)):
            lite.execute(_ddl(table, cols, "TEXT"))
        lite.commit()
        return lite, "", "?", str

    @handles(ArbitrageSignal)
    def on_signal(self, sig: ArbitrageSignal) -> None:
        self._insert(self._signals, sig)

    @handles(OrderExecution)
    def on_execution(self, execution: OrderExecution) -> None:
        self._insert(self._executions, execution)

    def _insert(self, table: _Rows, msg: Any) -> None:
        table.pending.append(table.row(msg, self._amount))
        self.rows += 1
        self._pending += 1
        if self._pending >= self.config.commit_every:
            self.flush()

    def flush(self) -> None:
        """Insert and commit the rows handed over so far (one transaction)."""
        for table in (self._signals, self._executions):
            if table.pending:
                rows, table.pending = table.pending, []
                cursor = self._conn.cursor()
                try:
                    cursor.executemany(table.sql, rows)
                finally:
                    cursor.close()
        self._conn.commit()
        self._pending = 0

    def close(self) -> None:
        """Commit and close the connection."""
        self.flush()
        self._conn.close()


def fetch_rows(config: DatabaseConfig) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of both tables, ordered by key, with amounts as ints (for comparisons)."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    tables = (("signals", _SIGNAL_COLUMNS), ("executions", _EXECUTION_COLUMNS))
    if config.postgres_dsn is not None:
        import psycopg

        with psycopg.connect(config.postgres_dsn) as pg:
            for table, cols in tables:
                rows = pg.execute(f"SELECT {', '.join(cols)} FROM {config.schema}.{table} "
                                  f"ORDER BY {_KEYS[table]}").fetchall()
                result[table] = [_normalise(r, cols) for r in rows]
        return result
    assert config.sqlite_path is not None
    lite = sqlite3.connect(config.sqlite_path)
    try:
        for table, cols in tables:
            rows = lite.execute(f"SELECT {', '.join(cols)} FROM {table} "
                                f"ORDER BY {_KEYS[table]}").fetchall()
            result[table] = [_normalise(r, cols) for r in rows]
    finally:
        lite.close()
    return result


def _normalise(row: tuple[Any, ...], cols: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(int(v) if c in _AMOUNTS else v for v, c in zip(row, cols, strict=True))
