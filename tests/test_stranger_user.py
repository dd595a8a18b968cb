"""A stranger who read only README.md builds a hospital ward app (tests/stranger_user) and uses
every command on it, mistakes included; each finding of that trial is held here.

The ward: ``Admission`` carries every field type; ``BedAllocator`` assigns beds until they run
out, then emits ``WardFull`` into a hybrid route (so the first emits queue nothing in the
background and the later ones do); ``ward/desk.py`` is a routing module with its handler class
written in it. The commands run for real, in a subprocess, from a copy of the project.
"""

from __future__ import annotations

import copy
import math
import pickle
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import helpers_modules
import pytest
from helpers_cli import cli, cli_env, run
from test_wheel_fresh_venv import _clean_env, _run, wheel_in_fresh_venv

from mycelium_mono import (
    F32,
    F64,
    U8,
    U64,
    Address,
    Bytes,
    MessageBus,
    MessageError,
    Text,
    handles,
    message,
    routing_config,
)

ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).parent / "stranger_user"
pytestmark = pytest.mark.multiprocess


@pytest.fixture
def ward(tmp_path: Path) -> Path:
    root = tmp_path / "hospital"
    shutil.copytree(APP, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return root


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


# -- bench: a route whose handler reaches a hybrid route only after its first messages -------


def test_bench_times_a_route_that_starts_queueing_background_calls_after_its_first_emit(
        ward: Path) -> None:
    # The untimed first emit assigns a bed (nothing queued, the backlog not even created);
    # every later one emits WardFull into the background. 20,000 emits used to overflow the
    # 10,000-call backlog: "not timed (... BacklogFull ...)".
    result = cli("bench", "ward.routing", "--number", "20000", "--repeat", "1", cwd=ward)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "not timed" not in result.stdout, result.stdout
    assert "WardBus.emit_admission" in result.stdout
    assert "ns per emit" in result.stdout.split("WardBus.emit_admission", 1)[1].splitlines()[0]


# -- stubs ------------------------------------------------------------------------------------


def test_stubs_of_a_module_without_a_routing_class_is_refused_and_writes_nothing(
        ward: Path) -> None:
    # It used to write ward/services.pyi, which then shadowed services.py for mypy.
    result = cli("stubs", "ward.services", cwd=ward)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "no @routing_config class" in result.stderr
    assert "help:" in result.stderr
    assert not (ward / "ward" / "services.pyi").exists()
    _no_traceback(result)


def test_stubs_keep_the_instance_attributes_of_classes_in_the_routing_module(ward: Path) -> None:
    result = cli("stubs", "ward.desk", cwd=ward)

    assert result.returncode == 0, result.stdout + result.stderr
    stub = (ward / "ward" / "desk.pyi").read_text()
    assert "moves: list[int]" in stub
    assert "busy: bool" in stub


def test_the_ward_app_type_checks_under_mypy_strict_with_its_stubs(ward: Path) -> None:
    for module in ("ward.routing", "ward.desk"):
        made = cli("stubs", module, cwd=ward)
        assert made.returncode == 0, made.stdout + made.stderr
    result = run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "ward",
                  "main.py", "check_types.py"], ward)

    assert result.returncode == 0, result.stdout + result.stderr
    typed = run([sys.executable, "check_types.py"], ward)  # and it runs as it type-checks
    assert typed.returncode == 0, typed.stderr


def test_stubs_kept_apart_under_mypy_path_serve_the_code_that_uses_the_bus(ward: Path) -> None:
    # README: with -o typings/ mypy reads the stubs for modules it does not check itself.
    made = cli("stubs", "ward.routing", "ward.desk", "-o", "typings", cwd=ward)
    assert made.returncode == 0, made.stdout + made.stderr
    env = cli_env(MYPYPATH="typings")
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]

    users = run([*mypy, "main.py", "check_types.py"], ward, env=env)
    assert users.returncode == 0, users.stdout + users.stderr
    package_too = run([*mypy, "ward", "main.py", "check_types.py"], ward, env=env)
    assert package_too.returncode == 1
    assert '"WardBus" has no attribute "emit_admission"' in package_too.stdout


# -- syntax errors: one message, the right file, no traceback -----------------------------------


