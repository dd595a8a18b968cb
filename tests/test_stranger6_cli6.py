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


# --- one routing mistake, three ways: check, run, a plain import under the hook ----------------

BAD_TABLES = {
    "unknown handler": ("    BookBorrowed = [Catalg]", "E0002", "Catalg", "did you mean `Catalog`"),
    "not a message": ("    Ledger = [Ledger]", "E0003", "Ledger", "decorate Ledger with @message"),
    "handler without the method": ("    FineIssued = [Catalog]", "E0001", "Catalog",
                                   "mark a method of Catalog with @handles(FineIssued)"),
    "listed twice": ("    BookBorrowed = [Catalog, Catalog]", "E0005", "Catalog",
                     "remove the second one"),
    "aliased module": ("    BookBorrowed = [svc.FineDesk]", "E0001", "svc.FineDesk",
                       "mark a method of FineDesk with @handles(BookBorrowed)"),
}


@pytest.mark.parametrize("shape", sorted(BAD_TABLES))
def test_a_routing_mistake_reads_the_same_from_check_run_and_the_hook(
        tmp_path: Path, shape: str) -> None:
    line, code, span, help_text = BAD_TABLES[shape]
    root = project(tmp_path)
    (root / "library" / "routing.py").write_text(
        ROUTING_HEAD + "from library import services as svc  # noqa: F401\n"
        "from library.services import Catalog, FineDesk, Ledger  # noqa: F401\n\n\n"
        "@routing_config\nclass LoanBus:\n" + line + "\n")
    # The caret is under the message name on the left for E0003, else under the handler.
    find = line.index if code == "E0003" else line.rindex
    lineno, column = 10, find(span) + 1
    where = f"library/routing.py:{lineno}:{column}: error[{code}]"
    caret = " " * (column - 1) + "^" * len(span)

    checked = mm("check", "library/", cwd=root)
    assert checked.returncode == 1 and where in checked.stdout, checked.stdout
    assert f"  | {caret}\n" in checked.stdout and help_text in checked.stdout

    ran = mm("run", "main.py", cwd=root)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert f"File \"{root / 'library' / 'routing.py'}\", line {lineno}" in ran.stderr
    # The traceback shows the line without its indent, then the whole name underlined.
    shown = line.strip()
    underline = " " * (4 + column - 1 - (len(line) - len(shown))) + "^" * len(span)
    assert f"\n    {shown}\n{underline}\n" in ran.stderr, ran.stderr
    assert f"RoutingError: [{code}]" in ran.stderr and help_text in ran.stderr

    probe = ("import json, mycelium_mono\nmycelium_mono.install_import_hook(['library'])\n"
             "try:\n    import library.routing\nexcept SyntaxError as e:\n"
             "    print(json.dumps([type(e).__name__, e.code, e.lineno, e.offset, e.end_offset,"
             " e.help]))\n")
    hooked = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env(),
                            capture_output=True, text=True, timeout=60)
    name, got_code, got_line, offset, end, got_help = json.loads(hooked.stdout)
    assert (name, got_code, got_line, offset, end) == (
        "RoutingError", code, lineno, column, column + len(span))
    assert help_text in got_help

    as_json = json.loads(mm("check", "--format", "json", "library/", cwd=root).stdout)
    (diag,) = as_json["files"][0]["diagnostics"]
    assert (diag["code"], diag["line"], diag["column"], diag["end_column"]) == (
        code, lineno, column, column + len(span))
    assert as_json["error_count"] == 1 and as_json["ok"] is False


# --- run: arguments, exit status, tracebacks -----------------------------------------------------

def test_run_passes_arguments_and_exit_status_through_for_a_script_and_for_dash_m(
        tmp_path: Path) -> None:
    root = project(tmp_path)
    for target in (["main.py"], ["-m", "main"]):
        late = mm("run", *target, "4", "--flag", cwd=root)
        assert late.returncode == 3, late.stderr
        assert "origin import hook fines 100 argv ['4', '--flag']" in late.stdout
        on_time = mm("run", *target, cwd=root)
        assert on_time.returncode == 0 and "fines 0" in on_time.stdout, on_time.stderr
    (root / "boom.py").write_text("import sys\n\n\ndef fail():\n    raise ValueError(sys.argv[1])\n"
                                  "\n\nfail()\n")
    boom = mm("run", "boom.py", "shelf-7", cwd=root)
    assert boom.returncode == 1
    assert f'File "{root / "boom.py"}", line 5, in fail' in boom.stderr
    assert boom.stderr.rstrip().endswith("ValueError: shelf-7"), boom.stderr
    assert mm("run", "nope.py", cwd=root).returncode == 2
    nothing = mm("run", cwd=root)
    assert nothing.returncode == 2 and "nothing to run" in nothing.stderr


# --- doctor and bench on the user's own module ---------------------------------------------------

def test_doctor_and_bench_on_a_healthy_and_a_broken_project(tmp_path: Path) -> None:
    root = project(tmp_path)
    healthy = mm("doctor", "--format", "json", "library.routing", cwd=root)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    report = json.loads(healthy.stdout)
    assert set(report) == {"module", "path", "checks"} and report["module"] == "library.routing"
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts["routing table"] == "ok" and verdicts["LoanBus origin"] == "ok"
    assert "fail" not in verdicts.values(), verdicts
    timing = next(c for c in report["checks"] if c["name"] == "LoanBus emit timing")
    for emit in ("emit_book_borrowed", "emit_book_returned", "emit_fine_issued"):
        assert f"LoanBus.{emit}" in timing["detail"]
    bench = mm("bench", "--number", "200", "--repeat", "1", "library.routing", cwd=root)
    assert bench.returncode == 0, bench.stderr
    assert bench.stdout.count("ns per emit") >= 3 and "dict-and-loop" in bench.stdout
    assert mm("bench", "--number", "0", "library.routing", cwd=root).returncode == 2

    (root / "library" / "routing.py").write_text(
        ROUTING_HEAD + "from library.services import Catalog\n\n\n"
        "@routing_config\nclass LoanBus:\n    FineIssued = [Catalog]\n")
    broken = mm("doctor", "--format", "json", "library.routing", cwd=root)
    assert broken.returncode == 1
    (first,) = [c for c in json.loads(broken.stdout)["checks"] if c["verdict"] == "fail"]
    assert first["name"] == "routing table" and "E0001" in first["detail"]
    assert mm("doctor", "library.nothing", cwd=root).returncode == 2
    assert mm("bench", "library.routing", cwd=root).returncode == 1
