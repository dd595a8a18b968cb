"""The built wheel in a fresh virtual environment runs an application written from the README.

A new user's path, end to end (issue 15, "Must show"): build the wheel, install it alone (plus
pytest, from the package index; pip's cache is fine) into a new venv, copy in
``tests/wheelapp`` (a warehouse: four message types, seven handlers, an async one, two that emit,
a hybrid route, the flexible bus), then run what the README says to run: the app's own test
suite under the pytest plugin, ``mycelium-mono check|show|doctor|stubs|bench|run``, and the
``doctor.report`` line. Nothing from this checkout is on ``sys.path`` there, so a README example
that only works in the checkout, or a file the wheel forgets to ship, fails here.

One venv for the module (~12 s to build and install), then one behaviour per test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).parent / "wheelapp"
pytestmark = pytest.mark.multiprocess


@dataclass(frozen=True)
class FreshVenv:
    wheel: Path
    python: Path
    app: Path

    @property
    def command(self) -> Path:
        return self.python.parent / "mycelium-mono"

    def run(self, *argv: str | Path, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        return _run([str(a) for a in argv], cwd or self.app, _clean_env())


def _clean_env() -> dict[str, str]:
    """This environment without anything that would let the checkout leak into the venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "NO_COLOR", "PYTHONDEVMODE",
                        "COVERAGE_PROCESS_START", "PYTEST_ADDOPTS"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(argv: Sequence[str], cwd: Path, env: dict[str, str]
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def _checked(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode})\nhelp: this needs pip to reach "
                    "the package index (or its cache) for hatchling and pytest\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def wheel_in_fresh_venv(base: Path, python: str | Path, requirements: str,
                        *extra: str) -> tuple[Path, Path]:
    """Build this checkout's wheel into ``base/dist`` and install it as ``requirements`` (the
    wheel's extras, e.g. ``"[tcp]"``), plus ``extra`` packages, into a new venv of ``python``.
    Returns the wheel and the venv's interpreter."""
    env = _clean_env()
    pip = [sys.executable, "-m", "pip"]
    built = _run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(base / "dist"), str(ROOT)],
                 base, env)
    _checked(built, "building the wheel")
    wheel = next((base / "dist").glob("mycelium_mono-*.whl"))
    # --without-pip, then this interpreter's pip aims at it: saves ensurepip's ~4 s.
    _checked(_run([str(python), "-m", "venv", "--without-pip", str(base / "venv")], base, env),
             f"creating the venv of {python}")
    venv_python = base / "venv" / "bin" / "python"
    installed = _run([*pip, "--python", str(venv_python), "install", "--quiet",
                      f"{wheel}{requirements}", *extra], base, env)
    _checked(installed, f"installing the wheel with {requirements or 'no extras'}")
    return wheel, venv_python


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    base = tmp_path_factory.mktemp("fresh")
    wheel, python = wheel_in_fresh_venv(base, sys.executable, "[latency]", "pytest>=8",
                                        "pytest-asyncio>=0.23")
    app = base / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return FreshVenv(wheel, python, app)


def test_the_venv_imports_the_installed_wheel_not_the_checkout(venv: FreshVenv) -> None:
    result = venv.run(venv.python, "-c", "import mycelium_mono; print(mycelium_mono.__file__)")

    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(venv.python.parent.parent)


def test_the_wheel_ships_the_library_only_and_no_bandit_extra(venv: FreshVenv) -> None:
    with zipfile.ZipFile(venv.wheel) as wheel:
        names = wheel.namelist()
        metadata = next(wheel.read(n).decode() for n in names if n.endswith("/METADATA"))
    assert {name.split("/")[0] for name in names} == {
        "mycelium_mono", f"{venv.wheel.name.split('-')[0]}-{venv.wheel.name.split('-')[1]}"
        ".dist-info"}
    assert "mycelium_mono/py.typed" in names
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines()
              if line.startswith("Provides-Extra:")}
    assert "bandit" not in extras
    assert not [line for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and any(
                    dep in line for dep in ("websockets", "psycopg", "tqdm"))]


def test_the_applications_own_test_suite_passes_under_the_plugin(venv: FreshVenv) -> None:
    result = venv.run(venv.python, "-m", "pytest", "-q")

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]