@pytest.mark.parametrize("command", ["show", "doctor", "stubs", "bench"])
def test_a_syntax_error_in_the_routing_module_is_one_message(ward: Path, command: str) -> None:
    routing = ward / "ward" / "routing.py"
    routing.write_text(routing.read_text() + "x = (\n")
    lineno = len(routing.read_text().splitlines())

    result = cli(command, "ward.routing", cwd=ward)

    _no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"ward/routing.py:{lineno}:5: error[syntax]: invalid Python syntax" in result.stderr
    assert "help:" in result.stderr


@pytest.mark.parametrize("command", ["show", "doctor", "stubs", "bench"])
def test_a_syntax_error_in_a_handler_module_names_that_module(ward: Path, command: str) -> None:
    services = ward / "ward" / "services.py"
    services.write_text(services.read_text() + "def broken(:\n")
    lineno = len(services.read_text().splitlines())

    result = cli(command, "ward.routing", cwd=ward)

    _no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"ward/services.py:{lineno}:12: error[syntax]" in result.stderr
    assert "def broken(:" in result.stderr


def test_check_reports_a_handler_modules_syntax_error_at_the_import_with_the_file(
        ward: Path) -> None:
    # It used to say "ward/routing.py:44:12: error[syntax]", a line routing.py does not have.
    services = ward / "ward" / "services.py"
    services.write_text(services.read_text() + "def broken(:\n")
    lineno = len(services.read_text().splitlines())
    routing_lines = (ward / "ward" / "routing.py").read_text().splitlines()
    import_line = routing_lines.index("from ward.services import BedAllocator, Journal, Pager, "
                                      "Triage") + 1

    result = cli("check", "ward", cwd=ward)

    _no_traceback(result)
    assert result.returncode == 1
    assert f"ward/routing.py:{import_line}:1: error[E0012]" in result.stdout, result.stdout
    assert "SyntaxError" in result.stdout
    assert f'File "ward/services.py", line {lineno}' in result.stdout


# -- messages ---------------------------------------------------------------------------------


@message(type_id=9201, topic="ward.edge")
class Vitals:
    acuity: U8
    seq: U64
    temp: F32
    weight: F64
    tag: Text[6]
    ref: Bytes[4]
    device: Address


def _vitals(**changes: Any) -> Vitals:
    fields: dict[str, Any] = dict(acuity=1, seq=2, temp=37.0, weight=70.0, tag="é€x",
                                  ref=b"abcd", device=bytes(20))
    return Vitals(**{**fields, **changes})


class Acuity(IntEnum):
    CRITICAL = 1


class Ticks(int):
    pass


class Grams(float):
    pass


class NumpyLikeInt:
    """What numpy.int64 is to a message: no int subclass, an int through __index__."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


class NumpyLikeFloat:
    """numpy.float32: no float subclass, a float through __float__."""

    def __float__(self) -> float:
        return 1.5


@pytest.mark.parametrize(("field", "value", "hint"), [
    ("acuity", Acuity.CRITICAL, "pass int(value)"),
    ("acuity", NumpyLikeInt(3), "pass int(value)"),
    ("seq", NumpyLikeInt(2**64 - 1), "pass int(value)"),
    ("temp", NumpyLikeFloat(), "pass float(value)"),
    ("seq", Ticks(5), "pass int(value)"),
    ("temp", Grams(1.5), "pass float(value)"),
    ("weight", Grams(1.5), "pass float(value)"),
    ("ref", bytearray(b"abcd"), "pass bytes(value)"),
    ("ref", memoryview(b"abcd"), "pass bytes(value)"),
    ("device", bytearray(20), "pass bytes(value)"),
])
def test_a_subclass_or_bytes_like_value_is_refused_with_what_to_pass(
        field: str, value: object, hint: str) -> None:
    # "must be an int in 0..255, got Acuity <Acuity.CRITICAL: 1>" contradicted itself: an
    # IntEnum is an int. Construction still refuses it (exact types only); the error says how.
    with pytest.raises(MessageError, match=rf"Vitals\.{field} .*{re.escape(hint)}") as caught:
        _vitals(**{field: value})
    assert str(caught.value).count("\n") == 0


def test_a_wrong_value_that_is_no_subclass_gets_no_conversion_hint() -> None:
    for field, value in (("acuity", 256), ("acuity", True), ("ref", b"abc"), ("temp", "1.0"),
                         ("acuity", NumpyLikeInt(256)), ("acuity", Acuity.CRITICAL * 300),
                         ("temp", 1.0j), ("acuity", 1.0)):
        with pytest.raises(MessageError) as caught:
            _vitals(**{field: value})
        assert "pass " not in str(caught.value), str(caught.value)


def test_boundaries_text_capacity_and_floats() -> None:
    assert _vitals(acuity=255).acuity == 255
    assert _vitals(seq=2**64 - 1).seq == 2**64 - 1
    with pytest.raises(MessageError):
        _vitals(seq=2**64)
    assert Vitals.from_bytes(_vitals(tag="é€x").to_bytes()).tag == "é€x"   # exactly 6 bytes
    with pytest.raises(MessageError, match="7 bytes in UTF-8"):
        _vitals(tag="é€xy")
    nan = _vitals(temp=math.nan, weight=math.inf)
    back = Vitals.from_bytes(nan.to_bytes())
    assert math.isnan(back.temp) and back.weight == math.inf
    with pytest.raises(MessageError):
        _vitals(temp=3.5e38)


class _Forged:
    """Pickles as a Vitals whose acuity is out of range, as a hostile pickle could."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Vitals, (999, 2, 37.0, 70.0, "x", b"abcd", bytes(20)))


