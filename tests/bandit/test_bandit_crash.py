"""kill -9 during a replay: every order the execution service reported is in the audit log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def reported(path: Path) -> list[int]:
    if not path.exists():
        return []
    # The last line may be torn by the kill: only complete lines count as reported.
    text = path.read_text()
    return [int(x) for x in text.split("\n")[:-1]]


def test_every_reported_order_survives_kill_9(tmp_path: Path) -> None:
    report = tmp_path / "reported.txt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bandit",
            "monolith",
            "--out",
            str(tmp_path),
            "--fsync",
            "always",
            "--report-file",
            report.name,
            "--no-metrics-http",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(reported(report)) < 100:
            assert proc.poll() is None, f"replay ended before the kill: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no orders reported within 60 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ids = reported(report)
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    filled = {r["order_id"] for r in audit if r["status"] == "FILLED"}
    assert len(ids) >= 100
    assert set(ids) <= filled
    # The run was cut short: far fewer than the 1 159 fills of the whole feed.
    assert len(filled) < 1_159


# The child inserts signals one by one and, each time a commit has returned, appends how many
# rows it has committed to the report file: what the database acknowledged.
_DB_CHILD = """
import sys
from pathlib import Path
from bandit.protocol import ArbitrageSignal
from bandit.services import DatabaseLogger
from bandit.services.database import DatabaseConfig

db = DatabaseLogger(DatabaseConfig(sqlite_path=Path(sys.argv[1]), commit_every=7))
report = open(sys.argv[2], "a")
n = 0
while True:
    n += 1
    db.on_signal(ArbitrageSignal(
        opportunity_id=n, source_seq=n, timestamp_ns=n, deadline_block=1,
        buy_pool=b"\\x01" * 20, sell_pool=b"\\x02" * 20, token_in=b"\\x03" * 20,
        token_mid=b"\\x04" * 20, amount_in=10**20 + n, expected_mid=1, expected_out=2,
        gas_cost=3, buy_reserve_in=4, buy_reserve_out=5, sell_reserve_in=6,
        sell_reserve_out=7))
    if db._pending == 0:
        report.write(f"{n}\\n")
        report.flush()
"""


def test_every_committed_database_row_survives_kill_9(tmp_path: Path) -> None:
    from bandit.services.database import DatabaseConfig, fetch_rows

    db, report = tmp_path / "b.db", tmp_path / "committed.txt"
    proc = subprocess.Popen([sys.executable, "-c", _DB_CHILD, str(db), str(report)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(reported(report)) < 50:
            assert proc.poll() is None, f"the child ended: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no commits reported within 60 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    committed = reported(report)[-1]
    rows = fetch_rows(DatabaseConfig(sqlite_path=db))["signals"]
    # Every acknowledged row is there, in full, and nothing but whole commits of 7.
    assert len(rows) >= committed and len(rows) % 7 == 0
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert [r[6] for r in rows] == [10**20 + i for i in range(1, len(rows) + 1)]
