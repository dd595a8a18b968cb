"""The `mycelium-mono` command as a new user meets it, on an app written from the README only.

tests/cli6_app is a library-loan system (messages, services, a routing table, a main.py).
Each test copies it to a temporary directory and drives the real console script there in
subprocesses: exit codes, --json payloads, stubs under mypy --strict, run's argv and exit
status, and one routing mistake seen three ways (check, run, a plain import under the hook).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


# === fresh 3.12 venv from the wheel (second cli6 session) ====================================
# tests/cli6_app/kitchen is a kitchen order board (three message types, a MessageHandler that
# emits, a plain @handles class, a fryer class picked by an environment variable), serve.py
# and kitchen/main.py run it, typed_ok.py/typed_wrong.py are user code for mypy --strict. The
# wheel built from this checkout is installed alone into a fresh CPython 3.12 venv (as
# test_wheel_fresh_venv.py does), and every subcommand is driven there.

ROOT = Path(__file__).resolve().parent.parent
MYPY = BIN / "mypy"
Result = subprocess.CompletedProcess[str]


def _python312() -> Path:
    found = subprocess.run(["pyenv", "prefix", "3.12.1"], capture_output=True, text=True,
                           check=False)
    python = Path(found.stdout.strip()) / "bin" / "python3.12"
    if found.returncode != 0 or not python.is_file():
        pytest.fail("this test needs CPython 3.12.1 from pyenv\nhelp: pyenv install 3.12.1")
    return python


def _env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "NO_COLOR", "PYTHONDEVMODE",
                        "COVERAGE_PROCESS_START", "PYTEST_ADDOPTS", "MYCELIUM_PACKAGES",
                        "KITCHEN_GAS", "PYTHONPYCACHEPREFIX"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Result:
    return subprocess.run(argv, cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=240, check=False)


@dataclass(frozen=True)
class Venv:
    python: Path

    @property
    def command(self) -> str:
        return str(self.python.parent / "mycelium-mono")

    def cli(self, *args: str | Path, cwd: Path, **env: str | None) -> Result:
        return _run([self.command, *map(str, args)], cwd, _env(**env))

    def py(self, *args: str | Path, cwd: Path, **env: str | None) -> Result:
        return _run([str(self.python), *map(str, args)], cwd, _env(**env))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("cli6venv")
    pip = [sys.executable, "-m", "pip"]
    built = _run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(base / "dist"), str(ROOT)],
                 base)
    assert built.returncode == 0, f"building the wheel failed\n{built.stderr[-3000:]}"
    wheel = next((base / "dist").glob("mycelium_mono-*.whl"))
    made = _run([str(_python312()), "-m", "venv", "--without-pip", str(base / "venv")], base)
    assert made.returncode == 0, made.stderr
    python = base / "venv" / "bin" / "python"
    installed = _run([*pip, "--python", str(python), "install", "--quiet", str(wheel)], base)
    assert installed.returncode == 0, (
        f"installing the wheel failed\nhelp: pip must reach the package index (or its cache) "
        f"for typing-extensions\n{installed.stderr[-3000:]}")
    return Venv(python)


@pytest.fixture()
def kitchen(tmp_path: Path) -> Path:
    where = tmp_path / "board"
    shutil.copytree(APP, where, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return where


def test_the_venv_is_312_and_imports_the_wheel(venv: Venv, kitchen: Path) -> None:
    result = venv.py("-c", "import sys, mycelium_mono; print(sys.version_info[:2], "
                     "mycelium_mono.__file__)", cwd=kitchen)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(3, 12) ")
    assert Path(result.stdout.split()[-1]).is_relative_to(venv.python.parent.parent)


# --- exit codes, help, json -------------------------------------------------------------------

def test_bare_command_and_each_help(venv: Venv, kitchen: Path) -> None:
    bare = venv.cli(cwd=kitchen)
    assert bare.returncode == 2
    for command in ("check", "show", "doctor", "stubs", "cache", "bench", "run"):
        assert command in bare.stderr
        helped = venv.cli(command, "--help", cwd=kitchen)
        assert helped.returncode == 0, (command, helped.stderr)
        assert f"mycelium-mono {command}" in helped.stdout
    assert "--packages" in venv.cli("run", "--help", cwd=kitchen).stdout
    unknown = venv.cli("chek", "kitchen", cwd=kitchen)
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_check_json_is_stable_and_counts_right(venv: Venv, kitchen: Path) -> None:
    clean = venv.cli("check", "--format", "json", "kitchen/", cwd=kitchen)
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert list(report) == ["ok", "error_count", "skipped", "files"]
    assert report["ok"] is True and report["error_count"] == 0
    assert [(f["path"], f["module"], f["routing_classes"], f["diagnostics"])
            for f in report["files"]] == [("kitchen/routing.py", "kitchen.routing", 1, [])]

    routing = kitchen / "kitchen" / "routing.py"
    routing.write_text(routing.read_text().replace("OrderServed = [Board]",
                                                   "OrderServed = [Grill, Grll]"))
    broken = venv.cli("check", "--format", "json", "kitchen/", cwd=kitchen)
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["ok"] is False and report["error_count"] == 2
    found = [(d["code"], d["line"], d["column"], d["end_column"])
             for d in report["files"][0]["diagnostics"]]
    assert found == [("E0001", 10, 20, 25), ("E0002", 10, 27, 31)]
    assert all(set(d) == {"code", "message", "path", "line", "column", "end_line",
                          "end_column", "help", "note"} and d["help"]
               for d in report["files"][0]["diagnostics"])

    missing = venv.cli("check", "--format", "json", "kitchen/nothere.py", cwd=kitchen)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "no such file" in missing.stderr


def test_doctor_healthy_then_broken(venv: Venv, kitchen: Path) -> None:
    healthy = venv.cli("doctor", "--no-timing", "--format", "json", "kitchen.routing", cwd=kitchen)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    json.loads(healthy.stdout)

    stations = kitchen / "kitchen" / "stations.py"
    stations.write_text(stations.read_text().replace("    @handles(OrderServed)\n", ""))
    broken = venv.cli("doctor", "--no-timing", "kitchen.routing", cwd=kitchen)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Board does not handle OrderServed" in broken.stdout + broken.stderr


def test_bench_on_the_users_own_module(venv: Venv, kitchen: Path) -> None:
    result = venv.cli("bench", "--number", "200", "--repeat", "1", "kitchen.routing", cwd=kitchen)

    assert result.returncode == 0, result.stdout + result.stderr
    for emit in ("emit_order_placed", "emit_dish_ready", "emit_order_served"):
        assert re.search(rf"{emit}\b.*\bns\b", result.stdout), result.stdout
    assert venv.cli("bench", "--number", "0", "kitchen.routing", cwd=kitchen).returncode == 2


# --- run: arguments, exit codes, tracebacks ---------------------------------------------------

def test_run_dash_m_passes_argv_and_the_exit_status(venv: Venv, kitchen: Path) -> None:
    result = venv.cli("run", "-m", "kitchen.main", "4", "2", "1", "3", cwd=kitchen)

    assert result.returncode == 3, result.stderr
    assert "origin import hook served [1, 2, 3]" in result.stdout
    assert result.stdout.rstrip().endswith(
        f"argv ['{kitchen / 'kitchen' / 'main.py'}', '4', '2', '1', '3']")


def test_run_a_script_passes_argv_and_the_exit_status(venv: Venv, kitchen: Path) -> None:
    result = venv.cli("run", "serve.py", "7", "1", cwd=kitchen)

    assert result.returncode == 1, result.stderr
    assert "origin import hook served [1]" in result.stdout
    # argv[0] is the script's absolute path (runpy.run_path sets it), then the arguments.
    assert result.stdout.rstrip().endswith(f"argv ['{kitchen / 'serve.py'}', '7', '1']")


def test_run_traceback_ends_at_the_users_line(venv: Venv, kitchen: Path) -> None:
    result = venv.cli("run", "serve.py", "7", "1", "0", cwd=kitchen)

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    tail = lines[max(i for i, line in enumerate(lines) if line.startswith('  File "')):]
    assert tail[0] == f'  File "{kitchen / "kitchen" / "main.py"}", line 14, in main'
    assert tail[1].strip() == 'raise ValueError(f"order {order_id} has no dishes")'
    assert tail[-1] == "ValueError: order 2 has no dishes"


# --- stubs under mypy --strict ----------------------------------------------------------------

def test_stubs_make_mypy_strict_pass_right_code_and_fail_wrong_emits(venv: Venv,
                                                                      kitchen: Path) -> None:
    wrote = venv.cli("stubs", "kitchen.routing", cwd=kitchen)
    assert wrote.returncode == 0, wrote.stderr
    stub = (kitchen / "kitchen" / "routing.pyi").read_text()
    # `Fryer` is a variable in kitchen.stations (a class picked by the environment): the stub
    # names the class the hook resolved, as the bus's attribute name already does.
    assert "    electric_fryer: _mycelium_kitchen_stations.ElectricFryer\n" in stub
    assert "import kitchen.stations as _mycelium_kitchen_stations\n" in stub
    assert "    grill: Grill\n" in stub
    mypy = [str(MYPY), "--strict", "--no-incremental", "--cache-dir", os.devnull]

    right = _run([*mypy, "typed_ok.py"], kitchen)
    assert right.returncode == 0, right.stdout
    wrong = _run([*mypy, "typed_wrong.py"], kitchen)
    assert wrong.returncode == 1
    assert re.search(r'typed_wrong.py:6: error: Argument 1 to "emit_order_placed" of '
                     r'"KitchenBus" has incompatible type "OrderServed"', wrong.stdout)
    assert re.search(r'typed_wrong.py:7: error: "KitchenBus" has no attribute '
                     r'"emit_order_cancelled"', wrong.stdout)


# --- one broken routing module, three ways to meet it -----------------------------------------

HEAD = ("from mycelium_mono import routing_config\n\n"
        "from kitchen.messages import DishReady, OrderPlaced, OrderServed  # noqa: F401\n"
        "from kitchen.stations import Board, Fryer, Grill, Expo\n\n\n")
TABLE = ("@routing_config\nclass KitchenBus:\n    OrderPlaced = [Board, Grill]\n"
         "    DishReady = [Expo, Fryer]\n    OrderServed = [Board]\n")


@dataclass(frozen=True)
class Shape:
    """A project change that breaks routing, and where the error must point."""

    name: str
    change: Callable[[Path], None]
    code: str          # E00xx, or "syntax"
    where: tuple[int, int]  # 1-based line and column of the caret
    check_path: str = "kitchen/routing.py"
    module: str = "kitchen.routing"
    sys_path: str = "."


def _routing(text: str, file: str = "kitchen/routing.py") -> Callable[[Path], None]:
    def change(kitchen: Path) -> None:
        (kitchen / file).write_text(text)
    return change


def _table(old: str, new: str) -> Callable[[Path], None]:
    return _routing(HEAD + TABLE.replace(old, new))


def _in_init(kitchen: Path) -> None:
    (kitchen / "kitchen" / "routing.py").unlink()
    (kitchen / "kitchen" / "__init__.py").write_text(HEAD + TABLE.replace("[Board]", "[Expo]"))


def _namespace(kitchen: Path) -> None:
    (kitchen / "kitchen" / "__init__.py").unlink()
    _table("[Board]", "[Grill]")(kitchen)


def _src_layout(kitchen: Path) -> None:
    _table("[Board]", "[Grill]")(kitchen)
    (kitchen / "src").mkdir()
    (kitchen / "kitchen").rename(kitchen / "src" / "kitchen")


def _stations(old: str, new: str) -> Callable[[Path], None]:
    def change(kitchen: Path) -> None:
        _table("", "")(kitchen)
        stations = kitchen / "kitchen" / "stations.py"
        stations.write_text(stations.read_text().replace(old, new))
    return change


SHAPES = [
    Shape("unknown handler", _table("Grill]", "Griller]"), "E0002", (9, 27)),
    Shape("not a message", _table("OrderServed =", "Board ="), "E0003", (11, 5)),
    Shape("handler without the method", _table("[Board]", "[Grill]"), "E0001", (11, 20)),
    Shape("handler twice", _table("[Board]", "[Board, Board]"), "E0005", (11, 27)),
    Shape("route twice", _table("    OrderServed = [Board]\n",
                                "    OrderServed = [Board]\n    OrderServed = [Board]\n"),
          "E0006", (12, 5)),
    Shape("syntax error", _table("[Board]\n", "[Board\n"), "syntax", (11, 19)),
    Shape("import error in the routing module",
          _routing(HEAD + "from kitchen.pantry import Stock\n\n" +
                   TABLE.replace("[Board]", "[Stock]")), "E0012", (13, 20)),
    Shape("aliased names", _routing(
        "from mycelium_mono import routing_config as table\n"
        "from kitchen.messages import OrderServed as Served  # noqa: F401\n"
        "from kitchen.stations import Grill as Oven\n\n\n"
        "@table\nclass KitchenBus:\n    Served = [Oven]\n"), "E0001", (8, 15)),
    Shape("relative imports", _routing(
        (HEAD + TABLE).replace("from kitchen.", "from .").replace("[Board]", "[Grill]")),
        "E0001", (11, 20)),
    Shape("routing in the package __init__", _in_init, "E0001", (11, 20),
          check_path="kitchen/__init__.py", module="kitchen"),
    Shape("namespace package", _namespace, "E0001", (11, 20)),
    Shape("src layout", _src_layout, "E0001", (11, 20),
          check_path="src/kitchen/routing.py", sys_path="src"),
    # Passed every check and failed at the first emit ("missing 1 required positional
    # argument"): now E0013 at the handler's name in the table.
    Shape("wrong handler signature",
          _stations("def handle(self, msg: OrderPlaced)", "def handle(self, msg: OrderPlaced, "
                    "station: str)"), "E0013", (9, 27)),
]

_RAISED = re.compile(r"^(?:mycelium_mono\.routing\.errors\.RoutingError: \[(E\d{4})\]|"
                     r"(SyntaxError): )", re.M)


def _from_traceback(stderr: str) -> tuple[str, int, int]:
    """(code, line, column) of the error a traceback ends with: its last ``File`` frame,
    and the caret under its source line."""
    lines = stderr.splitlines()
    raised = [m for m in map(_RAISED.match, lines) if m]
    assert raised, stderr[-3000:]
    at = max(i for i, line in enumerate(lines) if line.startswith('  File "'))
    frame = re.match(r'  File "(.*)", line (\d+)', lines[at])
    assert frame, lines[at]
    text, caret = lines[at + 1], lines[at + 2]
    source = Path(frame[1]).read_text().splitlines()[int(frame[2]) - 1]
    column = caret.index("^") - (len(text) - len(text.lstrip())) \
        + (len(source) - len(source.lstrip())) + 1
    code = raised[-1][1] or "syntax"
    return code, int(frame[2]), column


IMPORT = """
import json, sys
sys.path.insert(0, {path!r})
import mycelium_mono
from mycelium_mono.routing.errors import RoutingError
mycelium_mono.install_import_hook(packages=["kitchen"])
try:
    import {module}
