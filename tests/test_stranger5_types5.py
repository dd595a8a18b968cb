"""A stranger's static-typing audit (stranger round 5, `types5`): a greenhouse irrigation
controller written from the README only, checked by the real `mypy --strict`.

The app lives in `tests/types5_app/greenhouse/` and is copied to a temporary directory, where
`mycelium-mono stubs` writes its `.pyi` files. Each test writes one program whose expected
mypy errors are marked on their lines (`# E: code`, several separated by commas); the test
asserts that mypy reports exactly those (line, code) pairs: an error on every marked line and
nowhere else, so both "a wrong call passes" and "a right call fails" are caught. One mypy run per
test, sharing one cache directory so the library and the standard library are analysed once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

APP = Path(__file__).parent / "types5_app"
ERROR = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$",
                   re.MULTILINE)
MARK = re.compile(r"#\s*E:\s*(?P<codes>[a-z, -]+)$")


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("types5_mypy_cache")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The greenhouse app in a fresh directory, with stubs written beside its routing modules."""
    shutil.copytree(APP / "greenhouse", tmp_path / "greenhouse",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    for module in ("greenhouse.routing", "greenhouse.routing_more", "greenhouse.routing_edge"):
        written = subprocess.run(
            [sys.executable, "-m", "mycelium_mono", "stubs", module], cwd=tmp_path,
            capture_output=True, text=True, timeout=120, env=_env(tmp_path),
        )
        assert written.returncode == 0, written.stdout + written.stderr
    return tmp_path


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MYPYPATH", None)
    return env


def expected_errors(source: str) -> set[tuple[int, str]]:
    found = set()
    for number, line in enumerate(source.splitlines(), start=1):
        mark = MARK.search(line)
        if mark:
            found |= {(number, code.strip()) for code in mark["codes"].split(",")}
    return found


def mypy_errors(project: Path, cache: Path, name: str, source: str
                ) -> tuple[set[tuple[int, str]], str]:
    """Run `mypy --strict` on one program; its errors as (line, code), and the full output."""
    (project / name).write_text(source)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
         "--show-error-codes", "--no-color-output", "--no-error-summary", name],
        cwd=project, capture_output=True, text=True, timeout=300, env=_env(project),
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 2: mypy itself failed
    errors = {(int(m["line"]), m["code"]) for m in ERROR.finditer(result.stdout)
              if m["file"] == name}
    others = [m[0] for m in ERROR.finditer(result.stdout) if m["file"] != name]
    assert not others, f"errors outside {name} (the app or its stubs):\n" + "\n".join(others)
    return errors, result.stdout


def check(project: Path, cache: Path, name: str, program: str) -> None:
    source = textwrap.dedent(program)
    want = expected_errors(source)
    assert want, "a program with no marked error proves nothing about rejection"
    got, output = mypy_errors(project, cache, name, source)
    assert got == want, (
        f"missing (a wrong line mypy accepted): {sorted(want - got)}\n"
        f"unexpected (a right line mypy refused): {sorted(got - want)}\n{output}"
    )


