"""A stranger's static-typing audit (stranger round 8, `types8`): a lending library written
from the README, checked by the real `mypy --strict` as a user would run it.

The app (`tests/types8_app/library/`: Loan, Return, Ledger messages; a `MessageHandler[Loan]`,
stacked `@handles`, an async handler, static and class method handlers; a routed `LibraryBus`)
is copied to a temporary directory, where `mycelium-mono stubs` writes its `.pyi`. Three user
programs mark their expected errors on their lines (`# E: code[, code]`); ONE mypy run checks
them all (mypy is slow) and each program must get exactly its marked (line, code) pairs: a wrong
line mypy accepts and a right line it refuses both fail. The app also runs, so the programs that
pass mypy are programs that work.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

APP = Path(__file__).parent / "types8_app"
ERROR = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$",
                   re.MULTILINE)
MARK = re.compile(r"#\s*E:\s*(?P<codes>[a-z, -]+)$")

USER_MESSAGES = """\
    from typing import assert_type

    from library.messages import Ledger, Loan, Return

    loan = Loan(member=7, isbn=bytes(20), title="Dune")
    assert_type(loan.member, int)
    assert_type(loan.isbn, bytes)
    assert_type(loan.title, str)
    assert_type(loan.replace(member=8), Loan)
    assert_type(Loan.from_bytes(loan.to_bytes()), Loan)
    back = Return(7, bytes(20))
    owed = Ledger(member=7, balance=-2)

    Loan(member="7", isbn=bytes(20), title="Dune")  # E: arg-type
    Loan(member=7, isbn=20, title="Dune")  # E: arg-type
    Loan(member=7, isbn=bytes(20), title=b"Dune")  # E: arg-type
    Loan(member=7, isbn=bytes(20))  # E: call-arg
    Loan(member=7, isbn=bytes(20), title="Dune", due=3)  # E: call-arg
    Return(memberr=7, isbn=bytes(20))  # E: call-arg
    as_int: int = loan.isbn  # E: assignment
    loan.isbn + 1  # E: operator
    loan.member = 1  # E: misc
    owed.replace(balance=1).balance = 2  # E: misc
    Ledger.from_bytes(loan)  # E: arg-type
    wrong_kind: Return = Loan.from_bytes(loan.to_bytes())  # E: assignment
    print(back, owed)
"""

USER_HANDLERS = """\
    import asyncio
    from typing import assert_type

    from library.messages import Ledger, Loan, Return
    from library.services import Archivist, Auditor, Desk, Shelver
    from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime, handles
    from mycelium_mono import route, service
    from mycelium_mono.bus import Publisher, Subscriber

    loan = Loan(member=7, isbn=bytes(20), title="Dune")
    ret = Return(member=7, isbn=bytes(20))


    class LateFees(MessageHandler[Return]):
        async def handle(self, m: Return) -> None:
            self.emit(Ledger(member=m.member, balance=-5))


    class Wrong(MessageHandler[Loan]):
        def handle(self, m: Return) -> None:  # E: override
            ...


    class WrongReturn(MessageHandler[Loan]):
        def handle(self, m: Loan) -> int:  # E: override
            return 1


    @service
    class Catalogue:
        async def run(self, ctx: ServiceContext) -> None:
            await ctx.emit(loan)
            ctx.emit_nowait(ret)
            ctx.emit(loan)  # E: unused-coroutine
            await ctx.emit_nowait(ret)  # E: misc, func-returns-value


    async def main() -> None:
        bus = MessageBus()
        loans = bus.publisher(Loan)
        assert_type(loans, Publisher[Loan])
        returns = bus.subscribe(Return)
        assert_type(returns, Subscriber[Return])
        await loans.publish(loan)
        got = await returns.recv()
        assert_type(got, Return)
        runtime = ServiceRuntime(bus)
        for handler in (Desk(), Archivist(), Auditor(), Shelver(), LateFees()):
            await runtime.spawn_service(handler)
        await runtime.spawn_service(Catalogue())
        await runtime.shutdown()

        await loans.publish(ret)  # E: arg-type
        loans.publish_nowait(Ledger(member=1, balance=0))  # E: arg-type
        as_loan: Loan = await returns.recv()  # E: assignment
        got.title  # E: attr-defined
        bus.publisher(loan)  # E: arg-type
        bus.subscribe("library.returns")  # E: arg-type


    ok_route = route(sync=[Desk, Archivist], background=[Auditor])
    route(sync=[1])  # E: list-item
    route(background="Auditor")  # E: arg-type
    route(Desk)  # E: call-arg, arg-type
    route(synch=[Desk])  # E: call-arg
    asyncio.run(main())
