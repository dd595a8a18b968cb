"""A new user on Python 3.13 walks the README top to bottom in a domain of their own.

The app is a hospital lab (``tests/newuser8_peers``): ``SampleTaken`` -> ``Analyzer`` ->
``ResultReady`` -> ``Notifier`` -> ``PageSent``, a ``Registrar`` beside the analyzer, an
``Auditor`` on two types and an async ``PagerArchive`` on a hybrid route. The wheel built from
this checkout is installed with ``[tcp,nats]`` into one fresh 3.13 venv for the module, and the
app runs there: the tour with the hook, inline on and off, the flexible bus, and the lab and the
ward as two OS processes over ZeroMQ, core NATS and JetStream (the shared server at
127.0.0.1:4222). mypy --strict then checks the app against the stubs written under
``typings/``, as the README's "mypy says MonolithBus has no emit_..." entry says.

What ``tests/test_wheel_fresh_venv.py`` and ``tests/test_stranger_user.py`` already hold (the
commands on a clean app, ZeroMQ between two 3.13 processes, the plugin) is not repeated. The
findings held here: ``check`` reported a failing import the table does not use only once the
table had no other error (README: "every mistake at once"); doctor and stubs listed a broken
table's errors out of the file's order; and an ``on_error`` the bus could not call (the README
named neither signature, and the bus's takes three arguments where the backlog's takes one)
was accepted, then raised its own ``TypeError`` from inside the first failing emit.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers_modules
import pytest
from peers.harness import free_port, reachable
from test_wheel_fresh_venv import _clean_env, _run, wheel_in_fresh_venv

from mycelium_mono import (
    U8,
    BackgroundBacklog,
    MessageHandler,
    message,
    routing_config,
)
from mycelium_mono.bus.transports.nats import NATS_START_HELP

ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).parent / "newuser8_peers"
SHARED_NATS = "nats://127.0.0.1:4222"
SAMPLES = 40
STREAM_PREFIX = "NEWUSER8_"
pytestmark = pytest.mark.multiprocess


@dataclass(frozen=True)
class LabVenv:
    python: Path
    app: Path

    @property
    def command(self) -> str:
        return str(self.python.parent / "mycelium-mono")

    def run(self, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        return _run([str(a) for a in argv], self.app, _clean_env())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabVenv:
    """The wheel with [tcp,nats] in a fresh 3.13 venv, and a copy of the lab beside it."""
    found = helpers_modules.noxfile().find_interpreter("3.13")
    if not hasattr(found, "path"):
        pytest.fail(found.message())
    base = tmp_path_factory.mktemp("newuser8")
    _, python = wheel_in_fresh_venv(base, found.path, "[tcp,nats]")
    app = base / "lab_app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return LabVenv(python, app)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# -- monolith and hybrid ------------------------------------------------------------------


def test_the_tour_main_runs_the_lab_chain_under_the_hook(lab: LabVenv) -> None:
    out = _ok(lab.run(lab.python, "main.py"))

    # Two emits of sample 19 (critical): each reaches the auditor twice and pages once.
    assert out == ("archived page 19\narchived page 19\n"
                   "['result 19', 'page 19', 'result 19', 'page 19'] import hook\n")


@pytest.mark.parametrize(("argv", "origin"), [(["hook"], "import hook"), ([], "runtime")])
def test_inline_true_inlines_every_sync_handler_with_and_without_the_hook(
        lab: LabVenv, argv: list[str], origin: str) -> None:
    out = _ok(lab.run(lab.python, "inline_main.py", *argv)).splitlines()

    assert out[:3] == ["archived page 17", "archived page 18", "archived page 19"]
    assert out[3] == (f"{origin} 4 ['result 16', 'result 17', 'page 17', 'result 18', "
                      "'page 18', 'result 19', 'page 19']")
    # Depth first: a critical result's page comes right after it. Only the async background
    # handler is called; the five sync ones are pasted in, on both build paths.
    assert out[4] == "inlined inlined inlined inlined call inlined"


def test_the_same_services_on_the_flexible_bus_give_the_same_audit(lab: LabVenv) -> None:
    out = _ok(lab.run(lab.python, "flexible.py"))

    assert out == ("archived page 17\narchived page 18\narchived page 19\n"
                   "['page 17', 'page 18', 'page 19', 'result 16', 'result 17', 'result 18', "
                   "'result 19']\n")


# -- across processes -----------------------------------------------------------------------


def _shared_nats() -> str:
    if not reachable("127.0.0.1", 4222):
        pytest.fail("no NATS server at 127.0.0.1:4222 — this test needs one (with JetStream)."
                    f"\nStart it with:\n    {NATS_START_HELP}", pytrace=False)
    return SHARED_NATS


@pytest.fixture
def stream() -> Iterator[str]:
    """A JetStream stream of this test's own, deleted afterwards from the shared server."""
    if reachable("127.0.0.1", 4222):
        # A run killed before its teardown left its stream holding the lab's subjects, and
        # JetStream stores a subject in one stream only: the next run's would be refused.
        asyncio.run(_delete_streams(STREAM_PREFIX))
    name = f"{STREAM_PREFIX}{uuid.uuid4().hex[:10].upper()}"
    yield name
    if reachable("127.0.0.1", 4222):
        asyncio.run(_delete_streams(name))


