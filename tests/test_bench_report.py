"""benchmarks/report.py: the ratio tables and the bar verdicts the README quotes.

The report is how every number in the README is produced, so its arithmetic is tested here on
a hand-made pytest-benchmark JSON (no benchmark runs): ratios against the reference row, bars
met and missed, a row that answers several bars, and clear errors for malformed bars.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_modules import ROOT, load_file

REPORT = ROOT / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report() -> Iterator[ModuleType]:
    yield from load_file("bench_report_under_test", REPORT)


def bench(name: str, mean: float, group: str = "g", **extra: Any) -> dict[str, Any]:
    return {"name": name, "group": group, "stats": {"mean": mean, "median": mean, "min": mean},
            "extra_info": extra}


def render(report: ModuleType, tmp_path: Path, *benches: dict[str, Any]) -> str:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"benchmarks": list(benches)}))
    rows = [report.row_from(b) for b in json.loads(saved.read_text())["benchmarks"]]
    text: str = report.render(report.group_rows(rows), {}, "test", "mean")
    return text


def bar_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ÷ " in line or " - " in line]


def test_ratios_are_per_operation_against_the_reference(report: ModuleType,
                                                       tmp_path: Path) -> None:
    text = render(report, tmp_path,
                  bench("ref", 1e-3, ops=1000, reference=True, label="hand"),
                  bench("slow", 3e-3, ops=1000, label="slow"))
    assert "| hand **(reference)** | 1.00 µs | 1.00 |" in text
    assert "| slow | 3.00 µs | 3.00 |" in text


@pytest.mark.parametrize(("seconds", "shown"), [
    (42e-9, "42.0 ns"), (999.4e-9, "999 ns"), (1e-6, "1.00 µs"), (0.9999e-3, "1.00 ms"),
    (2.5, "2.50 s"),
])
def test_times_have_three_digits_and_the_right_unit(report: ModuleType, seconds: float,
                                                    shown: str) -> None:
    assert report.format_time(seconds) == shown


def test_one_row_can_answer_several_bars(report: ModuleType, tmp_path: Path) -> None:
    bars = [{"vs": "loop", "adds_at_most": 1.5e-6}, {"vs": "mono", "at_least": 10.0}]
    text = render(report, tmp_path,
                  bench("mono", 100e-9, label="mono", reference=True),
                  bench("loop", 10e-9, label="loop"),
                  bench("bus", 700e-9, label="bus", bar=bars))
    lines = bar_lines(text)
    assert len(lines) == 2
    added, ratio = lines
    assert "bus - loop" in added and "+690 ns" in added and added.endswith("| met |")
    assert "bus ÷ mono" in ratio and "7.00\N{MULTIPLICATION SIGN}" in ratio
    assert ratio.endswith("| **missed** |")


def test_a_bar_against_a_row_that_did_not_run_says_so(report: ModuleType,
                                                      tmp_path: Path) -> None:
    text = render(report, tmp_path, bench("a", 1e-9, bar={"vs": "absent", "at_most": 2}))
    assert "not measured: no row `absent` in this run" in text


@pytest.mark.parametrize("bar", [
    {"vs": "x"},
    {"vs": "x", "at_most": 1, "at_least": 2},
    {"at_most": 1},
    [{"vs": "x", "at_most": "1"}],
])
def test_a_malformed_bar_is_a_clear_error(report: ModuleType, bar: Any) -> None:
    with pytest.raises(report.ReportError, match="extra_info\\['bar'\\]"):
        report.row_from(bench("b", 1e-9, bar=bar))
