"""Handler classes as users write them type-check under ``mypy --strict`` (issue 15.15).

mypy runs in a subprocess on a small file, as ``tests/test_stubs.py`` does for the stubs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

MYPY = Path(sys.executable).parent / "mypy"

HANDLERS = """\
    from mycelium_mono import I64, MessageHandler, handles, message


    @message(type_id=58401, topic="typing.tick")
    class Tick:
        value: I64


    class SyncCounter(MessageHandler[Tick]):
        def __init__(self) -> None:
            self.n = 0

        def handle(self, msg: Tick) -> None:
            self.n += msg.value


    class AsyncWriter(MessageHandler[Tick]):
        def __init__(self) -> None:
            self.rows: list[int] = []

        async def handle(self, msg: Tick) -> None:
            self.rows.append(msg.value)


    class Several:
        @handles(Tick)
        async def on_tick(self, msg: Tick) -> None:
            pass
"""


def run_mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "handlers_typed.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.run(
        [str(MYPY), "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"),
         str(path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


def test_async_def_handle_in_a_message_handler_subclass_passes_mypy_strict(
    tmp_path: Path,
) -> None:
    result = run_mypy(tmp_path, HANDLERS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_handle_with_the_wrong_message_type_is_still_a_mypy_error(tmp_path: Path) -> None:
    wrong = HANDLERS.replace("async def handle(self, msg: Tick)",
                             "async def handle(self, msg: str)")
    result = run_mypy(tmp_path, wrong)
    assert result.returncode == 1 and "[override]" in result.stdout, result.stdout