async def _delete_streams(prefix: str) -> None:
    import nats

    client = await nats.connect(SHARED_NATS)
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
    finally:
        await client.close()


def _wait_for_line(process: subprocess.Popen[str], line: str, timeout: float) -> None:
    """Read the lab's stdout until it says ``line`` (its bus is ready), or fail with its log."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = process.stdout.readline()
        if got.strip() == line:
            return
        if not got and process.poll() is not None:
            break
    process.kill()
    _, err = process.communicate()
    pytest.fail(f"the lab process never printed {line!r} (exit {process.returncode}):\n{err}")


def _addresses(kind: str, stream: str) -> tuple[list[str], list[str]]:
    """argv tails for the lab and the ward: own address, then the peer (or the stream)."""
    if kind == "zmq":
        lab_at, ward_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        return [lab_at, ward_at], [ward_at, lab_at]
    url = _shared_nats()
    return [url, stream], [url, stream]


@pytest.mark.parametrize("kind", ["zmq", "nats", "js"])
def test_the_lab_and_the_ward_in_two_processes(lab: LabVenv, kind: str, stream: str) -> None:
    lab_args, ward_args = _addresses(kind, stream)
    env = _clean_env()
    node = subprocess.Popen([lab.command, "run", "lab_node.py", kind, *lab_args, str(SAMPLES)],
                            cwd=lab.app, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if kind != "zmq":
            # NATS cannot count subscribers (wait_for_subscribers refuses): the lab says when.
            # Over ZeroMQ the lab's ready() waits for the ward, which waits for subscribers.
            _wait_for_line(node, "ready", timeout=30)
        ward = _run([lab.command, "run", "ward_node.py", kind, *ward_args, str(SAMPLES)],
                    lab.app, env)
        lab_out, lab_err = node.communicate(timeout=60)
    finally:
        if node.poll() is None:
            node.kill()
            node.communicate()

    assert ward.returncode == 0, ward.stdout + ward.stderr
    # Every result back, and a page for each critical one: the Notifier in the lab process
    # consumed the ResultReady its neighbour emitted there, and its PageSent crossed over.
    assert ward.stdout == f"ward got {SAMPLES} True [17, 18, 19, 37, 38, 39]\n"
    assert node.returncode == 0, lab_out + lab_err
    assert lab_out.removeprefix("ready\n") == f"lab handled {SAMPLES} {SAMPLES}\n"


# -- typing -------------------------------------------------------------------------------


def test_stubs_under_mypy_path_make_the_lab_pass_mypy_strict(lab: LabVenv,
                                                             tmp_path: Path) -> None:
    for module in ("lab.routing", "lab.routing_fast"):
        _ok(lab.run(lab.command, "stubs", module, "-o", "typings/"))
    scripts = ["main.py", "inline_main.py", "flexible.py", "lab_node.py", "ward_node.py"]
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
            "--python-executable", str(lab.python), "--cache-dir", str(tmp_path / "cache"),
            *scripts]
    env = {**_clean_env(), "MYPYPATH": "typings"}

    typed = subprocess.run(mypy, cwd=lab.app, env=env, capture_output=True, text=True,
                           timeout=240)

    # The wheel's own types (py.typed), the stubs' buses and the README's services, together.
    assert typed.returncode == 0, typed.stdout + typed.stderr
    # Without the stubs mypy sees the routing class as written: the README's symptom.
    bare = subprocess.run(mypy, cwd=lab.app, env=_clean_env(), capture_output=True, text=True,
                          timeout=240)
    assert bare.returncode == 1
    assert '"MonolithBus" has no attribute "emit_sample_taken"' in bare.stdout


# -- check: every mistake at once ---------------------------------------------------------

BROKEN_ROUTING = """\
from mycelium_mono import routing_config, route
from broken_lab.messages import PageSent, ResultReady, SampleTaken  # noqa: F401
from broken_lab.services import Analyzer, Auditor, Notifier, PagerArchive, Registrar
import broken_lab.barcodes

