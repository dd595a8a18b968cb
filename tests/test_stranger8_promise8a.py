"""A stranger audits README's "When something is off" claims with a warehouse of their own.

The project (written to tmp_path for each test): a ``Pallet`` reaches the ``Picker``, which
emits a ``Pick`` for the ``Dock``; a ``Ledger`` would record picks but nobody routed it. Every
claim is checked by running the real ``mycelium-mono`` command in a subprocess from the project
root, as the README says to, and reading its output and exit status. Claims other suites
already exercise (exit codes, E0012 notes, venv/node_modules skipping, tracer/dev-mode
warnings, ...) are left to them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

MESSAGES = '''\
from mycelium_mono import message, U32


@message(type_id=8801, topic="depot.pallet")
class Pallet:
    sku: U32
    qty: U32


@message(type_id=8802, topic="depot.pick")
class Pick:
    sku: U32
'''

SERVICES = '''\
from mycelium_mono import MessageHandler
from depot.messages import Pallet, Pick


class Picker(MessageHandler[Pallet]):
    def handle(self, pallet: Pallet) -> None:
        self.emit(Pick(sku=pallet.sku))


class Dock(MessageHandler[Pick]):
    def handle(self, pick: Pick) -> None:
        pass
'''

# The routing module leaves a mark on disk when it runs, so a test can tell whether the
# command executed it; Ledger is defined here, in the routing module itself, and not routed.
ROUTING = '''\
import pathlib

pathlib.Path(__file__).with_name("ROUTING_RAN").write_text("the routing module ran")

from mycelium_mono import MessageHandler, routing_config
from depot.messages import Pallet, Pick  # noqa: F401
from depot.services import Dock, Picker


class Ledger(MessageHandler[Pick]):
    def handle(self, pick: Pick) -> None:
        pass


@routing_config
class DepotBus:
    Pallet = [Picker]
    Pick = [Dock]
'''


def _depot(root: Path) -> Path:
    package = root / "depot"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "messages.py").write_text(MESSAGES)
    (package / "services.py").write_text(SERVICES)
    (package / "routing.py").write_text(ROUTING)
    return package


def _env() -> dict[str, str]:
    # A developer's shell may set these, and each changes what the command prints.
    env = {k: v for k, v in os.environ.items()
           if k not in ("NO_COLOR", "PYTHONDEVMODE", "PYTHONBREAKPOINT", "COVERAGE_PROCESS_START")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=120)


def test_check_reads_the_routing_module_without_running_it(tmp_path: Path) -> None:
    # README: "`mycelium-mono check myapp/` checks every routing module under a directory
    # without running it".
    package = _depot(tmp_path)
    result = _run("-m", "mycelium_mono", "check", "depot/", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "depot/routing.py: 1 routing class ok" in result.stdout
    assert not (package / "ROUTING_RAN").exists(), "check executed the routing module"


def test_doctor_names_an_unrouted_class_of_the_routing_module_itself(tmp_path: Path) -> None:
    # README: doctor reports "which classes in the routing module or its handler modules
    # handle a message type no bus delivers to them", with a `fix:` at the routing line.
    _depot(tmp_path)
    result = _run("-m", "mycelium_mono", "doctor", "--no-timing", "depot.routing", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ("[warn] Ledger not routed: Ledger.handle handles Pick, but DepotBus routes Pick to "
            "Dock only" in result.stdout), result.stdout
    assert "fix: add Ledger to the list at depot/routing.py:18: `Pick = [Dock]`" in (
        result.stdout), result.stdout


def test_doctor_sees_cprofile_as_an_active_profiler(tmp_path: Path) -> None:
    # README: doctor answers "Is a tracer, profiler, coverage, debugger ... active?". Since
    # 3.12 cProfile registers as a sys.monitoring tool and sys.getprofile() stays None, so
    # doctor said "no tracer, profiler ... active" under `python -m cProfile` on 3.12/3.13.
    _depot(tmp_path)
    profile = tmp_path / "doctor.prof"
    result = _run("-m", "cProfile", "-o", str(profile), "-m", "mycelium_mono", "doctor",
                  "--no-timing", "depot.routing", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert profile.exists(), "cProfile did not run the command"
    assert "no tracer, profiler, debugger, coverage or dev mode active" not in result.stdout
    assert re.search(r"\[warn\] tracer or profiler: .*(getprofile|cProfile)", result.stdout), (
        result.stdout)


def test_check_dot_notes_installed_trees_and_skips_hidden_directories_silently(
        tmp_path: Path) -> None:
    # A site-packages tree (no pyvenv.cfg around it) is noted; a hidden directory holding a
    # broken routing module is skipped without a word, as README now says (it said hidden
    # directories were among those it "says which" of).
    _depot(tmp_path)
    for tree in (".attic/old", "site-packages/vendor"):
        (tmp_path / tree).mkdir(parents=True)
        (tmp_path / tree / "routing.py").write_text("routing_config = 1 / 0\n")
    result = _run("-m", "mycelium_mono", "check", ".", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: skipped site-packages/: installed packages" in result.stdout
    assert ".attic" not in result.stdout + result.stderr
    off = README.read_text().split("## When something is off", 1)[1].split("\n## ", 1)[0]
    assert "hidden directories such as `.git` silently" in " ".join(off.split())
