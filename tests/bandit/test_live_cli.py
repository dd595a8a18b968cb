"""``python -m bandit live``: starts its own anvil, or follows a node given with ``--rpc``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.bandit.live_support import running_node


def bandit_live(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bandit", "live", "--limit", "60",
                           "--no-metrics-http", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bandit_live_starts_anvil_and_replays_the_market(tmp_path: Path) -> None:
    out = bandit_live("--out", str(tmp_path))
    assert "bandit live monolith:" in out and "on chain: 60 market swaps" in out
    assert (tmp_path / "audit.jsonl").exists()


def test_bandit_live_follows_an_existing_node_given_with_rpc(tmp_path: Path) -> None:
    with running_node() as node:
        out = bandit_live("--rpc", node.ws_url, "--mode", "inproc", "--out", str(tmp_path))
    assert "bandit live inproc:" in out and "on chain: 60 market swaps" in out