def test_pickle_round_trips_through_the_constructor_and_its_checks() -> None:
    msg = _vitals()
    assert pickle.loads(pickle.dumps(msg)) == msg
    with pytest.raises(MessageError, match=r"Vitals\.acuity"):
        pickle.loads(pickle.dumps(_Forged()))
    assert copy.copy(msg) is msg and copy.deepcopy(msg) is msg


# -- run and bench arguments --------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["console", "module"])
def test_run_of_a_package_without_main_is_one_line_not_a_traceback(ward: Path,
                                                                     runner: str) -> None:
    argv = ([str(Path(sys.executable).parent / "mycelium-mono")] if runner == "console"
            else [sys.executable, "-m", "mycelium_mono"])
    result = run([*argv, "run", "-m", "ward"], ward)

    _no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert "'ward' is a package and has no __main__.py" in result.stderr
    assert "help: run one of its modules" in result.stderr


@pytest.mark.parametrize("option", ["--number", "--repeat"])
@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_bench_refuses_a_count_that_is_not_positive(ward: Path, option: str, value: str) -> None:
    # --number 0 used to print "not timed (ZeroDivisionError)" for every route, exit 0;
    # --number -5 a traceback.
    result = cli("bench", "ward.routing", option, value, cwd=ward)

    _no_traceback(result)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"argument {option}: must be a positive integer, got {value!r}" in result.stderr


# -- doctor and bench call the handlers: their prints must not bury the report ------------------

NOISY = '''\
from mycelium_mono import MessageHandler, route, routing_config

from ward.messages import BedAssigned, WardFull


class Shouter(MessageHandler[BedAssigned]):
    def handle(self, b: BedAssigned) -> None:
        print("bed", b.bed, "assigned")
        self.emit(WardFull(ward_no=1, waiting=b.bed))


class Pager(MessageHandler[WardFull]):
    async def handle(self, f: WardFull) -> None:
        print("paged ward", f.ward_no)


@routing_config
class NoisyBus:
    BedAssigned = [Shouter]
    WardFull = route(background=[Pager])
'''


@pytest.mark.parametrize("argv", [["doctor", "ward.noisy"],
                                  ["bench", "ward.noisy", "--number", "2000", "--repeat", "1"]])
def test_what_the_handlers_print_while_timed_is_counted_not_shown(ward: Path,
                                                                  argv: list[str]) -> None:
    (ward / "ward" / "noisy.py").write_text(NOISY)

    result = cli(*argv, cwd=ward)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "bed 0 assigned" not in result.stdout and "paged ward" not in result.stdout, \
        result.stdout[:2000]
    timed = [line for line in result.stdout.splitlines() if "NoisyBus.emit_bed_assigned" in line]
    assert len(timed) == 1 and "ns per emit" in timed[0], result.stdout
    # Every timed emit printed one line and queued one background call, which printed another.
    counted = int(timed[0].split("its handlers printed ")[1].split(" line")[0].replace(",", ""))
    assert counted >= 2 * 2000


@pytest.mark.parametrize("action", [["info"], ["clean"], ["clean", "-n"]])
@pytest.mark.parametrize(("where", "what"), [("wrad", "no such directory"),
                                             ("ward/routing.py", "not a directory")])
