"""Run every ``benchmarks/bench_*.py`` in one pytest-benchmark run; print the ratio tables.

    python benchmarks/report.py               # everything (what `make bench` runs)
    python benchmarks/report.py --quick       # fewer rounds: a smoke run, noisier ratios
    python benchmarks/report.py -k emit       # only benchmarks matching a pytest -k expression
    python benchmarks/report.py --json out.json       # keep pytest-benchmark's raw results
    python benchmarks/report.py --from-json out.json  # render a saved run, run nothing
    python benchmarks/report.py -- -x         # anything after `--` goes to pytest
    python benchmarks/report.py --instructions .benchmarks/instructions-*.json
                                  # render benchmarks/callgrind.py's counts, run nothing

Absolute times on a shared 2-core machine move by tens of percent between runs; ratios between
rows measured side by side in one run are what we compare (DESIGN section 5). So each
pytest-benchmark ``group`` becomes one Markdown table whose last column is every row's mean
(``--stat median`` or ``min`` if asked) divided by that of the group's reference row, and rows
that declare a bar (a target ratio or added time against another row) are checked in a list
below the tables. pytest's own output goes to stderr, the Markdown to stdout:
``python benchmarks/report.py > table.md`` gives a clean file to paste into the README. The
``extra_info`` keys a benchmark can set are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

TIMES = "\N{MULTIPLICATION SIGN}"

STATS = ("mean", "median", "min")

QUICK_OPTIONS = ("--benchmark-max-time=0.05", "--benchmark-min-rounds=3")
"""``--quick``: about 50 ms per benchmark instead of pytest-benchmark's default 1 s."""


BAR_KINDS = ("at_most", "at_least", "adds_at_most")
"""``time(row) / time(vs)`` ≤ or ≥ a ratio; or ``time(row) - time(vs)`` ≤ seconds."""


@dataclass(frozen=True)
class Bar:
    """A target for one row against another: a ratio bound, or an added-time bound."""

    vs: str
    limit: float
    kind: str
    """One of :data:`BAR_KINDS`."""

    def describe(self) -> str:
        if self.kind == "adds_at_most":
            return f"adds ≤ {format_time(self.limit)}"
        return f"{'≤' if self.kind == 'at_most' else '≥'} {self.limit:g}{TIMES}"

    def measure(self, row: Row, vs: Row) -> float:
        return row.time - vs.time if self.kind == "adds_at_most" else row.time / vs.time

    def met(self, measured: float) -> bool:
        return measured >= self.limit if self.kind == "at_least" else measured <= self.limit

    def show(self, measured: float) -> str:
        if self.kind == "adds_at_most":
            return f"{'+' if measured >= 0 else '-'}{format_time(abs(measured))}"
        return f"{measured:.2f}{TIMES}"


@dataclass(frozen=True)
class Row:
    """One benchmark of the run, its time already divided by the operations per call."""

    group: str
    name: str
    label: str
    time: float
    """Seconds per operation (the run's chosen statistic: mean unless ``--stat`` says)."""
    reference: bool
    bars: tuple[Bar, ...]
    note: str


@dataclass(frozen=True)
class Group:
    name: str
    rows: tuple[Row, ...]
    """Fastest first."""
    reference: Row
    warning: str


@dataclass(frozen=True)
class BarCheck:
    row: Row
    bar: Bar
    vs: Row | None
    measured: float | None
    """The ratio (or, for ``adds_at_most``, the seconds added); ``None`` if ``vs`` did not run."""


