"""What ``doctor`` reports: checks with a verdict and a fix, grouped by troubleshooting topic."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from mycelium_mono.cli.target import Target

__all__ = [
    "NOT_CALLED",
    "NOT_FOUND",
    "PERFORMANCE",
    "Check",
    "HookMode",
    "Verdict",
    "location",
    "plural",
    "source_line",
]

NOT_FOUND = "Handler not found"
NOT_CALLED = "Handler not called"
PERFORMANCE = "Performance not improving"


class Verdict(enum.Enum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One troubleshooting check: what was looked at, the verdict, and what to do about it."""

    topic: str
    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None


class HookMode(enum.Enum):
    """How ``diagnose`` imports the routing module."""

    INSTALL = "install"
    """Install the hook for the module's top-level package first (the command's default)."""
    NONE = "none"
    """Import without installing it (``--no-hook``): the run-time build path."""
    OBSERVE = "observe"
    """Install nothing; report what the running process did (in-application use)."""


def location(target: Target, lineno: int) -> str:
    return f"{os.path.relpath(target.filename)}:{lineno}"


def source_line(target: Target, lineno: int) -> str:
    lines = target.text.splitlines()
    return lines[lineno - 1].strip() if 1 <= lineno <= len(lines) else ""


def plural(count: int) -> str:
    return "" if count == 1 else "s"