def test_cache_of_a_directory_that_is_not_there_is_a_usage_error(
        ward: Path, action: list[str], where: str, what: str) -> None:
    result = cli("cache", *action, where, cwd=ward)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{where}: {what}" in result.stderr
    assert result.stdout == ""


def test_cache_clean_dry_run_takes_its_directory_after_the_flag(ward: Path) -> None:
    # `cache clean -n ward` used to fail: "unrecognized arguments: ward".
    made = run([sys.executable, "-c", "import mycelium_mono; mycelium_mono.install_import_hook("
                "packages=['ward']); import ward.routing"], ward,
               env=cli_env(PYTHONDONTWRITEBYTECODE=None))
    assert made.returncode == 0, made.stderr
    for argv in (["clean", "-n", "ward"], ["-n", "clean", "ward"], ["clean", "ward", "-n"]):
        result = cli("cache", *argv, cwd=ward)
        assert result.returncode == 0, result.stderr
        assert "would remove 1 cache file" in result.stdout, result.stdout
    assert list((ward / "ward" / "__pycache__").glob("*.mycelium.pyc"))


# -- the pytest plugin: a package the ini file names that does not exist -------------------------

WARD_TEST = '''\
from ward.routing import WardBus


def test_origin():
    print("origin:", WardBus.__mycelium_origin__)
'''


@pytest.mark.parametrize(("packages", "origin", "warned"), [
    ("wrd", "runtime", True), ("ward", "import hook", False)])
def test_a_mistyped_mycelium_packages_entry_is_warned_about(
        ward: Path, packages: str, origin: str, warned: bool) -> None:
    # With `wrd` the session tested runtime-built buses and said nothing.
    (ward / "pytest.ini").write_text(f"[pytest]\nmycelium_packages = {packages}\n"
                                     "pythonpath = .\n")
    (ward / "test_ward.py").write_text(WARD_TEST)

    result = run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                  "-p", "no:asyncio", "test_ward.py"], ward)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"origin: {origin}" in result.stdout
    message = "mycelium_packages names 'wrd', which is not importable here"
    assert (message in result.stdout) is warned, result.stdout


MAIN_WITHOUT_HOOK = '''\
from ward.routing import WardBus

print("origin:", WardBus.__mycelium_origin__)
'''


@pytest.mark.parametrize(("option", "env"), [(["--packages", "wrd"], {}),
                                             ([], {"MYCELIUM_PACKAGES": "wrd"})])
def test_run_warns_about_a_package_name_nothing_can_import(
        ward: Path, option: list[str], env: dict[str, str]) -> None:
    (ward / "plain_main.py").write_text(MAIN_WITHOUT_HOOK)
    result = run([sys.executable, "-m", "mycelium_mono", "run", *option, "plain_main.py"], ward,
                 env=cli_env(**env))

    assert result.returncode == 0, result.stderr
    assert "origin: runtime" in result.stdout
    assert "warning: run: no package named 'wrd' is importable here" in result.stderr
    right = run([sys.executable, "-m", "mycelium_mono", "run", "--packages", "ward",
                 "plain_main.py"], ward)
    assert "origin: import hook" in right.stdout and right.stderr == "", right.stderr


# -- from the built wheel, in a fresh Python 3.13 venv ---------------------------------------------
# The stranger's ward app (tests/stranger_user) from the built wheel, in a fresh Python 3.13 venv.
#
# What README.md tells a new user to do, with nothing from this checkout on ``sys.path``: build
# the wheel, install it with the ``[tcp]`` extra into a new 3.13 venv, then run the app with
# ``mycelium-mono run`` (monolith and hybrid under the hook), and the two-process ZeroMQ run
# (``desk_node.py`` publishes admissions, ``ward_node.py`` allocates beds on a ServiceRuntime and
# answers), each process started with ``mycelium-mono run``. Python 3.13 is found as ``make
# test`` finds it (noxfile.find_interpreter); if it is missing the test fails and says how to
# install it. The pattern is tests/test_wheel_fresh_venv.py's: one venv for the module.