class ReportError(Exception):
    """The run's results cannot be turned into a table (the message says why and what to do)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.from_json:
        return render_saved(Path(args.from_json), command="", stat=args.stat)
    if args.instructions:
        return render_instruction_files([Path(path) for path in args.instructions])
    shown = shlex.join(["python", "benchmarks/report.py", *argv])
    if args.json:
        return run_and_render(args, Path(args.json), shown)
    with tempfile.TemporaryDirectory(prefix="mycelium-bench-") as tmp:
        return run_and_render(args, Path(tmp) / "benchmarks.json", shown)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run all benchmarks/bench_*.py in one pytest-benchmark run and print "
        "Markdown ratio tables (each row's time relative to its group's reference row)."
    )
    parser.add_argument("-k", metavar="EXPR", help="only benchmarks matching a pytest -k expr")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="keep pytest-benchmark's JSON here")
    parser.add_argument(
        "--from-json", metavar="PATH", help="render a saved pytest-benchmark JSON, run nothing"
    )
    parser.add_argument(
        "--stat",
        choices=STATS,
        default="mean",
        help="the statistic compared (default mean; median or min resist a noisy neighbour)",
    )
    parser.add_argument(
        "--instructions", metavar="PATH", nargs="+",
        help="render benchmarks/callgrind.py --json files (one per Python; a second file of "
        "the same Python is a repeat run, compared with the first), run nothing",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after `--`")
    return parser.parse_args(argv)


def pytest_command(args: argparse.Namespace, json_path: Path) -> list[str]:
    command = [
        sys.executable, "-m", "pytest", str(BENCH_DIR), "-p", "no:cacheprovider", "-q",
        f"--benchmark-json={json_path}",
    ]
    if args.k:
        command += ["-k", args.k]
    if args.quick:
        command += QUICK_OPTIONS
    return command + list(args.pytest_args)


def run_and_render(args: argparse.Namespace, json_path: Path, shown: str) -> int:
    command = pytest_command(args, json_path)
    # pytest's progress and pytest-benchmark's own tables go to stderr; stdout is the Markdown.
    status = subprocess.run(command, cwd=ROOT, stdout=sys.stderr, check=False).returncode
    if not json_path.exists():
        hint = (
            f"no benchmark matched -k {args.k!r}; `python -m pytest benchmarks --collect-only "
            "-q` lists them"
            if status == pytest.ExitCode.NO_TESTS_COLLECTED
            else "read the pytest output above; `python -m pytest benchmarks -x` reruns it"
        )
        print(
            f"error: pytest exited with status {status} and wrote no results to {json_path}\n"
            f"help: {hint}",
            file=sys.stderr,
        )
        return status or 1
    rendered = render_saved(json_path, command=shown, stat=args.stat)
    if status != 0:
        print(
            f"warning: pytest exited with status {status}: the tables above miss the benchmarks "
            "that failed or were not collected (see the pytest output on stderr)",
            file=sys.stderr,
        )
        return status
    return rendered


def render_saved(json_path: Path, *, command: str, stat: str) -> int:
    try:
        data = json.loads(json_path.read_text())
        rows = [row_from(bench, stat) for bench in data.get("benchmarks", [])]
        if not rows:
            raise ReportError(
                f"{json_path} holds no benchmark results\n"
                "help: check the -k expression, or that benchmark files are named bench_*.py"
            )
        print(render(group_rows(rows), data, command, stat))
    except OSError as exc:
        print(
            f"error: cannot read benchmark results {json_path}: {exc.strerror}\n"
            "help: pass the file an earlier `report.py --json PATH` run wrote",
            file=sys.stderr,
        )
        return 1
    except (ValueError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def row_from(bench: dict[str, Any], stat: str = "mean") -> Row:
    """A table row from one entry of pytest-benchmark's JSON ``benchmarks`` list."""
    extra: dict[str, Any] = bench.get("extra_info") or {}
    name = str(bench["name"])
    ops = extra.get("ops", 1)
    if not isinstance(ops, int) or ops < 1:
        raise ReportError(
            f"benchmark {name}: extra_info['ops'] must be a positive int, got {ops!r}\n"
            "help: set it to the number of operations one benchmark call performs"
        )
    return Row(
        group=str(bench.get("group") or _file_of(bench)),
        name=name,
        label=str(extra.get("label") or name),
        time=float(bench["stats"][stat]) / ops,
        reference=extra.get("reference") is True,
        bars=_bars_from(extra.get("bar"), name),
        note=str(extra.get("note") or ""),
    )


