"""Fixtures for the distributed tests: free ports, peer processes, NATS servers.

Loaded with ``pytest_plugins = ["conftest_distributed"]`` from the test modules that need it.
Peer processes are ``python -m peers.<name>`` with ``tests/`` on ``PYTHONPATH``; they talk to
the test over a line protocol on stdin/stdout (``READY ...``, ``GO``, ``RESULT {json}``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mycelium_mono.bus.transports.nats import NATS_START_HELP

TESTS = Path(__file__).resolve().parent
SHARED_NATS = "nats://127.0.0.1:4222"
NATS_BINARY = "/usr/sbin/nats-server"


def free_port() -> int:
    """A port nobody listens on right now (bind port 0, read it, release it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Peer:
    """A peer process and its line protocol (a thread reads its stdout into a queue)."""

    name: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, word: str, timeout: float = 30.0) -> str:
        """Read lines until one starts with ``word``; return the rest of that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._readline(deadline)
            if line is None:
                break
            if line.startswith(word):
                return line[len(word) :].strip()
        raise AssertionError(
            f"peer {self.name} did not say {word!r} within {timeout}s "
            f"(exit code {self.proc.poll()}); its stderr:\n{self.stderr_tail()}"
        )

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        """The ``RESULT {json}`` line."""
        data: dict[str, Any] = json.loads(self.expect("RESULT", timeout))
        return data

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as in a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("QUIT")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def _readline(self, deadline: float) -> str | None:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if line is None:
            self.lines.put(None)  # stay at end-of-output for the next reader
        return line

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]


class Peers:
    """Starts peer processes and kills every one of them at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Peer] = []

    def spawn(self, module: str, *args: str, name: str | None = None) -> Peer:
        label = name or module
        err_path = self.tmp / f"{label}-{len(self.started)}.stderr"
        env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        proc = subprocess.Popen(
            [sys.executable, "-m", f"peers.{module}", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err_path.open("w"),
            text=True,
            env=env,
            cwd=TESTS,
        )
        peer = Peer(label, proc, err_path)
        self.started.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.started:
            if peer.proc.poll() is None:
                peer.proc.kill()
            peer.proc.wait(timeout=10)
            if peer.proc.stdin is not None:
                peer.proc.stdin.close()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    """Spawn peer processes; every one is killed at teardown, whatever happened."""
    p = Peers(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def shared_nats() -> str:
    """The machine's NATS server at 127.0.0.1:4222; fails (never skips) when it is down."""
    if not reachable("127.0.0.1", 4222):
        pytest.fail(
            "no NATS server at 127.0.0.1:4222 — these tests need one (with JetStream).\n"
            f"Start it with:\n    {NATS_START_HELP}",
            pytrace=False,
        )
    return SHARED_NATS


@dataclass
class NatsServer:
    """A private nats-server with JetStream on a free port (can be restarted)."""

    port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_BINARY, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nats-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A private JetStream server: tests cannot interfere with each other or the shared one."""
    if not Path(NATS_BINARY).exists():
        pytest.fail(
            f"{NATS_BINARY} is missing; these tests start their own JetStream server.\n"
            "help: install nats-server (e.g. apt-get install nats-server)",
            pytrace=False,
        )
    store = Path(tempfile.mkdtemp(prefix="mycelium-nats-"))
    server = NatsServer(free_port(), store)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def stream_name() -> str:
    """A JetStream stream name unique to this test."""
    return f"T_{uuid.uuid4().hex[:12].upper()}"
