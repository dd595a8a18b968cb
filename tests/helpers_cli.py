"""Running the `mycelium-mono` command for real, as a user would, from a copy of tests/clipkgs.

Shared by the CLI suites (``test_cli``, ``test_cli_doctor``): each test copies tests/clipkgs to a
temporary project directory and runs the command there in a subprocess, in an environment with
the variables that change its output (colour, debug modes, bytecode caching) set to a known state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

CLIPKGS = Path(__file__).parent / "clipkgs"
CONSOLE_SCRIPT = Path(sys.executable).parent / "mycelium-mono"

# Set in a developer's shell, each of these changes what the command prints (colour, doctor's
# debug-mode warnings); a test that wants one sets it through `cli_env(NAME=value)`.
_UNSET = ("NO_COLOR", "PYTHONDEVMODE", "PYTHONBREAKPOINT", "COVERAGE_PROCESS_START")


def copy_clipkgs(tmp_path: Path) -> Path:
    """A fresh project directory holding the packages of tests/clipkgs (no caches, no stubs)."""
    root = tmp_path / "project"
    shutil.copytree(CLIPKGS, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return root


def cli_env(**changes: str | None) -> dict[str, str]:
    """This process's environment, made neutral, then ``changes`` applied (``None`` unsets)."""
    env = dict(os.environ)
    for name in _UNSET:
        env.pop(name, None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no cache files unless a test asks for them
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(argv: Sequence[str], cwd: Path,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``cwd`` (default environment: :func:`cli_env`), capturing text output."""
    return subprocess.run(list(argv), cwd=cwd, env=env or cli_env(), capture_output=True,
                          text=True, timeout=120)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
        python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python [python_flags] -m mycelium_mono.cli *args``: the console script's module."""
    return run([sys.executable, *python_flags, "-m", "mycelium_mono.cli", *args], cwd, env)


# A routing module whose first emit reaches a hybrid route through a handler's self.emit.
CHAIN_TO_HYBRID = '''\
from mycelium_mono import MessageHandler, route, routing_config

from clishop.msgs import Order, Signal, Swap
from clishop.svc import Audit


class Forwarder(MessageHandler[Swap]):
    def handle(self, swap: Swap) -> None:
        self.emit(Order(amount=swap.amount))


class Book(MessageHandler[Order]):
    def handle(self, order: Order) -> None:
        pass


class Store(MessageHandler[Order]):
    async def handle(self, order: Order) -> None:  # type: ignore[override]
        pass


@routing_config
class ChainBus:
    Swap = [Forwarder]
    Signal = [Audit]
    Order = route(sync=[Book], background=[Store])
'''


# A sync handler emitting into a background-only route: every timed emit queues one call, and
# the factories give the bus backlogs far smaller than a timing run (issue: bench's 20,000
# emits overflowed the default 10,000-call backlog and died of BacklogFull).
INTO_BACKGROUND = '''\
from mycelium_mono import MessageHandler, route, routing_config
from mycelium_mono.bus import BackgroundBacklog

from clishop.msgs import Order, Swap


class Forwarder(MessageHandler[Swap]):
    def __init__(self, per_emit: int = 1, first: int = 1) -> None:
        self.per_emit, self.first, self.calls = per_emit, first, 0

    def handle(self, swap: Swap) -> None:
        count = self.first if self.calls == 0 else self.per_emit
        self.calls += 1
        for _ in range(count):
            self.emit(Order(amount=swap.amount))


class Store(MessageHandler[Order]):
    def __init__(self) -> None:
        self.stored = 0

    async def handle(self, order: Order) -> None:  # type: ignore[override]
        self.stored += 1


@routing_config
class IntoBackground:
    Swap = [Forwarder]
    Order = route(background=[Store])


def small_backlog() -> IntoBackground:
    return IntoBackground(Forwarder(), Store(), background=BackgroundBacklog(maxsize=64))


def three_per_emit() -> IntoBackground:
    return IntoBackground(Forwarder(3, 3), Store(), background=BackgroundBacklog(maxsize=2))


def more_after_the_first() -> IntoBackground:
    return IntoBackground(Forwarder(2, 0), Store(), background=BackgroundBacklog(maxsize=64))
'''
