"""pytest plugin: installs the import hook for the test session (filled in by the hook work)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "mycelium_packages",
        "packages whose routing modules the mycelium-mono import hook rewrites",
        type="linelist",
        default=[],
    )
