"""Shared by the live tests: a real anvil node with the market deployed, and run configs.

A node that cannot start fails the test with the installer's help (``make venv`` installs
anvil into examples/bandit/chain/node_modules); it never skips.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from bandit.chain.node import Node, NodeError, anvil_node
from bandit.config import BanditConfig, load_config
from bandit.feed import Feed, load_feed
from bandit.live import LiveSetup, prepare, restart_from_snapshot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_node() -> Iterator[Node]:
    """anvil on a free port, or a failed test that says how to install it."""
    try:
        context = anvil_node()
        node = context.__enter__()
    except NodeError as exc:
        pytest.fail(f"the live tests need a local anvil node: {exc}")
    try:
        yield node
    finally:
        context.__exit__(None, None, None)


@dataclass
class LiveChain:
    """A node with the market deployed; :meth:`fresh` rewinds it to right after deployment."""

    node: Node
    feed: Feed
    setup: LiveSetup

    def fresh(self) -> LiveSetup:
        self.setup = restart_from_snapshot(self.setup)
        return self.setup


@contextmanager
def live_chain() -> Iterator[LiveChain]:
    feed = load_feed()
    with running_node() as node:
        yield LiveChain(node, feed, prepare(node.http_url, node.ws_url, feed))


def live_cfg(out: Path) -> BanditConfig:
    """The bundled config writing under ``out``: no /metrics, free ZeroMQ ports."""
    cfg = load_config(None, output_dir=out, overrides={"distributed": {
        "adapters": f"127.0.0.1:{free_port()}", "strategies": f"127.0.0.1:{free_port()}"}})
    return replace(cfg, metrics=replace(cfg.metrics, http_port=None))
