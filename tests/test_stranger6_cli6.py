"""The `mycelium-mono` command as a new user meets it, on an app written from the README only.

tests/cli6_app is a library-loan system (messages, services, a routing table, a main.py).
Each test copies it to a temporary directory and drives the real console script there in
subprocesses: exit codes, --json payloads, stubs under mypy --strict, run's argv and exit
status, and one routing mistake seen three ways (check, run, a plain import under the hook).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).parent / "cli6_app"
BIN = Path(sys.executable).parent
COMMAND = BIN / "mycelium-mono"


def project(tmp_path: Path) -> Path:
    root = tmp_path / "loans"
    shutil.copytree(APP, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return root


def env(**changes: str | None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("NO_COLOR", "PYTHONDEVMODE", "PYTHONBREAKPOINT", "COVERAGE_PROCESS_START",
                         "MYCELIUM_PACKAGES", "LIBRARY_FAST_SHELF")}
    base["PYTHONDONTWRITEBYTECODE"] = "1"
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def mm(*args: str, cwd: Path, environ: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(COMMAND), *args], cwd=cwd, env=environ or env(),
                          capture_output=True, text=True, timeout=120)


# --- cache info: the hook's answer, imported names included -----------------------------------

def test_cache_info_calls_a_file_stale_when_an_imported_name_means_another_class_now(
        tmp_path: Path) -> None:
    root = project(tmp_path)
    writing = env(PYTHONDONTWRITEBYTECODE=None)
    ran = mm("run", "main.py", cwd=root, environ=writing)
    assert ran.returncode == 0, ran.stderr
    info = mm("cache", "info", cwd=root, environ=writing)
    assert info.returncode == 0, info.stderr
    assert "routing.cpython-" in info.stdout and "[current]" in info.stdout, info.stdout

    # The handler module now picks FastShelf: the hook would rewrite, and doctor says so.
    fast = env(PYTHONDONTWRITEBYTECODE=None, LIBRARY_FAST_SHELF="1")
    doctor = mm("doctor", "--no-timing", "--format", "json", "library.routing", cwd=root,
                environ=env(LIBRARY_FAST_SHELF="1"))  # writes no cache itself
    cache = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "hook cache")
    assert "an imported name means another class now: library.services.Shelf" in cache["detail"]
    # cache info used to print [current] here: only the files were compared.
    # From another directory, with the project passed as DIR, it finds the project the same way.
    info = mm("cache", "info", str(root), cwd=tmp_path, environ=fast)
    assert info.returncode == 0, info.stderr
    assert ("[stale (an imported name means another class now: library.services.Shelf)]"
            in info.stdout), info.stdout
    # And what info says is what the hook does: the next import rewrites (a miss, not a hit).
    probe = ("import mycelium_mono; mycelium_mono.install_import_hook(['library']); "
             "import library.routing; from mycelium_mono.routing.hook import import_records; "
             "print(import_records()['library.routing'].describe())")
    seen = subprocess.run([sys.executable, "-c", probe], cwd=root, env=fast, capture_output=True,
                          text=True, timeout=60)
    assert "rewritten (cache miss: an imported name means another class now" in seen.stdout, (
        seen.stdout + seen.stderr)


def test_cache_info_on_a_corrupted_and_an_orphaned_file(tmp_path: Path) -> None:
    root = project(tmp_path)
    writing = env(PYTHONDONTWRITEBYTECODE=None)
    assert mm("run", "main.py", cwd=root, environ=writing).returncode == 0
    (cached,) = (root / "library" / "__pycache__").glob("routing.*.mycelium.pyc")
    data = bytearray(cached.read_bytes())
    data[-10] ^= 0xFF
    cached.write_bytes(bytes(data))
    info = mm("cache", "info", cwd=root, environ=writing)
    assert info.returncode == 0 and "[stale (" in info.stdout and "[current]" not in info.stdout
    (root / "library" / "routing.py").rename(root / "library" / "table.py")
    info = mm("cache", "info", cwd=root, environ=writing)
    assert "orphan:" in info.stdout and "routing.py is gone" in info.stdout, info.stdout
    dry = mm("cache", "clean", "-n", cwd=root, environ=writing)
    assert dry.returncode == 0 and cached.exists() and "would remove 1 cache file" in dry.stdout
    gone = mm("cache", "clean", cwd=root, environ=writing)
    assert gone.returncode == 0 and not cached.exists(), gone.stdout + gone.stderr
    missing = mm("cache", "info", str(root / "nope"), cwd=root)
    assert missing.returncode == 2 and "no such directory" in missing.stderr


# --- check: "ok" must mean the module imports ---------------------------------------------------

ROUTING_HEAD = '''\
from mycelium_mono import routing_config

from library.messages import BookBorrowed, BookReturned, FineIssued  # noqa: F401
'''


@pytest.mark.parametrize(("line", "code", "span"), [
    ("from library.services import Catalog, FineDesk, Ledger, Shelf, Ledgr", "E0012", "Ledgr"),
    ("import library.shelving", "E0012", "library.shelving"),
])
def test_check_reports_a_failing_import_the_table_does_not_use(
        tmp_path: Path, line: str, code: str, span: str) -> None:
    column = line.index(span) + 1
    root = project(tmp_path)
    routing = root / "library" / "routing.py"
    table = routing.read_text().split("@routing_config", 1)[1]
    routing.write_text(ROUTING_HEAD + "from library.services import Catalog, FineDesk, Ledger, "
                       "Shelf\n" + line + "\n\n\n@routing_config" + table)
    # The import itself fails at that line, hook or no hook.
    ran = mm("run", "main.py", cwd=root)
    assert ran.returncode == 1 and "Error" in ran.stderr and line in ran.stderr, ran.stderr
    # check used to say "1 routing class ok", exit 0.
    checked = mm("check", "--format", "json", "library/", cwd=root)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is False and report["error_count"] == 1
    (diag,) = report["files"][0]["diagnostics"]
    assert (diag["code"], diag["line"], diag["column"]) == (code, 5, column), diag
    assert diag["end_column"] - diag["column"] == len(span)
    text = mm("check", "library/routing.py", cwd=root)
    assert text.returncode == 1 and f"library/routing.py:5:{column}: error[{code}]" in text.stdout
    assert "^" * len(span) in text.stdout and "help: check" in text.stdout, text.stdout


def test_check_still_passes_guarded_and_relative_imports(tmp_path: Path) -> None:
    root = project(tmp_path)
    routing = root / "library" / "routing.py"
    table = routing.read_text().split("@routing_config", 1)[1]
    routing.write_text(ROUTING_HEAD + "import os.path\nimport library.services as svc\n"
                       "from . import messages  # noqa: F401\n"
                       "from .services import Catalog, FineDesk, Ledger, Shelf\n"
                       "try:\n    from library.turbo import Shelf as Turbo  # noqa: F401\n"
                       "except ImportError:\n    Turbo = None\n"
                       "assert os.path and svc\n\n\n@routing_config" + table)
    checked = mm("check", "library/", cwd=root)
    assert checked.returncode == 0 and "1 routing class ok" in checked.stdout, (
        checked.stdout + checked.stderr)
    ran = mm("run", "main.py", cwd=root)
    assert ran.returncode == 0 and "origin import hook" in ran.stdout, ran.stderr
