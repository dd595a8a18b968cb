"""`mycelium-mono stubs`: .pyi files that make mypy see each generated bus.

The stubs are written by the real command, then mypy runs (in a subprocess, with a config in the
temporary project) on small programs: correct use type-checks, a wrong message type passed to an
`emit_*` method is mypy's error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers_cli import cli, copy_clipkgs

MYPY = Path(sys.executable).parent / "mypy"

GOOD = """\
    import asyncio

    from clishop.hybrid import HybridBus
    from clishop.msgs import Signal, Swap
    from clishop.routing import SHOP_NAME, MonolithBus, make_bus
    from clishop.svc import Audit, Detector, Risk

    bus = MonolithBus(Detector(), Risk(), audit=Audit())
    bus.emit_swap(Swap(pool=bytes(20), amount=3))
    bus.emit_signal(Signal(amount=3))
    bus.emit(Signal(amount=4))
    seen: int = bus.detector.seen
    other: MonolithBus = make_bus()
    name: str = SHOP_NAME

    hybrid = HybridBus(detector=Detector(), risk=Risk(), audit=Audit())
    hybrid.emit_swap_sync(Swap(pool=bytes(20), amount=1))


    async def background() -> None:
        await hybrid.emit_swap_async(Swap(pool=bytes(20), amount=1))


    asyncio.run(background())
"""

WRONG_MESSAGE = """\
    from clishop.msgs import Signal
    from clishop.routing import MonolithBus
    from clishop.svc import Audit, Detector, Risk

    bus = MonolithBus(Detector(), Risk(), Audit())
    bus.emit_swap(Signal(amount=3))
"""

BACKGROUND = """\
    import asyncio

    from clishop.hybrid import HybridBus
    from clishop.svc import Audit, Detector, Risk

    hybrid = HybridBus(detector=Detector(), risk=Risk(), audit=Audit())


    async def main() -> None:
        await hybrid.background.drain()
        queued: int = hybrid.background.stats.queued
        hybrid.background.no_such_method()


    asyncio.run(main())
"""

WRONG_SERVICE = """\
    from clishop.routing import MonolithBus
    from clishop.svc import Audit, Detector, Risk

    bus = MonolithBus(detector=Risk(), risk=Risk(), audit=Audit())
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = copy_clipkgs(tmp_path)
    (root / "mypy.ini").write_text(
        "[mypy]\ncheck_untyped_defs = True\nwarn_unused_ignores = True\n"
        f"cache_dir = {root / '.mypy_cache'}\n"
    )
    return root


def stubs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli("stubs", *args, cwd=cwd)