"""

USER_BUS = """\
    import asyncio
    from typing import assert_type

    from library.messages import Ledger, Loan, Return
    from library.routing import LibraryBus
    from library.services import Archivist, Auditor, Desk, Shelver

    loan = Loan(member=7, isbn=bytes(20), title="Dune")
    ret = Return(member=7, isbn=bytes(20))
    bus = LibraryBus(desk=Desk(), archivist=Archivist(), shelver=Shelver(), auditor=Auditor())
    same = LibraryBus(Desk(), Archivist(), Shelver(), Auditor())
    bus.emit_loan(loan)
    bus.emit_loan_sync(loan)
    bus.emit_return(ret)
    bus.emit_ledger(Ledger(member=7, balance=1))
    bus.emit(ret)
    assert_type(bus.archivist, Archivist)
    assert_type(bus.auditor.balance, int)


    async def main() -> None:
        await bus.emit_loan_async(loan)
        await bus.emit_ledger_async(Ledger(member=7, balance=1))
        await bus.background.drain()
        bus.emit_loan_async(loan)  # E: unused-coroutine


    bus.emit_loan(ret)  # E: arg-type
    bus.emit_return(loan)  # E: arg-type
    bus.emit_loan_sync(Ledger(member=7, balance=1))  # E: arg-type
    bus.emit_return_sync(ret)  # E: attr-defined
    bus.emit("loan")  # E: arg-type
    LibraryBus(Desk(), Archivist(), Shelver(), audtor=Auditor())  # E: call-arg
    LibraryBus(Archivist(), Archivist(), Shelver(), Auditor())  # E: arg-type
    LibraryBus(Desk(), Archivist(), Shelver())  # E: call-arg
    bus.desk = Desk()
    bus.shelver = Auditor()  # E: assignment
    asyncio.run(main())
    print(same)
"""

PROGRAMS = {"user_messages.py": USER_MESSAGES, "user_handlers.py": USER_HANDLERS,
            "user_bus.py": USER_BUS}

RUN_APP = """\
import asyncio
from library.messages import Loan, Return
from library.routing import LibraryBus
from library.services import Archivist, Auditor, Desk, Shelver

bus = LibraryBus(Desk(), Archivist(), Shelver(), Auditor())


async def main() -> None:
    bus.emit_loan(Loan(member=1, isbn=bytes(20), title="Dune"))
    bus.emit_return(Return(member=1, isbn=bytes(20)))
    await bus.background.drain()
    print(bus.desk.lent, bus.auditor.balance, len(bus.archivist.seen))

asyncio.run(main())
"""


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MYPYPATH", None)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library app in a fresh directory, with `mycelium-mono stubs` run on its routing."""
    root = tmp_path_factory.mktemp("types8")
    shutil.copytree(APP / "library", root / "library",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    written = subprocess.run(
        [sys.executable, "-m", "mycelium_mono", "stubs", "library.routing"], cwd=root,
        capture_output=True, text=True, timeout=120, env=_env(root))
    assert written.returncode == 0, written.stdout + written.stderr
    return root


def expected_errors(source: str) -> set[tuple[int, str]]:
    found = set()
    for number, line in enumerate(source.splitlines(), start=1):
        mark = MARK.search(line)
        if mark:
            found |= {(number, code.strip()) for code in mark["codes"].split(",")}
    return found


@pytest.fixture(scope="module")
def mypy_output(project: Path) -> str:
    """One `mypy --strict` run over every program (each run costs seconds)."""
    for name, program in PROGRAMS.items():
        (project / name).write_text(textwrap.dedent(program))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(project / ".mypy"),
         "--show-error-codes", "--no-color-output", "--no-error-summary", *PROGRAMS],
        cwd=project, capture_output=True, text=True, timeout=300, env=_env(project))
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 2: mypy itself failed
    others = [m[0] for m in ERROR.finditer(result.stdout) if m["file"] not in PROGRAMS]
    assert not others, "errors in the app or its stubs, not the programs:\n" + "\n".join(others)
    return result.stdout


def check(output: str, name: str) -> None:
    want = expected_errors(textwrap.dedent(PROGRAMS[name]))
    assert want, "a program with no marked error proves nothing about rejection"
    got = {(int(m["line"]), m["code"]) for m in ERROR.finditer(output) if m["file"] == name}
    assert got == want, (
        f"missing (a wrong line mypy accepted): {sorted(want - got)}\n"
        f"unexpected (a right line mypy refused): {sorted(got - want)}\n{output}"
    )


def test_message_fields_construction_and_frozenness_are_typed(mypy_output: str) -> None:
    check(mypy_output, "user_messages.py")


def test_handlers_publishers_subscribers_contexts_and_route_are_typed(mypy_output: str) -> None:
    # `route(Desk)` and `route(synch=[...])` passed mypy (`*args: Any, **unknown: Any`) and
    # failed only at import time as RoutingError E0007; now they are errors on their line.
    check(mypy_output, "user_handlers.py")


def test_the_stubbed_bus_types_emits_and_constructor_keywords(mypy_output: str) -> None:
    check(mypy_output, "user_bus.py")


def test_the_app_the_programs_type_check_against_runs(project: Path) -> None:
    # Static and class method handlers and stacked marks pass mypy above; they also work.
    ran = subprocess.run([sys.executable, "-c", RUN_APP], cwd=project, capture_output=True,
                         text=True, timeout=120, env=_env(project))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1] == "1 -1 2", ran.stdout


@pytest.mark.parametrize("call", ["route(Desk)", "route(synch=[Desk])"])
def test_what_mypy_now_refuses_in_route_is_refused_at_import_too(project: Path,
                                                                   call: str) -> None:
    # The typing-only signature of route() must not hide a call the runtime accepts.
    (project / "library" / "bad_routing.py").write_text(
        "from library.messages import Loan  # noqa: F401\n"
        "from library.services import Desk\n"
        "from mycelium_mono import route, routing_config\n\n\n"
        f"@routing_config\nclass BadBus:\n    Loan = {call}\n")
    ran = subprocess.run([sys.executable, "-c", "import library.bad_routing"], cwd=project,
                         capture_output=True, text=True, timeout=120, env=_env(project))
    assert ran.returncode == 1 and "E0007" in ran.stderr, ran.stderr