@routing_config
class MonolithBus:
    SampleTaken = [Analyzer, Notifier, Registrar, Registrar]
    ResultReady = [Auditor, Notifer]
    PageSent = [Auditor, PagerArchive]
    Analyzer = [Auditor]
    ward = 7
"""

EXPECTED = [  # (line, column, code, what the help line must say)
    (4, 8, "E0012", "check the module name and that its package is importable"),
    (8, 30, "E0001", "mark a method of Notifier with @handles(SampleTaken)"),
    (8, 51, "E0005", "remove the second one"),
    (9, 29, "E0002", "did you mean `Notifier`?"),
    (10, 26, "E0004", "route(sync=[...], background=[PagerArchive])"),
    (11, 5, "E0003", "decorate Analyzer with @message"),
    (12, 12, "E0007", "a routing class may only contain `Message = [Handler, ...]`"),
]


def _broken_lab(root: Path) -> None:
    package = root / "broken_lab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("messages", "services"):
        text = (APP / "lab" / f"{name}.py").read_text()
        (package / f"{name}.py").write_text(text.replace("from lab.", "from broken_lab."))
    (package / "routing.py").write_text(BROKEN_ROUTING)


def test_check_reports_an_unused_failing_import_with_the_tables_mistakes(tmp_path: Path
                                                                         ) -> None:
    _broken_lab(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "NO_COLOR"}}

    result = subprocess.run([sys.executable, "-m", "mycelium_mono", "check", "broken_lab/"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result.stdout + result.stderr
    blocks = result.stdout.split("\n\n")
    found = [re.match(r"broken_lab/routing\.py:(\d+):(\d+): error\[(E\d{4})\]", b)
             for b in blocks[:-1]]
    # On main the E0012 of `import broken_lab.barcodes` was missing: it appeared only once the
    # six table mistakes were fixed, as a next run's surprise.
    assert [(int(m[1]), int(m[2]), m[3]) for m in found if m] == [e[:3] for e in EXPECTED]
    for block, (line, column, _, advice) in zip(blocks[:-1], EXPECTED, strict=True):
        rows = block.splitlines()
        caret = next(row for row in rows if row.strip(" |").startswith("^"))
        # The line itself, a caret under the name the error is about, and what to do.
        assert BROKEN_ROUTING.splitlines()[line - 1] in block
        assert caret.index("^") - caret.index("|") - 2 == column - 1, block
        assert advice in next(row for row in rows if row.startswith("help: ")), block
    assert blocks[-1].strip() == "error: 7 routing errors in 1 of 1 file"


def test_a_failing_import_the_table_uses_is_reported_once(tmp_path: Path) -> None:
    _broken_lab(tmp_path)
    routing = tmp_path / "broken_lab" / "routing.py"
    routing.write_text(BROKEN_ROUTING.replace("import broken_lab.barcodes",
                                              "from broken_lab.barcodes import Scanner")
                       .replace("Analyzer = [Auditor]", "SampleTaken = [Scanner]"))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "NO_COLOR"}}

    result = subprocess.run([sys.executable, "-m", "mycelium_mono", "check", "broken_lab/"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    # Scanner's failing import is reported where the table uses it, not a second time at the
    # import line.
    assert result.stdout.count("cannot import 'broken_lab.barcodes'") == 1, result.stdout


@pytest.mark.parametrize("command", ["doctor", "stubs", "bench"])
def test_the_other_commands_list_the_tables_mistakes_in_the_order_check_does(
        tmp_path: Path, command: str) -> None:
    _broken_lab(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "NO_COLOR"}}

    result = subprocess.run([sys.executable, "-m", "mycelium_mono", command,
                             "broken_lab.routing"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 1, result.stdout + result.stderr
    found = re.findall(r"broken_lab/routing\.py:(\d+):(\d+): error\[(E\d{4})\]",
                       result.stdout + result.stderr)
    # The table's mistakes (not the unused import: these commands never run the module), in
    # the file's order; the E0007 of the last line was listed first.
    assert [(int(line), int(col), code) for line, col, code in found] == [
        e[:3] for e in EXPECTED if e[2] != "E0012"]


# -- on_error: the two callbacks the README names -----------------------------------------


@message(type_id=8121, topic="lab.spills")
class Spill:
    bench: U8


class SpillKit(MessageHandler[Spill]):
    def handle(self, spill: Spill) -> None:
        raise RuntimeError(f"no absorbent left at bench {spill.bench}")


class SpillLog(MessageHandler[Spill]):
    def __init__(self) -> None:
        self.benches: list[int] = []

    def handle(self, spill: Spill) -> None:
        self.benches.append(spill.bench)


@routing_config
class SpillBus:
    Spill = [SpillKit, SpillLog]


def test_a_bus_on_error_gets_exc_where_and_msg_and_the_later_handler_still_runs() -> None:
    seen: list[tuple[str, str, Spill]] = []
    log = SpillLog()
    bus: Any = SpillBus(spill_kit=SpillKit(), spill_log=log,
                        on_error=lambda exc, where, msg: seen.append((str(exc), where, msg)))

    bus.emit_spill(Spill(bench=3))

    assert seen == [("no absorbent left at bench 3", "spill_kit.handle", Spill(bench=3))]
    assert log.benches == [3]


def test_a_bus_on_error_that_cannot_take_three_arguments_is_refused_when_built() -> None:
    kit, log = SpillKit(), SpillLog()

    # On main the bus was built, and the first failing spill raised "<lambda>() takes 1
    # positional argument but 3 were given" from inside the emit, the spill's error lost.
    with pytest.raises(TypeError, match=re.escape("cannot be called as on_error(exc, where, "
                                                  "msg)")) as refused:
        SpillBus(spill_kit=kit, spill_log=log, on_error=lambda exc: None)

    assert "help: def on_error(exc: Exception, where: str, msg: object) -> None" in str(
        refused.value)
    SpillBus(spill_kit=kit, spill_log=log)  # the refused bus took no service


def test_an_async_on_error_is_refused_since_nothing_would_await_it() -> None:
    async def on_error(exc: Exception, where: str, msg: object) -> None: ...

    with pytest.raises(TypeError, match="is an async def, but it is called as on_error"):
        SpillBus(spill_kit=SpillKit(), spill_log=SpillLog(), on_error=on_error)


def test_the_backlog_on_error_takes_one_argument_and_says_so() -> None:
    BackgroundBacklog(on_error=[].append)  # what the README's one-failure-each means

    with pytest.raises(TypeError, match=re.escape(
            "cannot be called as on_error(exc): missing a required argument: 'where'")):
        BackgroundBacklog(on_error=lambda exc, where, msg: None)
