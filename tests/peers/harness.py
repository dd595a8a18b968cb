"""Helpers for the distributed tests (the fixtures live in ``tests/conftest_distributed.py``).

Peer processes are ``python -m peers.<name>`` with ``tests/`` on ``PYTHONPATH``; they talk to
the test over a line protocol on stdin/stdout (``READY ...``, ``GO``, ``RESULT {json}``).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
NATS_BINARY = "/usr/sbin/nats-server"


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) for something another socket or process will make true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


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

    async def aexpect(self, word: str, timeout: float = 30.0) -> str:
        """:meth:`expect` without blocking the event loop (the test's own sockets keep running)."""
        return await asyncio.to_thread(self.expect, word, timeout)

    async def aresult(self, timeout: float = 60.0) -> dict[str, Any]:
        """:meth:`result` without blocking the event loop."""
        return await asyncio.to_thread(self.result, timeout)

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

    def __init__(self, tmp: Path, package: str = "peers") -> None:
        self.tmp = tmp
        self.package = package  # the package under tests/ holding the peer modules
        self.started: list[Peer] = []

    def spawn(self, module: str, *args: str, name: str | None = None) -> Peer:
        label = name or module
        err_path = self.tmp / f"{label}-{len(self.started)}.stderr"
        env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        proc = subprocess.Popen(
            [sys.executable, "-m", f"{self.package}.{module}", *args],
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
                os.kill(peer.proc.pid, signal.SIGCONT)  # a SIGSTOPped peer dies only once run
                peer.proc.kill()
            peer.proc.wait(timeout=10)
            if peer.proc.stdin is not None:
                peer.proc.stdin.close()


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
