"""pytest configuration for ``benchmarks/``: collect ``bench_*.py``, rewrite the fixture package.

- The repository's pytest config collects ``test_*.py`` under ``tests/``; benchmark modules are
  named ``bench_*.py`` so ``make test`` never runs them. :func:`pytest_collect_file` collects them
  when ``benchmarks/`` (or one of its files) is named on the command line, so both
  ``python -m pytest benchmarks`` and ``python benchmarks/report.py`` find every suite.
- ``benchmarks/fixtures`` goes on ``sys.path`` and the mycelium-mono import hook is installed for
  its ``mycelium_bench`` package before any benchmark module is imported: the routing modules
  there are rewritten by the hook exactly as an application's would be.
- The ``handlers`` fixture: the three fresh trivial handlers of ``mycelium_bench.workload``,
  which ``bench_emit``, ``bench_inline`` and ``bench_bus`` all deliver to.

Conventions for the ratio table (``extra_info`` keys, read by ``report.py``) are in
``benchmarks/README.md``.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mycelium_mono.routing.hook import ImportHookManager, install_import_hook

if TYPE_CHECKING:
    from mycelium_bench.workload import Handlers

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_PACKAGE = "mycelium_bench"
BENCH_PATTERN = "bench_*.py"

_HOOK = pytest.StashKey[ImportHookManager]()


def pytest_configure(config: pytest.Config) -> None:
    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))
    config.stash[_HOOK] = install_import_hook([FIXTURE_PACKAGE])


def pytest_unconfigure(config: pytest.Config) -> None:
    manager = config.stash.get(_HOOK, None)
    if manager is not None:
        manager.uninstall()
        del config.stash[_HOOK]
    if str(FIXTURES) in sys.path:
        sys.path.remove(str(FIXTURES))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if not fnmatch.fnmatch(file_path.name, BENCH_PATTERN):
        return None
    if _collected_anyway(file_path, parent):
        return None  # `-o python_files=bench_*.py` or an explicit path: never collect twice
    module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
    return module


def _collected_anyway(file_path: Path, parent: pytest.Collector) -> bool:
    """Whether pytest's own python plugin already collects ``file_path``."""
    if parent.session.isinitpath(file_path):
        return True
    patterns = parent.config.getini("python_files")
    return any(fnmatch.fnmatch(file_path.name, pattern) for pattern in patterns)


@pytest.fixture
def handlers() -> Handlers:
    """Three fresh handlers (``self.n += 1``): the workload of the emit and publish suites."""
    # Imported here, not at the top: this conftest loads before pytest_configure puts
    # benchmarks/fixtures on sys.path.
    from mycelium_bench.workload import new_handlers

    return new_handlers()
