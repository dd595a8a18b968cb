"""Fixtures for the distributed tests: peer processes, NATS servers, stream names.

Loaded with ``pytest_plugins = ["conftest_distributed"]`` from the test modules that need it;
the helpers behind them are in ``tests/peers/harness.py``.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.harness import NATS_BINARY, NatsServer, Peers, free_port, reachable

from mycelium_mono.bus.transports.nats import NATS_START_HELP

SHARED_NATS = "nats://127.0.0.1:4222"


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