@dataclass(frozen=True)
class Venv313:
    python: Path
    app: Path

    @property
    def command(self) -> str:
        return str(self.python.parent / "mycelium-mono")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv313:
    found = helpers_modules.noxfile().find_interpreter("3.13")
    if not hasattr(found, "path"):
        pytest.fail(found.message())
    base = tmp_path_factory.mktemp("stranger313")
    _, python = wheel_in_fresh_venv(base, found.path, "[tcp]")
    app = base / "hospital"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    return Venv313(python, app)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_the_venv_is_python_313_with_the_installed_wheel(venv: Venv313) -> None:
    result = _run([str(venv.python), "-c", "import sys, mycelium_mono; "
                   "print(sys.version_info[:2], mycelium_mono.__file__)"], venv.app, _clean_env())

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(3, 13) ")
    assert Path(result.stdout.split(" ", 2)[2].strip()).is_relative_to(venv.python.parent.parent)


def test_the_ward_runs_under_the_hook_from_the_wheel(venv: Venv313) -> None:
    result = _run([venv.command, "run", "main.py"], venv.app, _clean_env())

    assert result.returncode == 0, result.stderr
    assert result.stdout == "['bed 1', 'bed 2', 'full 1', 'full 2'] [1, 2] import hook\n"
    assert result.stderr == ""


