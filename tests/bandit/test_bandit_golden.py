"""The golden test: one feed, four deployments, byte-identical audit logs and equal rows.

Monolith, in-process and hybrid run in this process; distributed runs as two OS processes
(``python -m bandit distributed --node all``) talking ZeroMQ over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bandit.config import BanditConfig, load_config
from bandit.runner import Summary, run_hybrid, run_inproc, run_monolith
from bandit.services.database import fetch_rows

# A slice of the bundled feed with a few hundred orders, fills and rejections, and one halt.
LIMIT = 4_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(out: Path, **metrics: object) -> BanditConfig:
    return load_config(
        output_dir=out,
        overrides={
            "adapter": {"limit": LIMIT},
            "metrics": {"http_port": metrics.get("port")},
        },
    )


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[BanditConfig, Summary | None]]:
    root = tmp_path_factory.mktemp("golden")
    results: dict[str, tuple[BanditConfig, Summary | None]] = {}
    cfg = config(root / "monolith")
    results["monolith"] = (cfg, run_monolith(cfg))
    cfg = config(root / "inproc", port=0)
    results["inproc"] = (cfg, asyncio.run(run_inproc(cfg)))
    cfg = config(root / "hybrid")
    results["hybrid"] = (cfg, asyncio.run(run_hybrid(cfg)))
    out = root / "distributed"
    adapters, strategies = free_port(), free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bandit",
            "distributed",
            "--node",
            "all",
            "--limit",
            str(LIMIT),
            "--out",
            str(out),
            "--adapters",
            f"127.0.0.1:{adapters}",
            "--strategies",
            f"127.0.0.1:{strategies}",
            "--no-metrics-http",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"distributed run failed:\n{proc.stdout}\n{proc.stderr}"
    assert f"bandit distributed: {LIMIT} swaps" in proc.stdout, proc.stdout
    results["distributed"] = (config(out), None)
    return results


def test_the_slice_exercises_fills_rejections_and_a_halt(runs: dict) -> None:
    summary = runs["monolith"][1]
    assert summary.swaps == LIMIT
    assert summary.filled >= 100 and summary.rejected >= 10 and summary.halts >= 1


@pytest.mark.parametrize("mode", ["inproc", "hybrid", "distributed"])
def test_audit_log_is_byte_identical_to_monolith(runs: dict, mode: str) -> None:
    golden = runs["monolith"][0].audit.path.read_bytes()
    assert golden.count(b"\n") == runs["monolith"][1].filled + runs["monolith"][1].rejected
    assert runs[mode][0].audit.path.read_bytes() == golden


@pytest.mark.parametrize("mode", ["inproc", "hybrid", "distributed"])
def test_database_rows_are_identical_to_monolith(runs: dict, mode: str) -> None:
    golden = fetch_rows(runs["monolith"][0].database)
    assert len(golden["executions"]) == runs["monolith"][1].filled + runs["monolith"][1].rejected
    assert len(golden["signals"]) == runs["monolith"][1].signals
    assert fetch_rows(runs[mode][0].database) == golden


@pytest.mark.parametrize("mode", ["inproc", "hybrid"])
def test_summaries_agree_across_single_process_modes(runs: dict, mode: str) -> None:
    a, b = runs["monolith"][1], runs[mode][1]
    assert (a.swaps, a.signals, a.filled, a.rejected, a.pnl_usd_e6, a.halts) == (
        b.swaps,
        b.signals,
        b.filled,
        b.rejected,
        b.pnl_usd_e6,
        b.halts,
    )


def test_audit_records_carry_feed_time_not_wall_clock(runs: dict) -> None:
    lines = runs["monolith"][0].audit.path.read_text().splitlines()
    stamps = [json.loads(line)["timestamp_ns"] for line in lines]
    assert stamps == sorted(stamps)
    assert (
        stamps[0] >= 1_700_000_000_000_000_000 and stamps[-1] < 1_700_000_000_000_000_000 + 10**13
    )
