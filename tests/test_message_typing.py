"""The members ``@message`` generates are typed under ``mypy --strict`` (stranger r03).

A class that inherits :class:`mycelium_mono.Message` has ``to_bytes``, ``from_bytes``,
``replace`` and the class constants declared for the checker; without the base they are
``attr-defined`` errors. mypy runs in a subprocess, as in ``tests/test_handler_typing.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

MYPY = Path(sys.executable).parent / "mypy"

MEMBERS = ("to_bytes", "from_bytes", "replace", "SIZE", "TYPE_ID", "TOPIC", "FIELDS",
           "FINGERPRINT")

PROGRAM = """\
    from typing import Annotated, assert_type

    from mycelium_mono import U32, Message, Text, message


    @message(type_id=58501, topic="typing.shipments")
    class Shipment{base}:
        sku: Annotated[str, Text(12)]
        qty: U32


    s = Shipment(sku="KÄSE-42", qty=3)
    data: bytes = s.to_bytes()
    back = Shipment.from_bytes(data)
    assert_type(back, Shipment)
    assert_type(Shipment.from_bytes(memoryview(data)), Shipment)
    changed = s.replace(qty=4)
    assert_type(changed, Shipment)
    assert_type(changed.qty, int)
    size: int = Shipment.SIZE
    type_id: int = Shipment.TYPE_ID
    topic: str = Shipment.TOPIC
    fingerprint: int = Shipment.FINGERPRINT
    names: list[str] = [name for name, spec in Shipment.FIELDS if spec.size > 0]
    print(back == s, size, type_id, topic, fingerprint, names)
"""


def run_mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "messages_typed.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.run(
        [str(MYPY), "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"),
         str(path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


def test_every_generated_member_is_typed_with_the_message_base(tmp_path: Path) -> None:
    result = run_mypy(tmp_path, PROGRAM.format(base="(Message)"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_the_base_the_members_are_attr_defined_errors(tmp_path: Path) -> None:
    result = run_mypy(tmp_path, PROGRAM.format(base=""))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.endswith("[attr-defined]")]
    for member in MEMBERS:
        # 3.13's mypy adds a hint to one of them: '...has no attribute "replace"; maybe
        # "__replace__"?'.
        assert any(f'has no attribute "{member}"' in line for line in errors), member


def test_the_typed_program_runs_with_and_without_the_base(tmp_path: Path) -> None:
    for base in ("(Message)", ""):
        path = tmp_path / "messages_run.py"
        path.write_text(textwrap.dedent(PROGRAM.format(base=base)))
        result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("True 16 58501 typing.shipments "), result.stdout
        assert result.stdout.rstrip().endswith("['sku', 'qty']"), result.stdout
