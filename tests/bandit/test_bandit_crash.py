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
