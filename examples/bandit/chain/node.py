"""Start a local anvil node on 127.0.0.1 on a free port; always stop it.

``with anvil_node() as node: ...`` — the process is killed in ``finally`` whatever happens
in the block, so a failing test or a Ctrl-C never leaves a node behind.

The node runs with automine off (``--no-mining``): the market mines its bursts with
``evm_mine`` (anvil's automine with fire-and-forget sends can stall, foundry#10122), FIFO
transaction order and a zero base fee, so the same transactions give the same chain.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHAIN_DIR", "Node", "NodeError", "anvil_binary", "anvil_node"]

CHAIN_DIR = Path(__file__).resolve().parent
ANVIL = CHAIN_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
INSTALL_HELP = ("help: run `make venv` in the checkout (it runs `npm ci` in "
                "examples/bandit/chain), or `cd examples/bandit/chain && npm ci`")
_LISTENING = re.compile(r"Listening on (\d+\.\d+\.\d+\.\d+):(\d+)")


class NodeError(RuntimeError):
    """anvil is not installed, or did not start."""


@dataclass(frozen=True)
class Node:
    """A running node: one port serves HTTP and WebSocket JSON-RPC."""

    host: str
    port: int
    pid: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


def anvil_binary() -> Path:
    """The anvil installed by ``npm ci``; :class:`NodeError` saying how to install it."""
    if not ANVIL.is_file():
        raise NodeError(f"anvil is not installed: {ANVIL} does not exist\n{INSTALL_HELP}")
    return ANVIL


def _wait_listening(proc: subprocess.Popen[str], timeout: float) -> tuple[str, int]:
    """Read anvil's banner until it says where it listens."""
    assert proc.stdout is not None
    lines: list[str] = []
    found: list[tuple[str, int]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # keeps draining after the banner: a full pipe would block anvil
            if not found:
                lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    found.append((match.group(1), int(match.group(2))))

    threading.Thread(target=read, name="anvil-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "".join(lines[-15:])
            raise NodeError(f"anvil did not start (exit code {proc.poll()}):\n{tail}"
                            f"\n{INSTALL_HELP}")
        time.sleep(0.005)
    return found[0]


@contextmanager
def anvil_node(*, timestamp_s: int = 1_700_000_000, accounts: int = 3,
               start_timeout: float = 20.0) -> Iterator[Node]:
    """A fresh anvil on a free port (``--port 0``), killed when the block exits."""
    argv = [str(anvil_binary()), "--host", "127.0.0.1", "--port", "0", "--no-mining",
            "--order", "fifo", "--base-fee", "0", "--timestamp", str(timestamp_s),
            "--accounts", str(accounts), "--gas-limit", "1000000000"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        host, port = _wait_listening(proc, start_timeout)
        yield Node(host, port, proc.pid)
    finally:
        proc.kill()
        proc.wait()