except SyntaxError as exc:
    code = exc.code if isinstance(exc, RoutingError) else "syntax"
    help = exc.help if isinstance(exc, RoutingError) else None
    print(json.dumps([code, exc.lineno, exc.offset, exc.filename, help]))
"""


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_check_run_and_the_hook_point_at_the_same_span(venv: Venv, kitchen: Path,
                                                       shape: Shape) -> None:
    shape.change(kitchen)
    (kitchen / "app.py").write_text(f"import sys\nsys.path.insert(0, {shape.sys_path!r})\n"
                                f"import {shape.module}\n")
    routing_file = str(kitchen / shape.check_path)

    checked = venv.cli("check", "--format", "json", shape.check_path, cwd=kitchen)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    first = json.loads(checked.stdout)["files"][0]["diagnostics"][0]
    assert (first["code"], first["line"], first["column"]) == (shape.code, *shape.where)
    assert first["help"]

    text = venv.cli("check", shape.check_path, cwd=kitchen)
    assert text.stdout.startswith(f"{shape.check_path}:{shape.where[0]}:{shape.where[1]}: "
                                  f"error[{shape.code}]"), text.stdout
    caret = re.search(r"^ *\d+ \| (.*)\n *\| ( *)\^", text.stdout, re.M)
    assert caret and len(caret[2]) == shape.where[1] - 1, text.stdout
    assert "\nhelp: " in text.stdout
    shown = venv.cli("show", shape.check_path, cwd=kitchen)
    assert shown.returncode == 1  # the same line as check's, where show printed an absolute path
    assert shown.stderr.startswith(text.stdout.split("\n", 1)[0] + "\n"), shown.stderr

    ran = venv.cli("run", "--packages", "kitchen", "app.py", cwd=kitchen)
    assert ran.returncode == 1
    assert _from_traceback(ran.stderr) == (shape.code, *shape.where)
    if shape.code != "syntax":
        assert f"\nhelp: {first['help']}" in ran.stderr

    imported = venv.py("-c", IMPORT.format(path=shape.sys_path, module=shape.module), cwd=kitchen)
    assert imported.returncode == 0, imported.stderr
    code, line, column, filename, help_line = json.loads(imported.stdout)
    assert (code, line, column) == (shape.code, *shape.where)
    assert os.path.abspath(filename) == routing_file
    assert help_line == (first["help"] if shape.code != "syntax" else None)


def test_a_handler_module_importing_the_routing_module_back_checks_clean(venv: Venv,
                                                                          kitchen: Path) -> None:
    # `import kitchen.routing` at the top of the handler module: plain Python and the hook
    # import it fine (the routing module is in sys.modules while it runs), and check must
    # not report a circular import (E0012) that no real import meets.
    stations = kitchen / "kitchen" / "stations.py"
    stations.write_text("import kitchen.routing  # noqa: F401  (for a type hint, say)\n"
                        + stations.read_text())

    ran = venv.cli("run", "serve.py", "1", "2", cwd=kitchen)
    assert ran.returncode == 1 and "origin import hook served [1]" in ran.stdout, ran.stderr
    plain = venv.py("serve.py", "1", "2", cwd=kitchen)
    assert plain.returncode == 1, plain.stderr
    for target in ("kitchen/routing.py", "kitchen.routing", "kitchen/"):
        checked = venv.cli("check", target, cwd=kitchen)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout == "kitchen/routing.py: 1 routing class ok\n"
    doctor = venv.cli("doctor", "--no-timing", "kitchen.routing", cwd=kitchen)
    assert doctor.returncode == 0, doctor.stdout
    shown = venv.cli("show", "kitchen.routing", cwd=kitchen)
    assert shown.returncode == 0 and "def emit_order_served" in shown.stdout, shown.stderr


def test_a_namespace_package_checks_by_path_as_by_module_name(venv: Venv, kitchen: Path) -> None:
    # No kitchen/__init__.py: `python serve.py` and the hook import kitchen.routing from the
    # current directory; `check kitchen/routing.py` read it as a top-level `routing` and
    # failed on its own `from kitchen.messages import ...`.
    (kitchen / "kitchen" / "__init__.py").unlink()
    assert venv.cli("run", "--packages", "kitchen", "serve.py", "1", "1", cwd=kitchen,
                    PYTHONDONTWRITEBYTECODE=None).returncode == 1
    # The hook's next import uses the cache file; `cache info` called it stale (it looked
    # kitchen.messages up with kitchen/ itself on sys.path, and nothing imported).
    probe = ("import mycelium_mono; mycelium_mono.install_import_hook(['kitchen']); "
             "import kitchen.routing; from mycelium_mono.routing.hook import import_records; "
             "print(import_records()['kitchen.routing'].describe())")
    assert venv.py("-c", probe, cwd=kitchen).stdout == (
        "kitchen.routing: loaded from the hook's cache\n")
    for where in (kitchen, kitchen.parent):
        info = venv.cli("cache", "info", str(kitchen), cwd=where)
        assert info.stdout.count("routing.cpython-312.mycelium.pyc  [current]\n") == 1, (
            info.stdout)
    info = venv.cli("cache", "info", cwd=kitchen, KITCHEN_GAS="1")
    assert "[stale (an imported name means another class now: kitchen.stations.Fryer)]" in (
        info.stdout)

    for target in ("kitchen/routing.py", "kitchen.routing"):
        checked = venv.cli("check", target, cwd=kitchen)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout == "kitchen/routing.py: 1 routing class ok\n"
    shown = venv.cli("show", "kitchen/routing.py", cwd=kitchen)
    assert shown.returncode == 0 and "def emit_order_served" in shown.stdout, shown.stderr


def test_handler_signatures_that_take_one_message_still_pass(venv: Venv, kitchen: Path) -> None:
    stations = kitchen / "kitchen" / "stations.py"
    stations.write_text(stations.read_text()
                        .replace("def handle(self, msg: OrderPlaced)",
                                 "def handle(self, msg: OrderPlaced, station: str = 'grill')")
                        .replace("def handle(self, msg: DishReady) -> None:\n        if",
                                 "def handle(self, *msgs: DishReady, loud: bool = False) "
                                 "-> None:\n        msg = msgs[0]\n        if")
                        .replace("def on_order(self, msg: OrderPlaced)",
                                 "def on_order(self, msg: OrderPlaced, /, *rest: object)"))
    checked = venv.cli("check", "kitchen/", cwd=kitchen)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ran = venv.cli("run", "serve.py", "1", "2", "1", cwd=kitchen)
    assert ran.returncode == 2 and "served [1, 2]" in ran.stdout, ran.stdout + ran.stderr
    wrong = stations.read_text().replace("def on_served(self, msg: OrderServed)",
                                         "def on_served(self)")
    stations.write_text(wrong)
    checked = venv.cli("check", "kitchen/routing.py", cwd=kitchen)
    assert checked.returncode == 1
    assert checked.stdout.startswith(
        "kitchen/routing.py:10:20: error[E0013]: Board.on_served(self) cannot be called with "
        "one message: too many positional arguments"), checked.stdout