def test_desk_and_ward_talk_over_zeromq_in_two_processes(venv: Venv313) -> None:
    desk_port, ward_port = _free_ports(2)
    env = _clean_env()
    ward = subprocess.Popen([venv.command, "run", "ward_node.py", str(ward_port), str(desk_port)],
                            cwd=venv.app, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        desk = _run([venv.command, "run", "desk_node.py", str(desk_port), str(ward_port)],
                    venv.app, env)
        ward_out, ward_err = ward.communicate(timeout=60)
    finally:
        if ward.poll() is None:
            ward.kill()
            ward.communicate()

    assert desk.returncode == 0, desk.stdout + desk.stderr
    assert desk.stdout == "desk got [1, 2, 1]\n"
    assert ward.returncode == 0, ward_out + ward_err
    assert ward_out == "ward served Admission x3; hook: import hook\n"


@pytest.mark.parametrize(("annotation", "right"), [
    (Annotated[int, Text(12)], "Annotated[str, Text(12)]"),
    (Annotated[str, Bytes(4)], "Annotated[bytes, Bytes(4)]"),
    (Annotated[float, U8.__metadata__[0]], "Annotated[int, "),
])
def test_an_annotated_field_whose_python_type_disagrees_with_its_layout_is_refused(
        annotation: Any, right: str) -> None:
    # Annotated[int, Text(12)] was accepted: mypy saw an int, every read returned a str.
    with pytest.raises(MessageError, match=re.escape(f"help: write {right}")):
        message(type_id=9290, topic="ward.edge")(
            type("Chart", (), {"__annotations__": {"note": annotation}}))


@pytest.mark.parametrize("type_id", [True, False, 1.0])
def test_a_type_id_that_is_not_an_int_is_refused(type_id: Any) -> None:
    # @message(type_id=True) made a message with type id 1, a bool where a U16 field refuses one.
    with pytest.raises(MessageError, match=r"type_id must be an int in 0\.\.65535"):
        message(type_id=type_id, topic="ward.edge")(
            type("Chart", (), {"__annotations__": {"bed": U8}}))


def test_an_int_enum_of_type_ids_gives_a_plain_int_type_id() -> None:
    class TypeIds(IntEnum):
        CHART = 9291

    chart = message(type_id=TypeIds.CHART, topic="ward.edge")(
        type("Chart", (), {"__annotations__": {"bed": U8}}))
    assert chart.TYPE_ID == 9291 and type(chart.TYPE_ID) is int


@pytest.mark.parametrize("argv", [["show", "routing"], ["check", "routing"],
                                  ["stubs", "routing"], ["doctor", "routing"],
                                  ["bench", "routing", "--number", "100", "--repeat", "1"]])
def test_a_module_named_from_inside_its_package_directory_is_that_packages_module(
        ward: Path, argv: list[str]) -> None:
    # From ward/, `show routing` imported ward/routing.py as a top-level `routing`, and its own
    # `from ward.messages import ...` failed: "E0012 cannot import 'ward.messages'".
    result = cli(*argv, cwd=ward / "ward")

    _no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "E0012" not in result.stdout + result.stderr
    assert ("class WardBus" in result.stdout or "1 routing class ok" in result.stdout
            or "wrote" in result.stdout or "ns per emit" in result.stdout
            or "0 failures" in result.stdout), result.stdout


RECORDING = '''\
from pathlib import Path

from mycelium_mono import MessageHandler, routing_config

from ward.messages import BedAssigned  # noqa: F401


class Ledger(MessageHandler[BedAssigned]):
    def handle(self, b: BedAssigned) -> None:
        with Path("ledger.txt").open("a") as file:   # a side effect, like a real pager
            file.write("x")


@routing_config
class LedgerBus:
    BedAssigned = [Ledger]
'''


def test_doctor_no_timing_never_calls_the_handlers(ward: Path) -> None:
    (ward / "ward" / "ledger.py").write_text(RECORDING)

    quiet = cli("doctor", "ward.ledger", "--no-timing", cwd=ward)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "emit timing" not in quiet.stdout
    assert "LedgerBus constructor" in quiet.stdout
    assert not (ward / "ledger.txt").exists()

    timed = cli("doctor", "ward.ledger", cwd=ward)
    assert timed.returncode == 0, timed.stdout + timed.stderr
    assert "LedgerBus emit timing" in timed.stdout
    assert len((ward / "ledger.txt").read_text()) > 1000  # what the README warns about


class VitalsLog:
    @handles(Vitals)
    def on_vitals(self, v: Vitals) -> None:
        pass


@routing_config
class VitalsBus:
    Vitals = [VitalsLog]


def test_emitting_or_publishing_the_message_class_itself_says_to_make_an_instance() -> None:
    # `bus.emit(Vitals)` said "help: emit a @message instance; a type is not a message class".
    bus = VitalsBus(vitals_log=VitalsLog())
    with pytest.raises(TypeError) as emitted:
        bus.emit(Vitals)
    assert "VitalsBus has no route for the class Vitals" in str(emitted.value)
    assert "help: emit an instance: Vitals(...)" in str(emitted.value)
    with pytest.raises(TypeError, match=r"help: emit a @message instance; an int is not"):
        bus.emit(3)
    with pytest.raises(TypeError) as published:
        MessageBus().publisher(Vitals).publish_nowait(Vitals)  # type: ignore[arg-type]
    assert "was given the class Vitals, not an instance\nhelp: publish Vitals(...)" in str(
        published.value)


@pytest.mark.parametrize(("typo", "meant", "where"), [
    ("BedAlocator", "BedAllocator", "    Admission = [Triage, BedAlocator]"),
    ("Admision", "Admission", "    Admision = [Triage, BedAllocator]"),
])
def test_a_typo_in_a_routed_name_suggests_the_imported_name(ward: Path, typo: str, meant: str,
                                                            where: str) -> None:
    routing = ward / "ward" / "routing.py"
    routing.write_text(routing.read_text().replace("    Admission = [Triage, BedAllocator]",
                                                   where))
    checked = cli("check", "ward", cwd=ward)
    ran = run([sys.executable, "-c", "from ward.routing import WardBus"], ward)  # no hook

    assert checked.returncode == 1
    assert f"error[E0002]: unknown name `{typo}`" in checked.stdout
    assert f"did you mean `{meant}`?" in checked.stdout, checked.stdout
    assert ran.returncode == 1
    # Without the hook a handler typo is Python's own NameError ("Did you mean: ..."); a
    # message typo is read by @routing_config, which now says the same.
    assert "did you mean" in ran.stderr.lower() and meant in ran.stderr, ran.stderr


@pytest.mark.parametrize(("module", "call", "extra"), [
    ("zmq", "MessageBus.with_tcp('127.0.0.1:9')", "tcp"),
    ("nats", "MessageBus.with_nats('nats://127.0.0.1:4222')", "nats"),
])
def test_a_transport_without_its_extra_says_which_extra_to_install(module: str, call: str,
                                                                   extra: str) -> None:
    # In a venv with the bare wheel this was "ModuleNotFoundError: No module named 'zmq'".
    # sys.modules[name] = None makes importing it fail exactly as a missing package does.
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from mycelium_mono import MessageBus\n"
            f"try:\n    {call}\nexcept ImportError as exc:\n    print(exc)\n")
    result = run([sys.executable, "-c", code], Path.cwd())

    assert result.returncode == 0, result.stderr
    assert f"help: pip install 'mycelium-mono[{extra}]'" in result.stdout, result.stdout
