"""SIGTERM to a process running a ServiceRuntime: exit 0, nothing queued lost under "block"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("runtime_sigterm_child.py")


@pytest.mark.multiprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_every_queued_message_and_exits_cleanly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "consumed.txt"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.strip() == "READY", f"child did not start: {first!r} {child.stderr!r}"
        child.send_signal(sig)
        rest, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    summary = json.loads(rest.strip().splitlines()[-1])
    assert summary["queued_at_shutdown"] > 0, "nothing was queued: the test proved nothing"
    assert summary["dropped"] == 0
    consumed = [int(line) for line in out.read_text().split()]
    assert consumed == list(range(summary["produced"]))
    assert summary["consumed"] == summary["produced"]
