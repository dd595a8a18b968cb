"""A new user on Python 3.12 follows the README top to bottom, in a hospital ward.

The app (``tests/newuser9_app``): ``VitalsReading`` -> ``VitalsMonitor`` -> ``TriageDecision``
-> ``TriageNurse`` -> ``PagerAlert`` -> ``Pager``, an ``AuditLog`` on two types with ``@handles``,
an async ``ChartArchive`` on a hybrid route, and a ``Handover`` nobody routes. The wheel built
from this checkout is installed alone (the README's monolith and hybrid need no extra) into one
fresh 3.12.1 venv for the module; every ``mycelium-mono`` subcommand the README documents runs
from that venv on a copy of the app, and the common slips of a tired person (a typo in a handler
name, a handler that does not handle the message, a class left out of an import, a misspelled
module, a wrong signature, an unknown message, a circular emit) are made one at a time.

What ``test_stranger6_cli6.py`` (a 3.12 kitchen) and ``test_stranger8_newuser8.py`` (a 3.13 lab,
across processes) hold is not repeated. Findings fixed here:

- a circular emit (the pager's handler re-emitting the triage decision that pages it) ended in
  ~400 nested ``ExceptionGroup``s, one per emit; Python prints ten, so the ``RecursionError``
  itself never showed. Now one ``EmitCycleError`` (a ``RecursionError``) names the cycle;
- a class left out of ``from ward.services import ...`` said "import Pager (or define it)"; it
  now says which import to add it to;
- ``from ward.service import ...`` (one letter short) said "check the module name"; it now asks
  "did you mean `ward.services`?".
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_wheel_fresh_venv import _clean_env, _run, wheel_in_fresh_venv

from mycelium_mono import U8, MessageHandler, message, routing_config
from mycelium_mono.handlers import EmitCycleError

APP = Path(__file__).parent / "newuser9_app"
pytestmark = pytest.mark.multiprocess
Result = subprocess.CompletedProcess[str]


def _python312() -> Path:
    found = subprocess.run(["pyenv", "prefix", "3.12.1"], capture_output=True, text=True,
                           check=False)
    python = Path(found.stdout.strip()) / "bin" / "python3.12"
    if found.returncode != 0 or not python.is_file():
        pytest.fail("this test needs CPython 3.12.1 from pyenv\nhelp: pyenv install 3.12.1")
    return python


@dataclass(frozen=True)
class Ward:
    python: Path
    app: Path  # a pristine copy; each test that edits works on its own copy

    def cli(self, *argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Result:
        return _run([str(self.python.parent / "mycelium-mono"), *map(str, argv)], cwd,
                    env or _clean_env())

    def py(self, *argv: str | Path, cwd: Path) -> Result:
        return _run([str(self.python), *map(str, argv)], cwd, _clean_env())


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> Ward:
    base = tmp_path_factory.mktemp("newuser9")
    _, python = wheel_in_fresh_venv(base, _python312(), "")
    app = base / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return Ward(python, app)


@pytest.fixture
def app(ward: Ward, tmp_path: Path) -> Path:
    where = tmp_path / "ward_app"
    shutil.copytree(ward.app, where)
    return where


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _ok(result: Result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


EXPECTED_RUN = {"origin": "import hook",
                "audit": ["triage bed 7 level 1", "page 5551 bed 7", "triage bed 8 level 3"],
                "pages": [[5551, 7]], "charted": [7]}


# -- the tour: main.py, run ---------------------------------------------------------------


@pytest.mark.parametrize("argv", [["python", "main.py"], ["run", "main.py"],
                                  ["run", "-m", "main"], ["run", "--packages", "ward", "main.py"]])
def test_the_ward_runs_on_312_as_the_tour_and_under_run(ward: Ward, argv: list[str]) -> None:
    result = (ward.py(*argv[1:], cwd=ward.app) if argv[0] == "python"
              else ward.cli(*argv, cwd=ward.app))

    out = _ok(result).splitlines()
    # Depth first: bed 7's triage, then its page, then bed 8; the background chart after drain.
    assert out[0] == "charted page for bed 7"
    assert json.loads(out[1]) == EXPECTED_RUN


def test_run_warns_about_a_package_typo_on_stderr(ward: Ward) -> None:
    result = ward.cli("run", "--packages", "wrad", "main.py", cwd=ward.app)

    assert result.returncode == 0, result.stderr
    assert "no package named 'wrad' is importable here" in result.stderr


# -- check, show, doctor, bench, stubs, cache on the healthy ward --------------------------


def test_check_is_clean_in_text_and_json_and_a_usage_error_exits_two(ward: Ward) -> None:
    assert _ok(ward.cli("check", "ward", cwd=ward.app)) == "ward/routing.py: 1 routing class ok\n"
    report = json.loads(_ok(ward.cli("check", "ward/", "--format", "json", cwd=ward.app)))
    assert (report["ok"], report["error_count"]) == (True, 0), report
    assert [(f["path"], f["routing_classes"]) for f in report["files"]] == [("ward/routing.py", 1)]

    wrong = ward.cli("check", "ward.nosuch", cwd=ward.app)
    assert wrong.returncode == 2
    assert "no module named 'ward.nosuch'" in wrong.stderr
    assert "help: run the command from your project's root directory" in wrong.stderr


def test_show_prints_the_ward_bus_and_how_each_handler_is_called(ward: Ward) -> None:
    out = _ok(ward.cli("show", "ward.routing", cwd=ward.app))

    assert "def emit_triage_decision(self, msg: TriageDecision) -> None:" in out
    assert "self.audit_log.on_triage(msg)" in out and "self.triage_nurse.handle(msg)" in out
    assert "async def emit_pager_alert_async(self, msg: PagerAlert) -> None:" in out
    assert "self.background.submit(self.emit_pager_alert_async, msg)" in out
    assert re.search(r"emit_pager_alert → chart_archive\.handle +call +\(background path", out)
    assert "def make_bus" not in out
    assert "def make_bus() -> WardBus:" in _ok(ward.cli("show", "ward.routing",
                                                        "--whole-module", cwd=ward.app))


def test_doctor_finds_the_unrouted_handover_and_points_at_the_routing_class(ward: Ward) -> None:
    result = ward.cli("doctor", "ward.routing", "--no-timing", cwd=ward.app)

    out = _ok(result)
    assert ("[warn] Handover not routed: Handover.handle handles AuditEntry, but no bus in "
            "ward.routing routes AuditEntry") in out
    lineno = (ward.app / "ward" / "routing.py").read_text().splitlines().index(
        "class WardBus:") + 1
    assert f"fix: add `AuditEntry = [Handover]` to WardBus (ward/routing.py:{lineno})" in out
    assert "[ok]   WardBus origin: rewritten by the import hook" in out
    assert "ns per emit" not in out  # --no-timing: the services are not called
    assert out.rstrip().endswith("0 failures, 2 warnings")


def test_doctor_and_bench_time_the_emits_and_say_which_one_raised(ward: Ward) -> None:
    doctor = _ok(ward.cli("doctor", "ward.routing", cwd=ward.app))
    bench = _ok(ward.cli("bench", "ward.routing", "--factory", "ward.routing:make_bus",
                         "--number", "200", "--repeat", "1", cwd=ward.app))

    for out in (doctor, bench):
        assert out.count("ns per emit; dict-and-loop") == 2, out
        # An all-zero TriageDecision has level 0, which ON_CALL has no pager for: said, not
        # hidden, and the other emits are still timed.
        assert ("WardBus.emit_triage_decision   TriageDecision → 2 handlers: not timed (a "
                "handler raised on an all-zero TriageDecision") in out, out
        assert "KeyError: 0" in out
        assert "printed" in out and "lines to stdout while timed, not shown" in out


def test_cache_info_clean_dry_run_and_clean(ward: Ward, app: Path) -> None:
    env = {k: v for k, v in _clean_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    _ok(ward.cli("run", "main.py", cwd=app, env=env))
    cached = next((app / "ward" / "__pycache__").glob("routing.cpython-312.mycelium.pyc"))

    assert f"{cached}  [current]" in _ok(ward.cli("cache", "info", cwd=app))
    _edit(app / "ward" / "services.py", "ON_CALL = {1: 5551, 2: 5552}",
          "ON_CALL = {1: 5551, 2: 5553}")
    assert (f"{cached}  [stale (a handler or message module changed: "
            f"{app / 'ward' / 'services.py'})]") in _ok(ward.cli("cache", "info", cwd=app))
    dry = _ok(ward.cli("cache", "clean", "-n", cwd=app))
    assert f"would remove {cached}" in dry and "nothing was deleted (dry run)" in dry
    assert cached.exists()
    assert f"removed {cached}" in _ok(ward.cli("cache", "clean", cwd=app))
    assert not cached.exists()


def test_stubs_make_mypy_strict_pass_the_ward_and_catch_three_slips(ward: Ward,
                                                                    app: Path) -> None:
    assert "wrote " in _ok(ward.cli("stubs", "ward.routing", "-o", "typings/", cwd=app))

    def mypy(*scripts: str, stubs: bool = True) -> Result:
        env = {**_clean_env(), **({"MYPYPATH": "typings"} if stubs else {})}
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
             "--python-executable", str(ward.python), "--python-version", "3.12",
             "--cache-dir", str(app / ".mypy_cache"), *scripts],
            cwd=app, env=env, capture_output=True, text=True, timeout=240)

    typed = mypy("typed_ok.py")
    assert typed.returncode == 0, typed.stdout + typed.stderr
    wrong = mypy("typed_wrong.py")
    assert wrong.returncode == 1
    errors = sorted(re.findall(r"typed_wrong\.py:(\d+): error: .*\[([a-z-]+)\]", wrong.stdout))
    assert errors == [("6", "arg-type"), ("7", "attr-defined"), ("8", "arg-type")], wrong.stdout
    # Without the stubs mypy sees the routing class as written: the README's symptom.
    bare = mypy("typed_ok.py", stubs=False)
    assert '"WardBus" has no attribute "emit_vitals_reading"' in bare.stdout


# -- a tired person's slips: check and the hook say the same, with a caret and a fix --------

ROUTING = "ward/routing.py"
SERVICES = "ward/services.py"


@dataclass(frozen=True)
class Slip:
    file: str
    old: str
    new: str
    code: str
    line: str     # the routing line shown
    under: str    # the name the caret is under
    advice: str   # what the help line says


SLIPS = {
    "handler-typo": Slip(ROUTING, "[AuditLog, TriageNurse]", "[AuditLog, TriageNures]",
                         "E0002", "    TriageDecision = [AuditLog, TriageNures]", "TriageNures",
                         "did you mean `TriageNurse`?"),
    "handler-does-not-handle": Slip(
        ROUTING, "VitalsReading = [VitalsMonitor]", "VitalsReading = [VitalsMonitor, Pager]",
        "E0001", "    VitalsReading = [VitalsMonitor, Pager]", "Pager",
        "mark a method of Pager with @handles(VitalsReading)"),
    "left-out-of-the-import": Slip(
        ROUTING, "ChartArchive, Pager, TriageNurse", "ChartArchive, TriageNurse", "E0002",
        "    PagerAlert = route(sync=[AuditLog, Pager], background=[ChartArchive])", "Pager",
        "add Pager to `from ward.services import ...` above the routing class"),
    "module-typo": Slip(
        ROUTING, "from ward.services import", "from ward.service import", "E0012",
        "    VitalsReading = [VitalsMonitor]", "VitalsMonitor",
        "did you mean `ward.services`? else check the module name"),
    "wrong-signature": Slip(
        SERVICES, "def page(self, alert: PagerAlert) -> None:",
        "def page(self, alert: PagerAlert, urgent: bool) -> None:", "E0013",
        "    PagerAlert = route(sync=[AuditLog, Pager], background=[ChartArchive])", "Pager",
        "give Pager.page one parameter for the message"),
    "unknown-message": Slip(
        ROUTING, "    VitalsReading = [VitalsMonitor]", "    VitalsReadng = [VitalsMonitor]",
        "E0002", "    VitalsReadng = [VitalsMonitor]", "VitalsReadng",
        "the name on the left is the message class; did you mean `VitalsReading`?"),
    "message-left-out-of-the-import": Slip(
        ROUTING, "    VitalsReading = [VitalsMonitor]\n",
        "    VitalsReading = [VitalsMonitor]\n    AuditEntry = [Handover]\n", "E0002",
        "    AuditEntry = [Handover]", "AuditEntry",
        "add AuditEntry to `from ward.messages import ...` above the routing class"),
}


def _first_error_block(text: str, code: str) -> str:
    match = re.search(rf"ward/routing\.py:(\d+):(\d+): error\[{code}\][^\n]*\n(?:.*\n)*?help: .*",
                      text)
    assert match, text
    return match.group(0)


@pytest.mark.parametrize("name", SLIPS)
def test_a_slip_is_one_routing_error_with_a_caret_and_a_fix_from_check_and_the_hook(
        ward: Ward, app: Path, name: str) -> None:
    slip = SLIPS[name]
    _edit(app / slip.file, slip.old, slip.new)
    routing = (app / ROUTING).read_text().splitlines()
    lineno = routing.index(slip.line) + 1
    found = re.search(rf"\b{slip.under}\b", slip.line)
    assert found
    column = found.start() + 1

    checked = ward.cli("check", "ward", cwd=app)
    hooked = ward.py("main.py", cwd=app)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    block = _first_error_block(checked.stdout, slip.code)
    assert block.startswith(f"ward/routing.py:{lineno}:{column}: error[{slip.code}]"), block
    rows = block.splitlines()
    assert f"{lineno} | {slip.line}" in [row.strip() for row in rows], block
    caret = next(row for row in rows if row.strip(" |").startswith("^"))
    assert caret.index("^") - caret.index("|") - 2 == column - 1, block
    assert caret.count("^") == len(slip.under), block
    assert slip.advice in rows[-1], block
    # The import fails the same way under the hook: a SyntaxError-style traceback at the same
    # line, a caret under the same name, the same code and help.
    assert hooked.returncode == 1
    shown = hooked.stderr.splitlines()
    at = shown.index(f'  File "{app / ROUTING}", line {lineno}')
    assert shown[at + 1] == f"    {slip.line.strip()}"
    indent = len(slip.line) - len(slip.line.lstrip())
    assert shown[at + 2].index("^") == 4 + column - 1 - indent, hooked.stderr
    assert shown[at + 3].startswith(
        f"mycelium_mono.routing.errors.RoutingError: [{slip.code}]"), hooked.stderr
    assert slip.advice in hooked.stderr


# -- a circular emit ----------------------------------------------------------------------


def _make_the_pager_repage(app: Path) -> None:
    services = app / SERVICES
    _edit(services, "class Pager:", "class Pager(MessageHandler[PagerAlert]):")
    _edit(services, "    @handles(PagerAlert)\n    def page(self, alert: PagerAlert) -> None:\n"
                    "        self.sent.append((alert.pager, alert.bed))\n",
          "    def handle(self, alert: PagerAlert) -> None:\n"
          "        self.sent.append((alert.pager, alert.bed))\n"
          "        self.emit(TriageDecision(bed=alert.bed, level=alert.level, reason='re-page'))\n")


CYCLE = ("note: the cycle: emit_triage_decision(TriageDecision) → triage_nurse.handle → "
         "emit_pager_alert(PagerAlert) → emit_pager_alert_sync(PagerAlert) → pager.handle → "
         "emit_triage_decision(TriageDecision)")


def test_a_circular_emit_names_the_cycle_in_one_short_error(ward: Ward, app: Path) -> None:
    _make_the_pager_repage(app)
    assert _ok(ward.cli("check", "ward", cwd=app)) == "ward/routing.py: 1 routing class ok\n"

    result = ward.py("main.py", cwd=app)

    assert result.returncode == 1
    # On main: ~400 nested ExceptionGroups, one per emit, printed ten deep; "RecursionError"
    # appeared nowhere in 16 kB of traceback.
    assert "ExceptionGroup" not in result.stderr
    assert len(result.stderr) < 3000, result.stderr
    last = result.stderr.splitlines()
    error = next(i for i, row in enumerate(last) if row.startswith(
        "mycelium_mono.handlers.EmitCycleError: WardBus: its handlers emit each other's "
        "messages in a cycle that did not end"))
    assert last[error + 1] == CYCLE
    assert last[error + 2].startswith("help: the monolith calls depth first")
    # The traceback starts at the user's own emit.
    assert "bus.emit_vitals_reading(VitalsReading(bed=7" in result.stderr


# In process, on the checkout: the no-hook build, on_error, and a recursion that is no cycle.


@message(type_id=39510, topic="ward.rounds")
class Round:
    hops: U8


@message(type_id=39511, topic="ward.rounds")
class RoundDone:
    hops: U8


class Registrar(MessageHandler[Round]):
    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.seen = 0

    def handle(self, msg: Round) -> None:
        self.seen += 1
        if self.stop_at is None or msg.hops < self.stop_at:
            self.emit(RoundDone(hops=min(msg.hops + 1, 255)))


class Consultant(MessageHandler[RoundDone]):
    def handle(self, msg: RoundDone) -> None:
        self.emit(Round(hops=msg.hops))


class Porter(MessageHandler[Round]):
    """Deep recursion of its own, no emit: a plain failure, not a cycle."""

    def handle(self, msg: Round) -> None:
        def corridor(n: int) -> int:
            return corridor(n + 1) + 1

        corridor(0)


@routing_config
class RoundsBus:
    Round = [Registrar]
    RoundDone = [Consultant]


@routing_config(inline=True)
class InlinedRoundsBus:
    Round = [Registrar]
    RoundDone = [Consultant]


@routing_config
class PorterBus:
    Round = [Porter]


@pytest.mark.parametrize("bus_class", [RoundsBus, InlinedRoundsBus])
def test_a_cycle_without_the_hook_and_inlined_is_one_emit_cycle_error(
        bus_class: Callable[..., Any]) -> None:
    calls: list[str] = []
    registrar = Registrar()
    bus = bus_class(registrar=registrar, consultant=Consultant(),
                    on_error=lambda exc, where, msg: calls.append(where))

    with pytest.raises(EmitCycleError) as raised:
        bus.emit_round(Round(hops=0))

    assert isinstance(raised.value, RecursionError)  # `except RecursionError` still catches it
    assert raised.value.cycle in [
        ("emit_round(Round)", "registrar.handle", "emit_round_done(RoundDone)",
         "consultant.handle", "emit_round(Round)"),
        ("emit_round(Round)", "emit_round_done(RoundDone)", "emit_round(Round)")]  # inlined
    assert calls == []  # a programming error, not a handler failure for on_error
    assert registrar.seen > 100
    # A cycle with an end is just depth first.
    ends = bus_class(registrar=Registrar(stop_at=20), consultant=Consultant())
    ends.emit_round(Round(hops=0))
    assert ends.registrar.seen == 21


def test_a_handlers_own_deep_recursion_is_still_its_failure() -> None:
    where: list[str] = []
    PorterBus(porter=Porter(), on_error=lambda exc, w, msg: where.append(
        f"{w} {type(exc).__name__}")).emit_round(Round(hops=0))
    assert where == ["porter.handle RecursionError"]

    with pytest.raises(ExceptionGroup) as group:
        PorterBus(porter=Porter()).emit_round(Round(hops=0))
    assert [type(e) for e in group.value.exceptions] == [RecursionError]
