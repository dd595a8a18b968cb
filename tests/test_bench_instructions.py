"""benchmarks/callgrind.py and `report.py --instructions`: the arithmetic behind the README's
instruction table, tested without running the benchmarks (those take minutes under callgrind).

The totals parser reads a file valgrind really wrote (for ``/bin/true``, a fraction of a
second), checked against valgrind's own ``callgrind_annotate``; the rest uses hand-made counts.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_modules import ROOT, load_file

BENCH = ROOT / "benchmarks"
X = "\N{MULTIPLICATION SIGN}"


@pytest.fixture(scope="module")
def callgrind() -> Iterator[ModuleType]:
    yield from load_file("bench_callgrind_under_test", BENCH / "callgrind.py")


@pytest.fixture(scope="module")
def report() -> Iterator[ModuleType]:
    yield from load_file("bench_report_instructions_under_test", BENCH / "report.py")


def test_totals_are_read_from_a_real_callgrind_file(callgrind: ModuleType,
                                                    tmp_path: Path) -> None:
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is not on PATH; install it with `apt install valgrind`"
    out = tmp_path / "callgrind.out"
    subprocess.run([valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "/bin/true"],
                   check=True, capture_output=True, timeout=120)
    annotated = subprocess.run(["callgrind_annotate", str(out)], check=True,
                               capture_output=True, text=True, timeout=120).stdout
    match = re.search(r"^([\d,]+)\s.*PROGRAM TOTALS", annotated, re.MULTILINE)
    assert match, annotated
    assert callgrind.parse_totals(out.read_text(), str(out)) == int(match[1].replace(",", ""))


def test_a_file_without_totals_is_a_clear_error(callgrind: ModuleType) -> None:
    with pytest.raises(callgrind.CallgrindError, match="no 'totals:' or 'summary:' line"):
        callgrind.parse_totals("events: Ir\n", "part.3")


def test_start_up_cancels_in_the_difference_per_emit(callgrind: ModuleType) -> None:
    start_up, per_emit = 400_000_000, 2231
    small = start_up + 2_000 * per_emit
    large = start_up + 22_000 * per_emit
    assert callgrind.per_emit(small, large, 20_000) == per_emit


def test_a_larger_run_that_counted_no_more_is_an_error(callgrind: ModuleType) -> None:
    with pytest.raises(callgrind.CallgrindError, match="no more than the smaller run"):
        callgrind.per_emit(5_000, 5_000, 20_000)


def test_dump_parts_are_taken_in_numeric_order(callgrind: ModuleType, tmp_path: Path) -> None:
    for name in ("out", "out.10", "out.2", "out.1", "out.tmp"):
        (tmp_path / name).write_text("")
    parts = callgrind._parts(tmp_path / "out")
    assert [part.name for part in parts] == ["out.1", "out.2", "out.10"]


def test_every_bar_names_a_row_that_exists(callgrind: ModuleType) -> None:
    keys = {row.key for row in callgrind.ROWS}
    assert len(keys) == len(callgrind.ROWS)
    assert [bar["vs"] for row in callgrind.ROWS for bar in row.bars if bar["vs"] not in keys] == []


def counts(python: str, per_emit: dict[str, float]) -> dict[str, Any]:
    bars = {"call": [{"vs": "hand", "at_most": 1.3}], "psygnal": [{"vs": "call", "at_least": 3}]}
    return {"python": python, "batches": [2, 22], "rows": [
        {"key": key, "label": f"row {key}", "reference": key == "hand", "bars": bars.get(key, []),
         "per_emit": value, "emits": 20_000}
        for key, value in per_emit.items()
    ]}


def render(report: ModuleType, tmp_path: Path, *runs: dict[str, Any]) -> str:
    paths = []
    for index, run in enumerate(runs):
        path = tmp_path / f"run{index}.json"
        path.write_text(json.dumps(run))
        paths.append(path)
    text: str = report.render_instructions([report.load_instructions(p) for p in paths])
    return text


def test_the_table_has_a_column_pair_per_python(report: ModuleType, tmp_path: Path) -> None:
    text = render(report, tmp_path,
                  counts("3.11.7", {"hand": 2000, "call": 2500, "psygnal": 9000}),
                  counts("3.12.1", {"hand": 1000, "call": 1200, "psygnal": 5000}))
    assert f"| | 3.11.7 | {X} ref | 3.12.1 | {X} ref |" in text
    assert "| row call | 2,500 | 1.25 | 1,200 | 1.20 |" in text


def test_bars_are_checked_on_each_pythons_counts(report: ModuleType, tmp_path: Path) -> None:
    # On 3.12 the call row is cheaper than the reference: the rows sort differently per
    # version, and each cell must still be that version's own row against its own row.
    text = render(report, tmp_path,
                  counts("3.11.7", {"hand": 2000, "call": 2800, "psygnal": 9000}),
                  counts("3.12.1", {"hand": 1000, "call": 900, "psygnal": 2250}))
    assert f"| row call ÷ row hand | ≤ 1.3{X} | 1.40{X} **missed** | 0.90{X} met |" in text
    assert f"| row psygnal ÷ row call | ≥ 3{X} | 3.21{X} met | 2.50{X} **missed** |" in text


def test_a_repeat_run_is_compared_with_the_first(report: ModuleType, tmp_path: Path) -> None:
    text = render(report, tmp_path,
                  counts("3.11.7", {"hand": 2000, "call": 2500, "psygnal": 9000}),
                  counts("3.11.7", {"hand": 2002, "call": 2500, "psygnal": 9000}))
    assert "- repeat run on 3.11.7: every row within 0.100% of the first run's count" in text
    assert text.count("| row call |") == 1


def test_a_file_that_is_not_a_count_file_is_refused(report: ModuleType, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps({"benchmarks": []}))
    assert report.render_instruction_files([path]) == 1
    assert "holds no instruction counts" in capsys.readouterr().err