def mypy(project: Path, program: str, *, mypy_path: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    (project / "program.py").write_text(textwrap.dedent(program))
    env = {**os.environ}
    env.pop("MYPYPATH", None)
    if mypy_path is not None:
        env["MYPYPATH"] = str(mypy_path)
    return subprocess.run([str(MYPY), "--config-file", "mypy.ini", "program.py"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)


def test_mypy_accepts_correct_use_of_the_stubbed_buses(project: Path) -> None:
    written = stubs("clishop.routing", "clishop/hybrid.py", cwd=project)
    assert written.returncode == 0, written.stderr
    assert (project / "clishop" / "routing.pyi").is_file()

    result = mypy(project, GOOD)

    assert result.returncode == 0, result.stdout
    assert "Success: no issues found" in result.stdout


def test_mypy_rejects_a_wrong_message_type_passed_to_emit(project: Path) -> None:
    assert stubs("clishop.routing", cwd=project).returncode == 0

    result = mypy(project, WRONG_MESSAGE)

    assert result.returncode == 1
    assert ('program.py:6: error: Argument 1 to "emit_swap" of "MonolithBus" has incompatible '
            'type "Signal"; expected "Swap"  [arg-type]') in result.stdout


def test_the_background_backlog_is_typed_in_the_stubs(project: Path) -> None:
    # Issue 15.15: `bus.background` was Any, so a misspelt backlog method passed mypy.
    assert stubs("clishop/hybrid.py", cwd=project).returncode == 0

    result = mypy(project, BACKGROUND)

    assert result.returncode == 1, result.stdout
    assert '"BackgroundBacklog" has no attribute "no_such_method"' in result.stdout
    assert result.stdout.count("error:") == 1, result.stdout


def test_without_stubs_mypy_cannot_see_the_generated_methods(project: Path) -> None:
    # What the stubs are for: the routing class as written has no emit_swap.
    result = mypy(project, WRONG_MESSAGE)

    assert result.returncode == 1
    assert '"MonolithBus" has no attribute "emit_swap"' in result.stdout


def test_mypy_rejects_a_wrong_service_for_a_constructor_parameter(project: Path) -> None:
    assert stubs("clishop.routing", cwd=project).returncode == 0

    result = mypy(project, WRONG_SERVICE)

    assert result.returncode == 1
    assert ('Argument "detector" to "MonolithBus" has incompatible type "Risk"; expected '
            '"Detector"') in result.stdout


def test_stubs_in_an_output_directory_work_through_mypy_path(project: Path) -> None:
    out = project / "typings"
    written = stubs("clishop.routing", "-o", str(out), cwd=project)
    assert written.returncode == 0, written.stderr
    assert not (project / "clishop" / "routing.pyi").exists()
    assert (out / "clishop" / "routing.pyi").is_file()
    assert (out / "clishop" / "__init__.pyi").is_file()  # so mypy resolves clishop here

    result = mypy(project, WRONG_MESSAGE, mypy_path=out)

    assert result.returncode == 1
    assert 'Argument 1 to "emit_swap" of "MonolithBus" has incompatible type "Signal"' in (
        result.stdout)


def test_the_stub_carries_the_rest_of_the_module(project: Path) -> None:
    assert stubs("clishop.routing", "clishop.hybrid", cwd=project).returncode == 0
    routing = (project / "clishop" / "routing.pyi").read_text()
    hybrid = (project / "clishop" / "hybrid.pyi").read_text()

    assert "from clishop.svc import Audit, Detector, Risk" in routing
    assert "SHOP_NAME: str" in routing
    assert "def make_bus() -> 'MonolithBus': ..." in routing
    assert ("def __init__(self, detector: Detector, risk: Risk, audit: Audit, *, on_error: "
            "_mycelium_monolith.ErrorCallback | None=..., background: "
            "_mycelium_monolith.BackgroundBacklog | None=...) -> None: "
            "...") in routing
    assert "def emit(self, msg: Swap | Signal) -> None: ..." in routing
    assert "def emit_swap_sync(self, msg: Swap) -> None: ..." in hybrid
    assert "async def emit_swap_async(self, msg: Swap) -> None: ..." in hybrid


def test_no_stub_is_written_for_a_module_with_routing_errors(project: Path) -> None:
    result = stubs("clishop/broken/e0001.py", cwd=project)

    assert result.returncode == 1
    assert "error[E0001]" in result.stderr
    assert "no stub written" in result.stderr
    assert not (project / "clishop" / "broken" / "e0001.pyi").exists()


ALIASED = """\
    # ruff: noqa
    from mycelium_mono import route as r, routing_config as rc

    from clishop.msgs import Signal, Swap
    from clishop.svc import Audit, Detector, Risk


    @rc
    class AliasedBus:
        Swap = r(sync=[Detector], background=[Risk])
        Signal = [Audit]
"""

ALIASED_USE = """\
    from clishop.aliased import AliasedBus
    from clishop.msgs import Signal, Swap
    from clishop.svc import Audit, Detector, Risk

    bus = AliasedBus(detector=Detector(), risk=Risk(), audit=Audit())
    bus.emit_swap_sync(Swap(pool=bytes(20), amount=1))
    bus.emit_signal(Swap(pool=bytes(20), amount=1))
"""


def test_a_routing_class_under_aliased_names_gets_its_bus_stub(project: Path) -> None:
    # `@rc` (routing_config as rc) used to be stubbed as the plain class it is in the source,
    # so mypy saw no emit_* method at all, while the hook built the bus.
    (project / "clishop" / "aliased.py").write_text(textwrap.dedent(ALIASED))
    written = stubs("clishop.aliased", cwd=project)
    assert written.returncode == 0, written.stderr
    result = mypy(project, ALIASED_USE)
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert 'Argument 1 to "emit_signal" of "AliasedBus" has incompatible type "Swap"' in errors[0]


CONSTANTS = """\
    # ruff: noqa
    from typing import Final

    from mycelium_mono import routing_config

    from clishop.msgs import Signal
    from clishop.svc import Audit

    LIMIT: Final = 10
    RATE: Final = -2.5
    PAIRS: Final = (1, 2)
    NAMES = ["swap", "signal"]
    TABLE = {"swap": 1}
    MIXED = [1, "a"]


    @routing_config
    class ConstBus:
        Signal = [Audit]
"""

CONSTANTS_USE = """\
    from clishop.consts import LIMIT, MIXED, NAMES, PAIRS, RATE, TABLE

    limit: int = LIMIT
    rate: float = RATE
    pairs: tuple[int, ...] = PAIRS
    names: list[str] = NAMES
    table: dict[str, int] = TABLE
    mixed: list[bytes] = MIXED  # Any: the stub cannot know
    wrong: str = LIMIT
"""


def test_module_constants_keep_their_types_in_the_stub(project: Path) -> None:
    # `LIMIT: Final = 10` used to be stubbed as `LIMIT: Final = ...` (an EllipsisType for mypy)
    # and literal containers as Any.
    (project / "clishop" / "consts.py").write_text(textwrap.dedent(CONSTANTS))
    assert stubs("clishop.consts", cwd=project).returncode == 0
    text = (project / "clishop" / "consts.pyi").read_text()
    assert "LIMIT: Final = 10" in text and "RATE: Final = -2.5" in text
    assert "PAIRS: Final[tuple[int, ...]] = ..." in text
    assert "NAMES: list[str]" in text and "TABLE: dict[str, int]" in text
    result = mypy(project, CONSTANTS_USE)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert 'Incompatible types in assignment (expression has type "int", variable has type ' \
           '"str")' in errors[0]