def test_check_finds_the_routing_module_clean(venv: FreshVenv) -> None:
    result = venv.run(venv.command, "check", "warehouse")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "warehouse/routing.py: 1 routing class ok" in result.stdout


def test_check_reports_a_routing_mistake_compiler_style(venv: FreshVenv, tmp_path: Path) -> None:
    broken = tmp_path / "app"
    shutil.copytree(venv.app, broken)
    routing = broken / "warehouse" / "routing.py"
    routing.write_text(routing.read_text().replace("StockLow = [AuditLog, Purchasing]",
                                                   "StockLow = [AuditLog, Receiving]"))
    result = venv.run(venv.command, "check", "warehouse", cwd=broken)

    lineno = routing.read_text().splitlines().index("    StockLow = [AuditLog, Receiving]") + 1
    assert result.returncode == 1
    assert (f"warehouse/routing.py:{lineno}:27: error[E0001]: Receiving does not handle "
            "StockLow") in result.stdout
    assert "^^^^^^^^^" in result.stdout
    assert "help: mark a method of Receiving with @handles(StockLow)" in result.stdout


def test_show_prints_straight_line_emit_methods(venv: FreshVenv) -> None:
    result = venv.run(venv.command, "show", "warehouse.routing")

    assert result.returncode == 0, result.stderr
    assert "def emit_item_picked(self, msg: ItemPicked) -> None:" in result.stdout
    assert "self.stock_watch.handle(msg)" in result.stdout
    assert "async def emit_reorder_placed_async(self, msg: ReorderPlaced)" in result.stdout


def test_run_main_builds_the_bus_with_the_hook_and_runs_the_chain(venv: FreshVenv) -> None:
    result = venv.run(venv.command, "run", "main.py", "--no-install")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "origin": "import hook", "stock": 3, "sent": 1,
        "audit": ["low BOLT-M6-0001 3", "reorder BOLT-M6-0001 50"]}


def test_main_installing_the_hook_itself_as_the_readme_shows(venv: FreshVenv) -> None:
    result = venv.run(venv.python, "main.py")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["origin"] == "import hook"


def test_run_dash_m_of_a_top_level_module_hooks_the_packages_beside_it(venv: FreshVenv) -> None:
    result = venv.run(venv.command, "run", "-m", "main", "--no-install")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["origin"] == "import hook"


def test_doctor_passes_and_times_every_emit(venv: FreshVenv) -> None:
    result = venv.run(venv.command, "doctor", "warehouse.routing")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok]   WarehouseBus origin: rewritten by the import hook" in result.stdout
    timed = [line for line in result.stdout.splitlines() if "WarehouseBus.emit_" in line]
    assert len(timed) == 4
    assert all("ns per emit" in line for line in timed), "\n".join(timed)


def test_doctor_report_inside_the_application_as_the_readme_writes_it(venv: FreshVenv) -> None:
    code = ("import mycelium_mono\n"
            "mycelium_mono.install_import_hook(packages=['warehouse'])\n"
            "import warehouse.routing\n"
            "print(mycelium_mono.cli.doctor.report('warehouse.routing'))")
    result = venv.run(venv.python, "-c", code)

    assert result.returncode == 0, result.stderr
    assert "WarehouseBus origin: rewritten by the import hook" in result.stdout


def test_stubs_give_the_type_checker_the_generated_bus(venv: FreshVenv, tmp_path: Path) -> None:
    result = venv.run(venv.command, "stubs", "warehouse.routing", "-o", tmp_path / "typings")

    assert result.returncode == 0, result.stderr
    stub = (tmp_path / "typings" / "warehouse" / "routing.pyi").read_text()
    assert "class WarehouseBus" in stub
    assert "def emit_stock_low(self, msg: StockLow) -> None: ..." in stub


def test_bench_compares_each_emit_with_dict_and_loop(venv: FreshVenv) -> None:
    result = venv.run(venv.command, "bench", "warehouse.routing", "--factory",
                      "warehouse.routing:make_bus", "--number", "300", "--repeat", "1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ns per emit; dict-and-loop") == 4, result.stdout