MESSAGES = """\
    from typing import Annotated, assert_type

    from greenhouse.messages import OpenValve, PHAlert, SoilReading
    from mycelium_mono import Text, message

    r = SoilReading(zone=1, probe=2, seq=3, taken_ns=4, serial=2**100, checksum=2**255,
                    offset=-7, trend=-8, delta=-9, drift_ns=-10, moisture=0.25,
                    temperature_c=21.5, wet=True, gateway=bytes(20), digest=bytes(32),
                    tag=b"abcd", label="bed-3")
    for u in (r.zone, r.probe, r.seq, r.taken_ns, r.serial, r.checksum):
        assert_type(u, int)
    for i in (r.offset, r.trend, r.delta, r.drift_ns):
        assert_type(i, int)
    assert_type(r.moisture, float)
    assert_type(r.temperature_c, float)
    assert_type(r.wet, bool)
    assert_type(r.gateway, bytes)
    assert_type(r.digest, bytes)
    assert_type(r.tag, bytes)
    assert_type(r.label, str)
    assert_type(r.to_bytes(), bytes)
    assert_type(SoilReading.from_bytes(r.to_bytes()), SoilReading)
    assert_type(SoilReading.from_bytes(memoryview(r.to_bytes())), SoilReading)
    assert_type(r.replace(zone=2), SoilReading)
    assert_type(SoilReading.SIZE, int)
    assert_type(SoilReading.TOPIC, str)
    assert_type(OpenValve(3, seconds=30), OpenValve)        # positional, as in the tour
    assert_type(OpenValve(3, 30).seconds, int)
    seen = {OpenValve(3, 30), OpenValve(3, 30)}             # hashable
    as_float: float = PHAlert(zone=1, ph=6).ph              # an int where F32 takes a float

    OpenValve(zone="3", seconds=30)  # E: arg-type
    OpenValve(zone=3)  # E: call-arg
    OpenValve(zone=3, seconds=30, extra=1)  # E: call-arg
    PHAlert(zone=1, ph="6.5")  # E: arg-type
    r.replace(zone=2).zone = 3  # E: misc
    r.label = "other"  # E: misc
    wrong_field: str = r.zone  # E: assignment
    OpenValve.from_bytes("00")  # E: arg-type
    numbers = (1, 2, 3, 4, 5, 6, -7, 8, 9, 10, 0.2, 1.0, True)
    SoilReading(*numbers, "00", bytes(32), b"abcd", "bed")  # E: arg-type
    SoilReading(*numbers, bytes(20), bytes(32), b"abcd", b"bed")  # E: arg-type
    SoilReading(*numbers, bytearray(20), bytes(32), b"abcd", "bed")  # E: arg-type
    SoilReading(*numbers, bytes(20), memoryview(bytes(32)), b"abcd", "bed")  # E: arg-type


    @message(type_id=55090, topic="greenhouse.misc")
    class RuntimeForm:
        label: Text[8]  # E: type-arg, valid-type


    @message(type_id=55091, topic="greenhouse.misc")
    class CheckerForm:
        label: Annotated[str, Text(8)]


    assert_type(CheckerForm(label="x").label, str)
    print(seen, as_float)
"""


def test_each_readme_field_type_reads_as_its_python_type_and_wrong_values_are_mypy_errors(
        project: Path, mypy_cache: Path) -> None:
    # Field types of the README's table, the Message base's members, construction, frozenness,
    # and the README's claim that `Text[N]` is refused by mypy (so `Annotated` is needed).
    check(project, mypy_cache, "user_messages.py", MESSAGES)


MONOLITH = """\
    import asyncio
    from typing import Any, assert_type

    from greenhouse.messages import OpenValve, PHAlert, SoilReading
    from greenhouse.routing import GreenhouseBus
    from greenhouse.routing_more import FastBus, LocalPHLogger, SlowBus
    from greenhouse.services import (
        CO2Sensor, Historian, HTTPNotifier, IrrigationPlanner, ValveDriver,
    )
    from mycelium_mono import MessageHandler
    from mycelium_mono.monolith import BackgroundBacklog

    cmd = OpenValve(zone=1, seconds=30)
    alert = PHAlert(zone=1, ph=5.0)


    def on_error(exc: Exception, where: str, msg: Any) -> None:
        print(where, exc, msg)


    def on_error_too_few(exc: Exception) -> None:
        print(exc)


    bus = GreenhouseBus(IrrigationPlanner(), CO2Sensor(), valve_driver=ValveDriver(),
                        http_notifier=HTTPNotifier(), historian=Historian(), on_error=on_error)
    bus.emit_open_valve(cmd)
    bus.emit_open_valve_sync(cmd)
    bus.emit_ph_alert(alert)
    bus.emit(cmd)
    bus.emit(alert)
    assert_type(bus.co2_sensor, CO2Sensor)
    assert_type(bus.valve_driver.seconds, int)
    assert_type(bus.http_notifier.sent, list[str])
    assert_type(bus.background, BackgroundBacklog)
    bus.detach()

    fast = FastBus(ValveDriver(), HTTPNotifier(), local_ph_logger=LocalPHLogger())
    fast.emit_open_valve(cmd)                # routed as `Valve`, an alias: named from __name__
    assert_type(fast.local_ph_logger.count, int)
    slow = SlowBus(irrigation_planner=IrrigationPlanner())
    assert_type(slow.irrigation_planner.opened, int)


    async def main() -> None:
        await bus.emit_open_valve_async(cmd)
        await bus.background.drain()
        await bus.emit_open_valve_sync(cmd)  # E: misc, func-returns-value
        bus.emit_open_valve_async(cmd)  # E: unused-coroutine


    bus.emit_open_valve(alert)  # E: arg-type
    bus.emit_ph_alert(cmd)  # E: arg-type
    bus.emit(object())  # E: arg-type
    fast.emit(bus)  # E: arg-type
    slow.emit(cmd)  # E: arg-type
    bus.emit_valve(cmd)  # E: attr-defined
    fast.emit_valve(cmd)  # E: attr-defined
    rest = (ValveDriver(), HTTPNotifier(), Historian())
    GreenhouseBus(CO2Sensor(), CO2Sensor(), *rest)  # E: arg-type
    GreenhouseBus(IrrigationPlanner(), co_2_sensor=CO2Sensor())  # E: call-arg
    GreenhouseBus(IrrigationPlanner(), CO2Sensor(), ValveDriver(), HTTPNotifier())  # E: call-arg
    GreenhouseBus(IrrigationPlanner(), CO2Sensor(), *rest, on_error=on_error_too_few)  # E: arg-type
    bus.co2_sensor = ValveDriver()  # E: assignment


    class Sprinkler(MessageHandler[OpenValve]):
        def handle(self, reading: SoilReading) -> None:  # E: override
            ...


    asyncio.run(main())
"""


