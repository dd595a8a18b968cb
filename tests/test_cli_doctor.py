"""`mycelium-mono doctor`: each troubleshooting case as a check with a verdict and a fix.

Run for real in a subprocess from a copy of tests/clipkgs, as from a project root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_cli import CHAIN_TO_HYBRID, cli, cli_env, copy_clipkgs, run


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_clipkgs(tmp_path)


def doctor(*args: str, cwd: Path, env: dict[str, str] | None = None,
           python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return cli("doctor", *args, cwd=cwd, env=env, python_flags=python_flags)


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_doctor_finds_a_handler_not_routed_for_a_type_it_handles(project: Path) -> None:
    result = doctor("clishop.unrouted", cwd=project)

    assert result.returncode == 0, result.stderr  # warnings alone do not fail
    lineno = line_of(project / "clishop/unrouted.py", "Signal = [Audit]")
    assert ("[warn] Forgotten not routed: Forgotten.handle handles Signal, but MonolithBus "
            "routes Signal to Audit only, so Forgotten never receives it") in result.stdout
    assert (f"fix: add Forgotten to the list at clishop/unrouted.py:{lineno}: "
            "`Signal = [Audit]`") in result.stdout
    assert "SwapHandlerBase" not in result.stdout  # an abstract base has nothing to call


def test_doctor_finds_a_message_type_no_bus_routes(project: Path) -> None:
    result = doctor("clishop.wrongtype", cwd=project)

    assert ("Audit.on_signal handles Signal, but no bus in clishop.wrongtype routes Signal, so "
            "it is never called") in result.stdout
    assert "fix: add `Signal = [Audit]` to MonolithBus (clishop/wrongtype.py:" in result.stdout


def test_doctor_suggests_the_background_path_for_an_async_handler(project: Path) -> None:
    result = doctor("clishop.needs_args", cwd=project)

    assert "Archive.on_order handles Order, but LedgerBus routes Order to Ledger only" in (
        result.stdout)
    assert ("Archive.on_order is async, so route it in the background at "
            "clishop/needs_args.py:") in result.stdout
    assert "`Order = route(sync=[Ledger], background=[Archive])`" in result.stdout


def test_doctor_on_a_correct_module_passes_every_handler_check(project: Path) -> None:
    result = doctor("clishop.routing", cwd=project)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[ok]   routing table: 1 routing class, 2 routes" in out
    assert "[ok]   unrouted handlers: every handler class found is routed" in out
    assert ("[ok]   MonolithBus constructor: MonolithBus(detector: Detector, risk: Risk, "
            "audit: Audit)") in out
    assert "[ok]   MonolithBus origin: rewritten by the import hook" in out
    assert "MonolithBus.emit_swap " in out and "ns per emit; dict-and-loop" in out
    assert "[FAIL]" not in out and "[warn]   " not in out


def test_doctor_reports_handler_not_found_as_a_failure(project: Path) -> None:
    result = doctor("clishop/broken/e0002.py", cwd=project)

    assert result.returncode == 1
    assert "Handler not found\n  [FAIL] routing table: 1 routing error:" in result.stdout
    assert "error[E0002]: unknown name `Riks`" in result.stdout
    assert "fix: fix each error as its help line says" in result.stdout


def test_doctor_without_the_hook_reports_the_runtime_build(project: Path) -> None:
    result = doctor("--no-hook", "clishop.routing", cwd=project)

    assert result.returncode == 0
    assert ("[warn] MonolithBus origin: built at run time by @routing_config (doctor ran with "
            "--no-hook)") in result.stdout
    assert "install_import_hook(['clishop'])" in result.stdout


def test_doctor_explains_cache_misses_and_hits(project: Path) -> None:
    env = cli_env(PYTHONDONTWRITEBYTECODE=None)

    first = doctor("clishop.routing", cwd=project, env=env)
    second = doctor("clishop.routing", cwd=project, env=env)
    with open(project / "clishop" / "svc.py", "a") as handlers:
        handlers.write("\n# edited\n")
    third = doctor("clishop.routing", cwd=project, env=env)

    assert "hook cache: cache miss before this import (no cache file)" in first.stdout
    assert "the import below rewrites it and writes the cache" in first.stdout
    assert "[ok]   hook cache: cache hit before this import" in second.stdout
    assert "MonolithBus origin: rewritten by the import hook (clishop.routing: loaded from the " \
           "hook's cache)" in second.stdout
    assert ("hook cache: cache miss before this import (a handler or message module changed: "
            f"{project / 'clishop' / 'svc.py'})") in third.stdout


def test_doctor_warns_when_the_cache_can_never_be_written(project: Path) -> None:
    result = doctor("clishop.routing", cwd=project, env=cli_env(PYTHONDONTWRITEBYTECODE="1"))

    assert "sys.dont_write_bytecode is set, so it is never written" in result.stdout
    assert "fix: unset PYTHONDONTWRITEBYTECODE" in result.stdout


def test_doctor_warns_about_dev_mode(project: Path) -> None:
    result = doctor("clishop.routing", cwd=project, python_flags=("-X", "dev"))

    assert "[warn] debug modes: dev mode is on (-X dev or PYTHONDEVMODE)" in result.stdout


def test_doctor_warns_about_an_active_tracer(project: Path) -> None:
    code = ("import sys; sys.settrace(lambda *a: None); from mycelium_mono.cli import main; "
            "raise SystemExit(main(['doctor', 'clishop.routing']))")
    result = run([sys.executable, "-c", code], project)

    assert result.returncode == 0, result.stderr
    assert "[warn] tracer or profiler: sys.gettrace() is <function" in result.stdout


def test_doctor_mentions_a_breakpoint_hook(project: Path) -> None:
    result = doctor("clishop.routing", cwd=project, env=cli_env(PYTHONBREAKPOINT="ipdb.set_trace"))

    assert "[info] PYTHONBREAKPOINT: PYTHONBREAKPOINT=ipdb.set_trace" in result.stdout


def test_doctor_reports_inlining_decisions(project: Path) -> None:
    result = doctor("clishop.routing", cwd=project)

    line = next(text for text in result.stdout.splitlines() if "] inlining: " in text)
    assert "3 handler calls:" in line


def test_doctor_times_a_bus_from_a_factory_when_services_need_arguments(project: Path) -> None:
    without = doctor("clishop.needs_args", cwd=project)
    with_factory = doctor("clishop.needs_args", "--factory", "clishop.needs_args:make_bus",
                          cwd=project)

    assert "[info] LedgerBus constructor: LedgerBus(ledger: Ledger): every routed handler is a " \
           "required argument; cannot construct Ledger()" in without.stdout
    assert "LedgerBus emit timing" not in without.stdout
    assert "LedgerBus emit timing" in with_factory.stdout
    assert "LedgerBus.emit_order " in with_factory.stdout


def test_doctor_json_lists_every_check_with_its_verdict(project: Path) -> None:
    result = doctor("--format", "json", "clishop.unrouted", cwd=project)

    report = json.loads(result.stdout)
    assert report["module"] == "clishop.unrouted"
    verdicts = {(c["topic"], c["name"]): c["verdict"] for c in report["checks"]}
    assert verdicts[("Handler not found", "routing table")] == "ok"
    assert verdicts[("Handler not called", "Forgotten not routed")] == "warn"
    forgotten = next(c for c in report["checks"] if c["name"] == "Forgotten not routed")
    assert forgotten["fix"].startswith("add Forgotten to the list at clishop/unrouted.py:")


def _in_app(project: Path, prelude: str) -> str:
    code = (f"{prelude}\nimport clishop.unrouted\n"
            "from mycelium_mono.cli.doctor import report\nprint(report('clishop.unrouted'))")
    result = run([sys.executable, "-c", code], project)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_report_inside_an_application_sees_its_hook(project: Path) -> None:
    out = _in_app(project, "from mycelium_mono.routing.hook import install_import_hook\n"
                           "install_import_hook(['clishop'])")

    assert "[ok]   MonolithBus origin: rewritten by the import hook (clishop.unrouted: " \
           "rewritten" in out
    assert "[warn] Forgotten not routed" in out


def test_report_inside_an_application_without_the_hook_says_so(project: Path) -> None:
    out = _in_app(project, "")

    assert ("[warn] MonolithBus origin: built at run time by @routing_config (no import hook "
            "saw the import)") in out


def test_doctor_times_an_emit_whose_chain_reaches_a_hybrid_route(project: Path) -> None:
    (project / "clishop" / "chain.py").write_text(CHAIN_TO_HYBRID)
    result = doctor("clishop.chain", cwd=project)

    assert "NoEventLoopError" not in result.stdout
    line = next(text for text in result.stdout.splitlines() if "ChainBus.emit_swap " in text)
    assert "ns per emit" in line


def test_report_called_from_async_code_times_on_a_loop_of_its_own(project: Path) -> None:
    (project / "clishop" / "chain.py").write_text(CHAIN_TO_HYBRID)
    code = ("import asyncio\nfrom mycelium_mono.cli.doctor import report\n"
            "async def main():\n    return report('clishop.chain')\n"
            "print(asyncio.run(main()))")
    result = run([sys.executable, "-c", code], project)

    assert result.returncode == 0, result.stderr
    line = next(text for text in result.stdout.splitlines() if "ChainBus.emit_swap " in text)
    assert "ns per emit" in line


@pytest.mark.parametrize("imported", ["import mycelium_mono", "import mycelium_mono.cli"])
def test_report_as_the_readme_writes_it_needs_no_extra_import(project: Path,
                                                              imported: str) -> None:
    # Issue 15: `mycelium_mono.cli.doctor.report(...)` raised AttributeError after only
    # `import mycelium_mono`.
    code = f"{imported}\nprint(mycelium_mono.cli.doctor.report('clishop.unrouted'))"
    result = run([sys.executable, "-c", code], project)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mycelium-mono doctor clishop.unrouted")