def _file_of(bench: dict[str, Any]) -> str:
    # A benchmark with no group gets one per file, so its rows still compare with neighbours.
    return str(bench.get("fullname", "")).partition("::")[0] or "ungrouped"


def _bars_from(raw: Any, name: str) -> tuple[Bar, ...]:
    """``extra_info['bar']``: one bar, or a list of bars when a row answers several."""
    if raw is None:
        return ()
    return tuple(_bar_from(one, name) for one in (raw if isinstance(raw, list) else [raw]))


def _bar_from(raw: Any, name: str) -> Bar:
    given = [key for key in BAR_KINDS if isinstance(raw, dict) and raw.get(key) is not None]
    if not isinstance(raw, dict) or not isinstance(raw.get("vs"), str) or len(given) != 1:
        raise ReportError(
            f"benchmark {name}: extra_info['bar'] is {raw!r}\n"
            "help: write {'vs': '<label or name of a row>', 'at_most': 1.4} "
            "(or 'at_least': 3.0, or 'adds_at_most': 0.002 seconds), exactly one limit; "
            "a list of such dicts for several bars"
        )
    kind = given[0]
    value = raw[kind]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ReportError(f"benchmark {name}: extra_info['bar'][{kind!r}] must be a number")
    return Bar(raw["vs"], float(value), kind)


def group_rows(rows: Sequence[Row]) -> list[Group]:
    """Rows by group, in the order groups first appear in the run."""
    by_group: dict[str, list[Row]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    return [_group(name, members) for name, members in by_group.items()]


def _group(name: str, rows: list[Row]) -> Group:
    marked = [row for row in rows if row.reference]
    warning = ""
    if not marked:
        warning = "no row marked as reference; ratios are against the first row run"
    elif len(marked) > 1:
        warning = f"{len(marked)} rows marked as reference; ratios are against the first"
    reference = marked[0] if marked else rows[0]
    return Group(name, tuple(sorted(rows, key=lambda row: row.time)), reference, warning)


def render(groups: Sequence[Group], data: dict[str, Any], command: str, stat: str) -> str:
    lines = [_provenance(data, command), ""]
    for group in groups:
        lines += _render_group(group, stat)
    checks = check_bars(groups)
    if checks:
        lines += _render_bars(checks)
    return "\n".join(lines).rstrip() + "\n"


def _provenance(data: dict[str, Any], command: str) -> str:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    cpus = cpu.get("count")
    commit = data.get("commit_info", {})
    revision = str(commit.get("id") or "")[:10]
    dirty = " (uncommitted changes)" if commit.get("dirty") else ""
    parts = [
        f"{machine.get('python_implementation', 'Python')} {machine.get('python_version', '?')}",
        f"{machine.get('system', '?')} {machine.get('machine', '')}".strip(),
        f"{cpus} CPUs" if cpus else "",
        cpu.get("brand_raw", ""),
        f"commit {revision}{dirty}" if revision else "",
        _when(data),
    ]
    ran = f"`{command}`" if command else "a saved run"
    return f"_{ran}: {', '.join(part for part in parts if part)}._"


def _when(data: dict[str, Any]) -> str:
    started = str(data.get("datetime") or "")  # ISO 8601 in UTC: 2026-11-24T23:41:50.36+00:00
    return f"{started[:19].replace('T', ' ')} UTC" if started else ""


def _render_group(group: Group, stat: str) -> list[str]:
    with_notes = any(row.note for row in group.rows)
    header = f"| | time per op ({stat}) | {TIMES} reference |" + (" note |" if with_notes else "")
    rule = "|---|---:|---:|" + ("---|" if with_notes else "")
    lines = [f"### {group.name}", ""]
    if group.warning:
        lines += [f"_{group.warning}._", ""]
    lines += [header, rule]
    for row in group.rows:
        label = _cell(row.label) + (" **(reference)**" if row is group.reference else "")
        cells = [label, format_time(row.time), f"{row.time / group.reference.time:.2f}"]
        if with_notes:
            cells.append(_cell(row.note))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def check_bars(groups: Sequence[Group]) -> list[BarCheck]:
    """Every declared bar, with the measured ratio (``None`` if its ``vs`` row did not run)."""
    checks = []
    for group in groups:
        for row in group.rows:
            for bar in row.bars:
                vs = _find(bar.vs, group, groups)
                measured = bar.measure(row, vs) if vs is not None else None
                checks.append(BarCheck(row, bar, vs, measured))
    return checks


def _find(key: str, group: Group, groups: Sequence[Group]) -> Row | None:
    # The same group first: labels like "generated emit" may repeat across groups.
    for candidates in (group.rows, [row for other in groups for row in other.rows]):
        for row in candidates:
            if key in (row.label, row.name):
                return row
    return None


def _render_bars(checks: Sequence[BarCheck]) -> list[str]:
    lines = ["### Bars (DESIGN section 5)", "", "| row against row | measured | bar | |"]
    lines.append("|---|---:|---:|---|")
    for check in checks:
        sign = "-" if check.bar.kind == "adds_at_most" else "÷"
        what = f"{_cell(check.row.label)} {sign} {_cell(check.bar.vs)}"
        if check.measured is None:
            measured, verdict = "—", f"not measured: no row `{_cell(check.bar.vs)}` in this run"
        else:
            measured = check.bar.show(check.measured)
            verdict = "met" if check.bar.met(check.measured) else "**missed**"
        lines.append(f"| {what} | {measured} | {check.bar.describe()} | {verdict} |")
    return [*lines, ""]


def format_time(seconds: float) -> str:
    """``1.234e-07`` → ``123 ns``; three significant digits from ns to s."""
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)):
        # 999.5 not 1000: a value that rounds to 1000 is shown as 1.00 of the next unit.
        if seconds / scale < 999.5:
            return f"{_three_digits(seconds / scale)} {unit}"
    return f"{_three_digits(seconds)} s"