def test_the_stubbed_monolith_buses_type_every_emit_constructor_and_service(
        project: Path, mypy_cache: Path) -> None:
    check(project, mypy_cache, "user_monolith.py", MONOLITH)


FLEXIBLE = """\
    import asyncio
    from typing import assert_type

    from greenhouse.messages import OpenValve, PHAlert
    from greenhouse.services import HTTPNotifier, ValveDriver
    from mycelium_mono import LatencyTracker, MessageBus, ServiceContext, ServiceRuntime, service
    from mycelium_mono.bus import LatencyReport, Publisher, Subscriber

    cmd = OpenValve(zone=1, seconds=30)


    @service
    class WeatherFeed:
        async def run(self, ctx: ServiceContext) -> None:
            await ctx.emit(cmd)


    async def main() -> None:
        bus = MessageBus()
        pub = bus.publisher(OpenValve)
        assert_type(pub, Publisher[OpenValve])
        sub = bus.subscribe(OpenValve, maxsize=8, policy="drop_oldest")
        assert_type(sub, Subscriber[OpenValve])
        await pub.publish(cmd)
        pub.publish_nowait(cmd)
        assert_type(await sub.recv(), OpenValve)
        assert_type(await sub.recv_batch(), list[OpenValve])
        async for item in sub:
            assert_type(item, OpenValve)
            break

        runtime = ServiceRuntime(bus, max_restarts=2, backoff_initial=0.01)
        for handler in (ValveDriver(), HTTPNotifier()):
            await runtime.spawn_service(handler)
        feed = await runtime.spawn_service(WeatherFeed())
        await feed.task                     # the README's flexible example, line for line
        feed.task.cancel()
        errors: int = feed.errors
        await runtime.shutdown()

        latency = LatencyTracker(sample_every=10)
        assert_type(latency.time(pub.publish_nowait, cmd), None)
        assert_type(latency.time(len, "abc"), int)
        with latency.measure():
            await pub.publish(cmd)
        assert_type(latency.report(), LatencyReport)
        print(latency.report(), errors)

        await pub.publish(PHAlert(zone=1, ph=7.0))  # E: arg-type
        pub.publish_nowait(PHAlert(zone=1, ph=7.0))  # E: arg-type
        wrong: PHAlert = await sub.recv()  # E: assignment
        async for other in sub:
            also_wrong: PHAlert = other  # E: assignment
        bus.subscribe(OpenValve, policy="drop_newest")  # E: arg-type
        latency.time(pub.publish_nowait, PHAlert(zone=1, ph=7.0))  # E: arg-type
        latency.time(pub.publish_nowait)  # E: call-arg
        print(wrong)


    asyncio.run(main())
"""


def test_flexible_mode_generics_and_a_spawned_services_task_type_check(
        project: Path, mypy_cache: Path) -> None:
    # `await adapter.task` is the README's flexible example; `RunningService.task` was typed
    # `Task[None] | None`, so the example was a mypy --strict error (`[misc]`) although
    # spawn_service always sets the task before it returns.
    check(project, mypy_cache, "user_flexible.py", FLEXIBLE)


