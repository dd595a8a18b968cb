"""``python -m mycelium_mono run``: scripts and modules under the hook, children included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mycelium_mono.__main__ import (
    PACKAGES_ENV,
    RunRequest,
    UsageError,
    default_script_packages,
    parse_run_args,
    resolve_packages,
)

HOOKPKGS = Path(__file__).parent / "hookpkgs"
DEMO_RESULT = [7, ["order 1", "order 2", "shipped 1"]]

# Reports whether hookshop.routing went through the hook, here and in one child process
# started with the multiprocessing method named in argv[1] (if any).
APP = """
import json, sys
import multiprocessing as mp

import hookshop.routing


def report():
    from mycelium_mono.routing.hook import import_records
    record = import_records().get("hookshop.routing")
    return {
        "loader": type(hookshop.routing.__loader__).__name__,
        "outcome": record.outcome.name if record else None,
        "demo": hookshop.routing.run_demo(),
    }


def child(queue):
    queue.put(report())


if __name__ == "__main__":
    result = {"argv": sys.argv[1:], **report()}
    if len(sys.argv) > 1 and sys.argv[1] in mp.get_all_start_methods():
        context = mp.get_context(sys.argv[1])
        queue = context.Queue()
        process = context.Process(target=child, args=(queue,))
        process.start()
        result["child"] = queue.get(timeout=60)
        process.join(timeout=60)
    if len(sys.argv) > 1 and sys.argv[1] == "exit3":
        sys.exit(3)
    print(json.dumps(result))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the hookshop package and app.py (a script) beside it."""
    shutil.copytree(
        HOOKPKGS / "hookshop", tmp_path / "hookshop", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "hookshop" / "app.py").write_text(APP)  # the same, for `run -m hookshop.app`
    return tmp_path


def mycelium_run(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != PACKAGES_ENV}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mycelium_mono", "run", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def run_report(project: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = mycelium_run(project, *args, env=env)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_script_runs_under_the_hook_with_the_packages_beside_it(project: Path) -> None:
    report = run_report(project, "app.py", "one", "--two")
    assert report["argv"] == ["one", "--two"]
    assert report["loader"] == "MyceliumLoader"
    assert report["outcome"] in {"REWRITTEN", "CACHE_HIT"}
    assert report["demo"] == DEMO_RESULT


def test_module_runs_under_the_hook_with_its_own_package(project: Path) -> None:
    report = run_report(project, "-m", "hookshop.app", "x")
    assert report["argv"] == ["x"]
    assert report["loader"] == "MyceliumLoader"
    assert report["demo"] == DEMO_RESULT


def test_packages_option_decides_what_is_rewritten(project: Path) -> None:
    report = run_report(project, "--packages", "somethingelse", "app.py")
    assert report["loader"] == "SourceFileLoader"
    assert report["outcome"] is None
    assert report["demo"] == DEMO_RESULT  # the runtime build gives the same bus


def test_packages_come_from_the_environment_variable(project: Path) -> None:
    outside = run_report(project, "app.py", env={PACKAGES_ENV: "somethingelse"})
    inside = run_report(project, "app.py", env={PACKAGES_ENV: "somethingelse,hookshop"})
    assert (outside["loader"], inside["loader"]) == ("SourceFileLoader", "MyceliumLoader")


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_multiprocessing_children_get_the_hook(project: Path, method: str) -> None:
    report = run_report(project, "app.py", method)
    child = report["child"]
    assert isinstance(child, dict)
    assert child["loader"] == "MyceliumLoader"
    assert child["demo"] == DEMO_RESULT


def test_spawned_child_of_a_module_run_gets_the_hook(project: Path) -> None:
    report = run_report(project, "-m", "hookshop.app", "spawn")
    child = report["child"]
    assert isinstance(child, dict) and child["loader"] == "MyceliumLoader"


def test_exit_status_of_the_script_is_kept(project: Path) -> None:
    assert mycelium_run(project, "app.py", "exit3").returncode == 3


def test_nothing_to_run_is_a_usage_error(project: Path) -> None:
    done = mycelium_run(project, "--packages", "hookshop")
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_a_missing_module_is_one_line_not_a_traceback(project: Path) -> None:
    done = mycelium_run(project, "--packages", "hookshop", "-m", "hookshop.nosuch")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no module named 'hookshop.nosuch'"


def test_script_with_no_package_nearby_asks_for_packages(tmp_path: Path) -> None:
    (tmp_path / "lonely.py").write_text("print('hi')\n")
    done = mycelium_run(tmp_path, "lonely.py")
    assert done.returncode == 2
    assert "help: say which packages" in done.stderr


def test_arguments_after_the_target_belong_to_the_target() -> None:
    request = parse_run_args(["--packages=a,b", "--packages", "c", "app.py", "--packages", "x"])
    assert request == RunRequest("app.py", False, ("--packages", "x"), ("a", "b", "c"))
    assert parse_run_args(["-m", "pkg.mod", "-m"]) == RunRequest("pkg.mod", True, ("-m",), None)


@pytest.mark.parametrize("argv", [[], ["--bogus", "app.py"], ["--packages"], ["-m"]])
def test_bad_run_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError, match="usage:"):
        parse_run_args(argv)


def test_default_packages(project: Path) -> None:
    assert default_script_packages(str(project / "app.py")) == ["hookshop"]
    nested = project / "hookshop" / "sub"
    nested.mkdir()
    (nested / "__init__.py").write_text("")
    assert default_script_packages(str(nested / "tool.py")) == ["hookshop"]
    request = RunRequest("hookshop.app", True, (), None)
    assert resolve_packages(request, {}) == ["hookshop"]
    assert resolve_packages(request, {PACKAGES_ENV: " a , b "}) == ["a", "b"]


def test_a_top_level_module_runs_with_the_packages_beside_it(project: Path) -> None:
    # Issue 15: `run -m app` hooked a package named "app", which is nothing, silently.
    report = run_report(project, "-m", "app", "x")
    assert report["argv"] == ["x"]
    assert report["loader"] == "MyceliumLoader"
    assert report["demo"] == DEMO_RESULT


def test_a_top_level_module_with_no_package_beside_it_asks_for_packages(tmp_path: Path) -> None:
    (tmp_path / "lonely.py").write_text("print('hi')\n")
    done = mycelium_run(tmp_path, "-m", "lonely")
    assert done.returncode == 2
    assert "help: say which packages hold routing modules: --packages" in done.stderr


RUNNERS = {"python -m mycelium_mono": [sys.executable, "-m", "mycelium_mono"],
           "mycelium-mono": [str(Path(sys.executable).parent / "mycelium-mono")]}


def run_with(runner: str, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNNERS[runner], "run", *args], cwd=project, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_missing_script_is_one_line_not_a_traceback(project: Path, runner: str) -> None:
    done = run_with(runner, project, "missing.py")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: cannot run missing.py: no such file (in {project})"


@pytest.mark.parametrize("runner", RUNNERS)
def test_run_help_documents_packages_and_the_environment_variable(project: Path,
                                                                   runner: str) -> None:
    done = run_with(runner, project, "--help")
    assert done.returncode == 0, done.stderr
    assert "--packages PKG[,PKG...]" in done.stdout
    assert f"{PACKAGES_ENV} environment variable" in done.stdout
    assert "-m main            (a module, not a package) the packages beside main.py" in (
        done.stdout)


@pytest.mark.parametrize("args", [(), ("--help",)])
def test_python_m_without_a_command_is_the_whole_command(project: Path, args: tuple[str, ...]
                                                         ) -> None:
    # README: `python -m mycelium_mono` is the same command as `mycelium-mono`; bare or with
    # --help it used to show only run's usage.
    done, same = (subprocess.run([*RUNNERS[runner], *args], cwd=project, capture_output=True,
                                 text=True, timeout=120, check=False)
                  for runner in ("python -m mycelium_mono", "mycelium-mono"))
    assert (done.returncode, done.stdout, done.stderr) == (same.returncode, same.stdout,
                                                           same.stderr)
    for command in ("check", "show", "doctor", "stubs", "cache", "bench", "run"):
        assert command in done.stdout + done.stderr
    assert done.returncode == (0 if args else 2)


def test_an_uncaught_routing_error_underlines_the_name_and_keeps_its_note(project: Path) -> None:
    # Issue 15: Python 3.11's own printer showed one `^` and dropped the first error's note.
    routing = project / "hookshop" / "routing.py"
    routing.write_text(routing.read_text().replace("Shipment = [Auditor]", "Shipment = [Counter]"))
    done = mycelium_run(project, "app.py")

    assert done.returncode == 1
    lines = done.stderr.splitlines()
    at = lines.index("    Shipment = [Counter]")
    assert lines[at + 1] == "                ^^^^^^^"
    assert "note: Counter handles: Order" in lines[at + 2:]
    assert any(line.startswith("help: ") for line in lines[at + 2:])


def test_an_import_error_under_the_hook_shows_the_failing_line(project: Path) -> None:
    handlers = project / "hookshop" / "handlers.py"
    handlers.write_text("import hookshop.nowhere\n" + handlers.read_text())
    done = mycelium_run(project, "app.py")

    assert done.returncode == 1
    assert "error[E0012]: cannot import 'hookshop.handlers'" in done.stderr
    assert ('  File "hookshop/handlers.py", line 1, in <module>\n'
            "    import hookshop.nowhere") in done.stderr
