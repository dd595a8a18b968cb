"""The `mycelium-mono` command, run for real in a subprocess against the packages in tests/clipkgs.

Each test copies tests/clipkgs to a temporary project directory and runs the command there, as a
user would from their project root: `python -m mycelium_mono.cli ...` (the console script's
module) or the installed `mycelium-mono` console script itself.
"""

from __future__ import annotations

import ast
import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_cli import (
    CHAIN_TO_HYBRID,
    CONSOLE_SCRIPT,
    INTO_BACKGROUND,
    cli,
    cli_env,
    copy_clipkgs,
    run,
)

ERROR_TOKENS = {
    # code: the text the caret must sit under, on the line marked `# error here`
    "E0001": "Risk",
    "E0002": "Riks",
    "E0003": "NotAMessage",
    "E0004": "Archive",
    "E0005": "Detector",
    "E0006": "Swap",
    "E0007": "Detector",
    "E0008": "svc",
    "E0009": "fast=True",
    "E0011": "Background",
    "E0012": "Detector",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_clipkgs(tmp_path)


def marked_line(path: Path) -> tuple[int, str]:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.endswith("# error here"):
            return number, line
    raise AssertionError(f"{path} has no line marked `# error here`")


# --- check ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(ERROR_TOKENS))
def test_check_reports_each_error_code_compiler_style(project: Path, code: str) -> None:
    relative = f"clishop/broken/{code.lower()}.py"
    result = cli("check", relative, cwd=project)

    assert result.returncode == 1, result.stderr
    lineno, line = marked_line(project / relative)
    token = ERROR_TOKENS[code]
    col = line.rindex(token) + 1
    lines = result.stdout.splitlines()
    header = next(i for i, text in enumerate(lines)
                  if text.startswith(f"{relative}:{lineno}:{col}: error[{code}]: "))
    gutter = " " * len(str(lineno))
    assert lines[header + 2] == f"{lineno} | {line}"
    assert lines[header + 3] == f"{gutter} | {' ' * (col - 1)}{'^' * len(token)}"
    assert any(text.startswith("help: ") for text in lines[header + 4:])
    assert "\x1b[" not in result.stdout  # not a terminal: no colour


def test_check_exits_zero_and_says_ok_for_a_correct_module(project: Path) -> None:
    result = cli("check", "clishop.routing", "clishop/hybrid.py", cwd=project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "clishop/routing.py: 1 routing class ok" in result.stdout
    assert "clishop/hybrid.py: 1 routing class ok" in result.stdout


def test_check_reports_every_error_of_every_file_at_once(project: Path) -> None:
    result = cli("check", "clishop/broken/many.py", "clishop.routing",
                 "clishop/broken/e0001.py", cwd=project)

    assert result.returncode == 1
    codes = re.findall(r"^clishop/broken/\S+: error\[(E\d{4})\]", result.stdout, re.MULTILINE)
    assert sorted(codes) == ["E0001", "E0002", "E0002", "E0005"]
    assert result.stdout.rstrip().endswith("error: 4 routing errors in 2 of 3 files")


def test_check_a_directory_checks_every_routing_module_under_it(project: Path) -> None:
    result = cli("check", "clishop", cwd=project)

    assert result.returncode == 1
    for code in ERROR_TOKENS:
        assert f"clishop/broken/{code.lower()}.py:" in result.stdout
    assert "clishop/routing.py" not in result.stdout  # clean files are only counted
    assert result.stdout.rstrip().endswith("error: 14 routing errors in 12 of 18 files")


def test_check_json_format_parses_with_positions(project: Path) -> None:
    result = cli("check", "--format", "json", "clishop/broken/many.py", "clishop.routing",
                 cwd=project)

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["error_count"] == 3
    broken, clean = report["files"]
    assert clean == {"path": "clishop/routing.py", "module": "clishop.routing",
                     "routing_classes": 1, "diagnostics": []}
    duplicate = next(d for d in broken["diagnostics"] if d["code"] == "E0005")
    source = (project / "clishop/broken/many.py").read_text().splitlines()
    lineno = next(n for n, text in enumerate(source, 1) if "Risk, Risk" in text)
    column = source[lineno - 1].rindex("Risk") + 1
    assert (duplicate["line"], duplicate["column"]) == (lineno, column)
    assert duplicate["end_column"] == column + len("Risk")
    assert duplicate["help"] and duplicate["path"] == "clishop/broken/many.py"


def test_check_json_for_a_clean_module_exits_zero(project: Path) -> None:
    result = cli("check", "--format", "json", "clishop/routing.py", cwd=project)

    assert result.returncode == 0
    assert json.loads(result.stdout)["ok"] is True


def test_check_unknown_module_is_a_usage_error_with_help(project: Path) -> None:
    result = cli("check", "clishop.nosuch", cwd=project)

    assert result.returncode == 2
    assert "no module named 'clishop.nosuch'" in result.stderr
    assert "help: " in result.stderr


def test_check_missing_file_is_a_usage_error(project: Path) -> None:
    result = cli("check", "clishop/nosuch.py", cwd=project)

    assert result.returncode == 2
    assert "clishop/nosuch.py: no such file" in result.stderr


def test_check_without_arguments_is_a_usage_error(project: Path) -> None:
    result = run([str(CONSOLE_SCRIPT), "check"], project)

    assert result.returncode == 2
    assert "usage: mycelium-mono check" in result.stderr


def test_check_through_the_console_script(project: Path) -> None:
    result = run([str(CONSOLE_SCRIPT), "check", "clishop.broken.e0002"], project)

    assert result.returncode == 1
    assert "error[E0002]: unknown name `Riks`" in result.stdout


def test_python_dash_m_mycelium_mono_reaches_the_same_command(project: Path) -> None:
    result = run([sys.executable, "-m", "mycelium_mono", "check", "clishop/broken/e0003.py"],
                 project)

    assert result.returncode == 1
    assert "error[E0003]: `NotAMessage` is not a message class" in result.stdout


def test_check_a_module_whose_package_fails_to_import_is_a_usage_error(project: Path) -> None:
    broken = project / "brokenpkg"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('no config')\n")
    (broken / "routing.py").write_text("")

    result = cli("check", "brokenpkg.routing", cwd=project)

    assert result.returncode == 2
    assert "importing the packages around 'brokenpkg.routing' raised RuntimeError: no config" in (
        result.stderr)


def test_check_reports_a_handler_module_that_raises_on_import(project: Path) -> None:
    (project / "clishop" / "boom.py").write_text("raise RuntimeError('no database')\n")
    (project / "clishop" / "boomrouting.py").write_text(
        "from mycelium_mono import routing_config\n"
        "from clishop.msgs import Swap\n"
        "from clishop.boom import Detector\n\n\n"
        "@routing_config\nclass Bus:\n    Swap = [Detector]\n"
    )

    result = cli("check", "clishop/boomrouting.py", cwd=project)

    assert result.returncode == 1
    assert ("error[E0012]: importing a module named by the routing table raised RuntimeError: "
            "no database") in result.stdout
    assert "clishop/boomrouting.py:3:1: error[E0012]" in result.stdout  # the import line
    assert ('  File "clishop/boom.py", line 1, in <module>\n'
            "    raise RuntimeError('no database')") in result.stdout  # where it was raised


def test_check_reports_a_syntax_error_as_a_diagnostic(project: Path) -> None:
    (project / "clishop" / "typo.py").write_text("from x import (\n")
    result = cli("check", "clishop/typo.py", cwd=project)

    assert result.returncode == 1
    assert "clishop/typo.py:1:" in result.stdout
    assert "error[syntax]: invalid Python syntax" in result.stdout


def _run_on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mycelium_mono.cli", *args], cwd=cwd,
                               env=env, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode()


def test_check_colours_a_terminal_unless_no_color_is_set(project: Path) -> None:
    args = ["check", "clishop/broken/e0001.py"]

    coloured = _run_on_a_terminal(args, project, cli_env())
    plain = _run_on_a_terminal(args, project, cli_env(NO_COLOR="1"))

    assert "\x1b[31merror[E0001]" in coloured
    assert "error[E0001]" in plain and "\x1b[" not in plain


# --- show -----------------------------------------------------------------------------------


def test_show_prints_the_generated_bus_and_how_each_handler_is_called(project: Path) -> None:
    result = cli("show", "clishop.routing", cwd=project)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "class MonolithBus(_mycelium_monolith.GeneratedBus):" in out
    assert "def emit_swap(self, msg: Swap) -> None:" in out
    assert "self.detector.handle(msg)" in out
    assert "# How each handler is called:" in out
    assert re.search(r"^#\s+emit_swap → detector\.handle\s+(call|inlined)\s+\(.+\)$", out,
                     re.MULTILINE)
    assert re.search(r"^#\s+emit_signal → audit\.on_signal\s+(call|inlined)\s+\(.+\)$", out,
                     re.MULTILINE)
    ast.parse(out)  # code plus comments: what was shown is Python


def test_show_whole_module_includes_the_rest_of_the_module(project: Path) -> None:
    result = cli("show", "--whole-module", "clishop/routing.py", cwd=project)

    assert result.returncode == 0
    assert "SHOP_NAME = 'clishop'" in result.stdout
    assert "import mycelium_mono.monolith as _mycelium_monolith" in result.stdout


def test_show_a_broken_module_prints_its_errors_and_exits_one(project: Path) -> None:
    result = cli("show", "clishop.broken.e0004", cwd=project)

    assert result.returncode == 1
    assert "error[E0004]" in result.stderr


def test_show_a_module_without_routing_class_is_a_usage_error(project: Path) -> None:
    result = cli("show", "clishop.msgs", cwd=project)

    assert result.returncode == 2
    assert "no @routing_config class" in result.stderr


# --- bench ----------------------------------------------------------------------------------


def test_bench_times_every_emit_against_dict_and_loop(project: Path) -> None:
    result = cli("bench", "clishop.routing", "--number", "300", "--repeat", "1", cwd=project)

    assert result.returncode == 0, result.stderr
    assert "MonolithBus (built by the import hook;" in result.stdout
    for emit, handlers in (("emit_swap", "Swap → 2 handlers"), ("emit_signal",
                                                                "Signal → 1 handler")):
        line = next(text for text in result.stdout.splitlines() if f"MonolithBus.{emit} " in text)
        assert handlers in line
        assert re.search(r"[\d.]+ ns per emit; dict-and-loop +[\d.]+ ns; [\d.]+x (faster|slower)$",
                         line)


def test_bench_split_routes_time_the_sync_path(project: Path) -> None:
    result = cli("bench", "clishop.hybrid", "--number", "200", "--repeat", "1", cwd=project)

    assert result.returncode == 0, result.stderr
    assert "HybridBus.emit_swap_sync" in result.stdout


def test_bench_says_which_handler_refused_its_message_and_why(project: Path) -> None:
    result = cli("bench", "clishop.fussy", "--number", "100", "--repeat", "1", cwd=project)

    assert result.returncode == 0, result.stderr
    line = next(text for text in result.stdout.splitlines() if "FussyBus.emit_swap" in text)
    assert "not timed" in line
    assert "(fussy.handle)" in line  # which handler: from the ExceptionGroup
    assert "ValueError: amount must be positive" in line  # why: from its first leaf


def test_bench_asks_for_a_factory_when_a_service_needs_arguments(project: Path) -> None:
    result = cli("bench", "clishop.needs_args", cwd=project)

    assert result.returncode == 2
    assert "cannot construct Ledger()" in result.stderr
    assert "help: pass --factory module:function" in result.stderr


def test_bench_uses_the_factory_bus(project: Path) -> None:
    result = cli("bench", "clishop.needs_args", "--factory", "clishop.needs_args:make_bus",
                 "--number", "200", "--repeat", "1", cwd=project)

    assert result.returncode == 0, result.stderr
    assert "LedgerBus.emit_order" in result.stdout
    assert "ns per emit" in result.stdout


def test_bench_refuses_a_module_with_routing_errors(project: Path) -> None:
    result = cli("bench", "clishop.broken.e0001", cwd=project)

    # Exit 1 with the errors themselves, as show, stubs and doctor: routing errors are the
    # problems the command found, not a usage error (exit 2).
    assert result.returncode == 1
    assert "error[E0001]" in result.stderr and "^" in result.stderr


# --- cache ----------------------------------------------------------------------------------


def _import_under_hook(project: Path, module: str) -> None:
    code = ("from mycelium_mono.routing.hook import install_import_hook; "
            f"install_import_hook(['clishop']); import {module}")
    subprocess.run([sys.executable, "-c", code], cwd=project, check=True, timeout=120,
                   env=cli_env(PYTHONDONTWRITEBYTECODE=None))


def test_cache_info_lists_the_hook_cache_files(project: Path) -> None:
    _import_under_hook(project, "clishop.routing")

    result = cli("cache", "info", cwd=project)

    assert result.returncode == 0
    assert re.search(r"clishop/__pycache__/routing\.cpython-\d+\.mycelium\.pyc  \[current\]$",
                     result.stdout, re.MULTILINE)
    assert "1 cache file (*.mycelium.pyc)" in result.stdout


def test_cache_info_says_why_a_cache_file_is_stale(project: Path) -> None:
    _import_under_hook(project, "clishop.routing")
    with open(project / "clishop" / "svc.py", "a") as handlers:
        handlers.write("\n# edited\n")

    result = cli("cache", "info", cwd=project)

    assert (f"[stale (a handler or message module changed: {project / 'clishop' / 'svc.py'})]"
            in result.stdout)


def test_cache_clean_dry_run_deletes_nothing_then_clean_deletes(project: Path) -> None:
    _import_under_hook(project, "clishop.routing")
    cached = list(project.glob("clishop/__pycache__/*.mycelium.pyc"))
    assert len(cached) == 1

    dry = cli("cache", "clean", "-n", cwd=project)
    assert dry.returncode == 0
    assert f"would remove {cached[0]}" in dry.stdout
    assert cached[0].exists()

    clean = cli("cache", "clean", str(project), cwd=project)
    assert clean.returncode == 0
    assert "removed 1 cache file" in clean.stdout
    assert not cached[0].exists()
    standard = list(project.glob("clishop/__pycache__/msgs.cpython-*.pyc"))
    assert len(standard) == 1  # importlib's own bytecode is not ours to delete


# --- run ------------------------------------------------------------------------------------


def test_run_script_runs_under_the_hook_and_keeps_its_exit_status(project: Path) -> None:
    script = project / "main.py"
    script.write_text((project / "clishop" / "runme.py").read_text())
    result = run([str(CONSOLE_SCRIPT), "run", "--packages", "clishop", "main.py", "3"], project)

    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "origin=import hook args=['3']"


def test_run_module_passes_options_through_to_the_target(project: Path) -> None:
    result = run([str(CONSOLE_SCRIPT), "run", "-m", "clishop.runme", "0", "-v"], project)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "origin=import hook args=['0', '-v']"


def test_bench_times_an_emit_whose_chain_reaches_a_hybrid_route(project: Path) -> None:
    # Issue 15: with no event loop the chain's background half failed, and bench printed
    # "not timed (a handler raised ... NoEventLoopError)", blaming Forwarder.
    (project / "clishop" / "chain.py").write_text(CHAIN_TO_HYBRID)
    result = cli("bench", "clishop.chain", "--number", "300", "--repeat", "2", cwd=project)

    assert result.returncode == 0, result.stderr
    line = next(text for text in result.stdout.splitlines() if "ChainBus.emit_swap " in text)
    assert re.search(r"Swap → 1 handler: +[\d.]+ ns per emit; dict-and-loop", line), line
    assert "not timed" not in result.stdout


def test_bench_times_more_emits_than_the_background_backlog_holds(project: Path) -> None:
    # 20,000 timed emits (the default) each queued a call into the 10,000-call backlog: bench
    # died with an ExceptionGroup/BacklogFull traceback. It now drains between chunks.
    (project / "clishop" / "intobg.py").write_text(INTO_BACKGROUND)
    result = cli("bench", "clishop.intobg", "--repeat", "1", cwd=project)

    assert result.returncode == 0, result.stderr
    assert "best of 1 x 20000 emits" in result.stdout
    line = next(text for text in result.stdout.splitlines()
                if "IntoBackground.emit_swap " in text)
    assert re.search(r"Swap → 1 handler: +[\d.]+ ns per emit; dict-and-loop", line), line
    assert "Traceback" not in result.stderr


def test_bench_drains_a_small_backlog_between_chunks_and_all_calls_run(project: Path) -> None:
    (project / "clishop" / "intobg.py").write_text(INTO_BACKGROUND)
    code = ("from mycelium_mono.cli.bench import time_bus\n"
            "from mycelium_mono.cli.target import find_target, resolved_tables\n"
            "from clishop.intobg import small_backlog\n"
            "bus = small_backlog()\n"
            "(table,), _ = resolved_tables(find_target('clishop.intobg'))\n"
            "[swap, _] = time_bus(bus, table, number=1000, repeat=2)\n"
            "print(swap.error, bus.store.stored, len(bus.background))")
    result = run([sys.executable, "-c", code], project)

    assert result.returncode == 0, result.stderr
    # One untimed emit, then 2 runs x (1000 bus emits + 1000 dict-and-loop calls), each one
    # call queued and run: 64 at a time, none refused, none left over.
    assert result.stdout.split() == ["None", str(1 + 2 * 2 * 1000), "0"]


def test_bench_says_when_one_emit_queues_more_than_the_backlog_holds(project: Path) -> None:
    (project / "clishop" / "intobg.py").write_text(INTO_BACKGROUND)
    for factory, expected in (
        # The untimed emit already overflows a 2-call backlog: reported, not a traceback.
        ("three_per_emit", "not timed (a handler raised on an all-zero Swap: IntoBackground"
                           ".emit_swap: 1 handler(s) failed (forwarder.handle) (1 sub-exception)"
                           ": BacklogFull: background backlog is full (2 calls"),
        # Queues nothing on the untimed emit, two per emit after: a chunk of free room
        # overflows, and the run says so.
        ("more_after_the_first", "not timed (timing 20000 emits failed: IntoBackground.emit_swap"
                                 ": 1 handler(s) failed (forwarder.handle) (1 sub-exception): "
                                 "BacklogFull: background backlog is full (64 calls"),
    ):
        result = cli("bench", "clishop.intobg", "--factory", f"clishop.intobg:{factory}",
                     "--repeat", "1", cwd=project)

        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        line = next(text for text in result.stdout.splitlines()
                    if "IntoBackground.emit_swap " in text)
        assert expected in line, line


# --- check: one package at a time, skipped trees, E0012's traceback (issue 15) ---------------


def _write_app(root: Path, package: str, type_id: int) -> None:
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "msgs.py").write_text(
        f"from mycelium_mono import U64, message\n\n\n@message(type_id={type_id})\n"
        "class Ping:\n    n: U64\n")
    (root / package / "svc.py").write_text(
        f"from mycelium_mono import MessageHandler\n\nfrom {package}.msgs import Ping\n\n\n"
        "class Pong(MessageHandler[Ping]):\n    def handle(self, ping: Ping) -> None:\n"
        "        pass\n")
    (root / package / "routing.py").write_text(
        f"from mycelium_mono import routing_config\n\nfrom {package}.msgs import Ping\n"
        f"from {package}.svc import Pong\n\n\n@routing_config\nclass Bus:\n    Ping = [Pong]\n")


def test_check_a_directory_checks_each_package_on_its_own(tmp_path: Path) -> None:
    # Two applications may reuse a type_id; imported into one process they collided (E0012).
    _write_app(tmp_path, "north", 7001)
    _write_app(tmp_path, "south", 7001)
    result = cli("check", ".", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "north/routing.py: 1 routing class ok" in result.stdout
    assert "south/routing.py: 1 routing class ok" in result.stdout


def test_check_still_finds_the_errors_of_each_package(tmp_path: Path) -> None:
    _write_app(tmp_path, "north", 7001)
    _write_app(tmp_path, "south", 7001)
    routing = tmp_path / "south" / "routing.py"
    routing.write_text(routing.read_text().replace("Ping = [Pong]", "Ping = [Pong, Pong]"))
    result = cli("check", "--format", "json", ".", cwd=tmp_path)

    assert result.returncode == 1
    files = {f["path"]: f for f in json.loads(result.stdout)["files"]}
    assert files["north/routing.py"]["diagnostics"] == []
    assert [d["code"] for d in files["south/routing.py"]["diagnostics"]] == ["E0005"]
    assert files["south/routing.py"]["diagnostics"][0]["line"] == 9


def test_check_skips_virtual_environments_and_vendored_trees_and_says_so(tmp_path: Path) -> None:
    _write_app(tmp_path, "north", 7001)
    for tree in ("venv/lib/python3.11/site-packages/other", "node_modules/pkg"):
        (tmp_path / tree).mkdir(parents=True)
        (tmp_path / tree / "routing.py").write_text("routing_config = 1 / 0\n")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    result = cli("check", ".", cwd=tmp_path)

    assert result.returncode == 0, result.stdout
    assert "note: skipped venv/: a virtual environment (pyvenv.cfg)" in result.stdout
    assert "note: skipped node_modules/: vendored JavaScript packages" in result.stdout
    assert "routing.py" not in result.stdout.replace("north/routing.py", "")


def test_check_json_lists_what_it_skipped(tmp_path: Path) -> None:
    _write_app(tmp_path, "north", 7001)
    (tmp_path / "node_modules").mkdir()
    result = cli("check", "--format", "json", ".", cwd=tmp_path)

    assert json.loads(result.stdout)["skipped"] == [
        {"path": "node_modules", "reason": "vendored JavaScript packages"}]


def test_e0012_shows_the_line_of_the_handler_module_whose_import_failed(project: Path) -> None:
    svc = project / "clishop" / "svc.py"
    svc.write_text(svc.read_text().replace(
        "from clishop.msgs import Signal, Swap\n",
        "from clishop.msgs import Signal, Swap\nfrom clishop.missing import Thing\n"))
    lineno = line_of(svc, "from clishop.missing import Thing")
    result = cli("check", "clishop/routing.py", cwd=project)

    assert result.returncode == 1
    assert "error[E0012]: cannot import 'clishop.svc': No module named 'clishop.missing'" in (
        result.stdout)
    assert (f'note: the import failed here (most recent call last):\n'
            f'  File "clishop/svc.py", line {lineno}, in <module>\n'
            "    from clishop.missing import Thing\n") in result.stdout
    assert "importlib" not in result.stdout  # only the user's frames


def test_check_json_counts_a_routing_class_that_failed(project: Path) -> None:
    result = cli("check", "--format", "json", "clishop/broken/e0001.py", cwd=project)

    [file] = json.loads(result.stdout)["files"]
    assert file["routing_classes"] == 1
    assert [d["code"] for d in file["diagnostics"]] == ["E0001"]


def test_an_import_that_raises_is_one_help_line_at_the_import_statement(project: Path) -> None:
    msgs = project / "clishop" / "msgs.py"
    msgs.write_text(msgs.read_text() + "\n\n@message(type_id=6101)\nclass Again:\n    n: U64\n")
    result = cli("check", "clishop/routing.py", cwd=project)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    lineno = line_of(project / "clishop" / "routing.py", "from clishop.msgs import")
    assert lines[0].startswith(f"clishop/routing.py:{lineno}:1: error[E0012]: importing a "
                               "module named by the routing table raised MessageError: "
                               "type_id 6101 is used")
    assert sum(line.startswith("help: ") for line in lines) == 1
    assert "^^^^^^^^^^" in result.stdout  # under the import line, not one caret at 1:1


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)