COMPARE = """\
import ast, inspect, json, sys

if sys.argv[1] == "hook":
    import mycelium_mono
    mycelium_mono.install_import_hook(packages=["greenhouse"])
import importlib

out = {}
for module_name in sys.argv[2:]:
    module = importlib.import_module(module_name)
    stub = ast.parse(open(module.__file__[:-3] + ".pyi").read())
    for node in stub.body:
        if not (isinstance(node, ast.ClassDef) and node.bases
                and ast.unparse(node.bases[0]).endswith("GeneratedBus")):
            continue
        live = getattr(module, node.name)
        entry = out.setdefault(node.name, {"origin": live.__mycelium_origin__, "diff": []})
        stub_methods = {f.name: f for f in node.body
                        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
        live_methods = {n for n in vars(live) if n.startswith("emit_") or n == "__init__"}
        entry["methods"] = sorted(live_methods)
        if live_methods != set(stub_methods) - {"emit"}:
            entry["diff"].append(["methods", sorted(live_methods), sorted(stub_methods)])
        for name in sorted(live_methods & set(stub_methods)):
            fn, sig = stub_methods[name], inspect.signature(getattr(live, name))
            stub_params = [(a.arg, eval(ast.unparse(a.annotation), vars(module))
                            if a.annotation else None, "positional")
                           for a in fn.args.args[1:]]
            stub_params += [(a.arg, None, "keyword") for a in fn.args.kwonlyargs]
            live_params = [(p.name, p.annotation if p.kind is p.POSITIONAL_OR_KEYWORD else None,
                            "positional" if p.kind is p.POSITIONAL_OR_KEYWORD else "keyword")
                           for p in list(sig.parameters.values())[1:]]
            if stub_params != live_params:
                entry["diff"].append([name, repr(live_params), repr(stub_params)])
            is_async = isinstance(fn, ast.AsyncFunctionDef)
            if is_async != inspect.iscoroutinefunction(getattr(live, name)):
                entry["diff"].append([name, "async", is_async])
print(json.dumps(out))
"""


def test_the_stubs_name_what_both_builds_generate(project: Path) -> None:
    """Same method names, parameter names and kinds, message and service types, and `async`,
    in the `.pyi` as on the class the hook generates and the one `@routing_config` builds."""
    (project / "compare_stub.py").write_text(COMPARE)
    modules = ["greenhouse.routing", "greenhouse.routing_more", "greenhouse.routing_edge"]
    results = {}
    for build in ("hook", "runtime"):
        ran = subprocess.run([sys.executable, "compare_stub.py", build, *modules], cwd=project,
                             capture_output=True, text=True, timeout=120, env=_env(project))
        assert ran.returncode == 0, ran.stderr
        results[build] = json.loads(ran.stdout)
    for build, origin in (("hook", "import hook"), ("runtime", "runtime")):
        buses = results[build]
        assert sorted(buses) == ["EdgeBus", "FastBus", "GreenhouseBus", "SlowBus"]
        assert {bus["origin"] for bus in buses.values()} == {origin}
        assert {name: bus["diff"] for name, bus in buses.items() if bus["diff"]} == {}
        assert buses["GreenhouseBus"]["methods"] == [
            "__init__", "emit_open_valve", "emit_open_valve_async", "emit_open_valve_sync",
            "emit_ph_alert", "emit_soil_reading"]
        assert buses["FastBus"]["methods"] == ["__init__", "emit_open_valve", "emit_ph_alert"]
        assert buses["EdgeBus"]["methods"] == [
            "__init__", "emit_open_valve", "emit_open_valve_async", "emit_open_valve_sync",
            "emit_ph_alert", "emit_ph_alert_async", "emit_ph_alert_sync", "emit_soil_reading"]


PACKAGE_NAMES = """\
    from typing import assert_type

    import mycelium_mono
    from mycelium_mono import BacklogFull, LatencyTracker, MessageBus, ServiceRuntime
    from mycelium_mono import MesageBus  # E: attr-defined
    from mycelium_mono import Subscriber  # E: attr-defined

    assert_type(MessageBus(), MessageBus)
    assert_type(ServiceRuntime(), ServiceRuntime)
    assert_type(LatencyTracker().sample_every, int)
    assert_type(mycelium_mono.MessageBus, type[MessageBus])
    assert_type(mycelium_mono.cli.doctor.report("greenhouse.routing"), str)
    error: type[Exception] = BacklogFull
    mycelium_mono.ServiceRuntim()  # E: attr-defined
    print(MesageBus, Subscriber)
"""


def test_a_misspelt_or_missing_top_level_name_is_a_mypy_error(
        project: Path, mypy_cache: Path) -> None:
    # The package loads its flexible-mode names on first use through a module `__getattr__`
    # returning Any. mypy read that function too, so any name at all "existed" in
    # `mycelium_mono`: `from mycelium_mono import MesageBus` passed `mypy --strict` as Any and
    # failed only at run time, and every later use of it went unchecked.
    check(project, mypy_cache, "user_names.py", PACKAGE_NAMES)
