"""Load a repository file that is not an importable module (noxfile.py, benchmarks/*.py)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_file(name: str, path: Path) -> Iterator[ModuleType]:
    """Yield ``path`` executed as module ``name``; for a module-scoped fixture."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@functools.cache
def noxfile() -> ModuleType:
    """``noxfile.py``, executed once per test run: loading it registers its sessions with nox,
    which warns about (and will refuse) a session registered twice."""
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