def _three_digits(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- instruction counts (benchmarks/callgrind.py) --------------------------------------------


@dataclass(frozen=True)
class InstructionRun:
    """One ``callgrind.py --json`` file: instructions per emit of every row, on one Python."""

    python: str
    rows: tuple[Row, ...]
    """``Row.time`` holds instructions per emit; ``Row.name`` the row key bars refer to."""
    data: dict[str, Any]


def render_instruction_files(paths: Sequence[Path]) -> int:
    try:
        runs = [load_instructions(path) for path in paths]
    except OSError as exc:
        print(f"error: cannot read {exc.filename}: {exc.strerror}\n"
              "help: `make bench-instructions` writes .benchmarks/instructions-<version>.json",
              file=sys.stderr)
        return 1
    except (ValueError, KeyError, TypeError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_instructions(runs))
    return 0


def load_instructions(path: Path) -> InstructionRun:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not data.get("rows"):
        raise ReportError(f"{path} holds no instruction counts\n"
                          "help: write it with `python benchmarks/callgrind.py --json PATH`")
    rows = tuple(
        Row(group="instructions per emit", name=str(raw["key"]), label=str(raw["label"]),
            time=float(raw["per_emit"]), reference=raw.get("reference") is True,
            bars=_bars_from(raw.get("bars") or None, str(raw["key"])), note="")
        for raw in data["rows"]
    )
    return InstructionRun(str(data["python"]), rows, data)


def render_instructions(runs: Sequence[InstructionRun]) -> str:
    """One table, rows by Python version, the bars checked per version, and repeat runs."""
    first: dict[str, InstructionRun] = {}
    for run in runs:
        first.setdefault(run.python, run)
    shown = list(first.values())
    groups = [_group(run.python, list(run.rows)) for run in shown]
    lines = [_instruction_provenance(shown), ""]
    lines += _instruction_table(shown, groups)
    lines += _instruction_bars(shown, groups)
    lines += _repeat_lines(runs, first)
    return "\n".join(lines).rstrip() + "\n"


def _instruction_provenance(runs: Sequence[InstructionRun]) -> str:
    def one(run: InstructionRun) -> str:
        libraries = run.data.get("libraries", {})
        compiled = "mypyc" if run.data.get("psygnal_compiled") else "pure Python"
        return (f"CPython {run.python} (psygnal {libraries.get('psygnal', '?')}, {compiled})")

    first = runs[0].data
    small, large = first.get("batches", ["?", "?"])
    emits = first["rows"][0].get("emits", "?")
    return (f"_`python benchmarks/callgrind.py` per Python (`make bench-instructions`): "
            f"{first.get('valgrind', 'valgrind')}, {first.get('machine', '')}; "
            f"{', '.join(one(run) for run in runs)}. Instructions per emit: the difference "
            f"of the callgrind counts of {large} and {small} batches, ÷ the {emits:,} emits "
            f"between them._")


def _instruction_table(runs: Sequence[InstructionRun], groups: Sequence[Group]) -> list[str]:
    header = "| |" + "".join(f" {run.python} | {TIMES} ref |" for run in runs)
    lines = ["### instructions per emit, 3 handlers", "", header,
             "|---|" + "---:|---:|" * len(runs)]
    for row in groups[0].rows:  # fewest instructions first, on the first version
        cells = [_cell(row.label) + (" **(reference)**" if row.reference else "")]
        for group in groups:
            same = next((r for r in group.rows if r.name == row.name), None)
            cells += (["—", "—"] if same is None else
                      [f"{same.time:,.0f}", f"{same.time / group.reference.time:.2f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _instruction_bars(runs: Sequence[InstructionRun], groups: Sequence[Group]) -> list[str]:
    # Keyed by row and bar, not position: each version's rows are sorted by its own counts.
    per_version = [{(check.row.name, check.bar): check for check in check_bars([group])}
                   for group in groups]
    if not per_version[0]:
        return []
    lines = ["### Bars on instruction counts (DESIGN section 5)", "",
             "| row against row | bar |" + "".join(f" {run.python} |" for run in runs),
             "|---|---:|" + "---:|" * len(runs)]
    for key, check in per_version[0].items():
        vs = check.vs.label if check.vs is not None else check.bar.vs
        cells = [f"{_cell(check.row.label)} ÷ {_cell(vs)}", check.bar.describe()]
        for checks in per_version:
            one = checks.get(key)
            cells.append("not measured" if one is None or one.measured is None else
                         f"{one.bar.show(one.measured)} "
                         f"{'met' if one.bar.met(one.measured) else '**missed**'}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _repeat_lines(runs: Sequence[InstructionRun], first: dict[str, InstructionRun]) -> list[str]:
    lines = []
    for run in runs:
        base = first[run.python]
        if run is base:
            continue
        worst = repeat_difference(base, run)
        lines.append(f"- repeat run on {run.python}: every row within {worst:.3%} of the first "
                     "run's count")
    return [*lines, ""] if lines else []


def repeat_difference(base: InstructionRun, again: InstructionRun) -> float:
    """The largest relative difference of a row's count between two runs of one Python."""
    counts = {row.name: row.time for row in base.rows}
    shared = [row for row in again.rows if row.name in counts]
    if not shared:
        raise ReportError(f"the two {base.python} runs share no row")
    return max(abs(row.time - counts[row.name]) / counts[row.name] for row in shared)


if __name__ == "__main__":
    sys.exit(main())
