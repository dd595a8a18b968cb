"""Instructions per emit, counted by callgrind: the dispatch ratios that noise cannot move.

    python benchmarks/callgrind.py                      # every row, this interpreter
    python benchmarks/callgrind.py --json out.json      # keep the counts (what report.py reads)
    python benchmarks/callgrind.py -k psygnal           # rows whose key or label contains it
    make bench-instructions                             # every supported Python, then the table

On this shared 2-core machine wall-clock ratios move by 10-40 % between runs (issue 13), so
every ratio bar of ``bench_emit``/``bench_inline`` is also checked on instruction counts. Each
row is one dispatch statement of those suites: the very same loops, which
``mycelium_bench.workload`` and ``mycelium_bench.dispatchers`` hold for both.

All rows run in one interpreter under ``valgrind --tool=callgrind --dump-before=os_getppid``.
The child calls ``os.getppid()`` between stages, so callgrind writes one part per stage and
start-up is in no counted part. Per row: build it and run one warm-up batch (the specialising
interpreter settles), then ``SMALL`` and ``LARGE`` batches of ``BATCH`` emits. The difference
of those two parts divided by the emits between them is the cost of one emit, the call-site
loop included (as in the wall-clock rows, where the loop is a row of its own and never
subtracted); what the marker call and entering the batch loop cost is in both and cancels.

Also kept equal between runs: ``PYTHONHASHSEED=0``; a native run of the child first, so every
``.pyc`` and the import hook's cache exist before the counted run; the real interpreter binary
(``sys.executable`` checked through its symlinks to be an ELF file: valgrind would count a
pyenv shim's bash). The venv's ``python`` symlink is what runs, so the venv stays in effect.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
FIXTURES = BENCH_DIR / "fixtures"
SMALL, LARGE = 2, 22
"""Batches of ``BATCH`` emits in the two counted runs: 20,000 emits apart."""
EMIT_GROUP = "emit to 3 handlers"
INLINE_GROUP = "inline: emit to 3 handlers"
_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)

Run = Callable[[Sequence[Any]], None]


@dataclass(frozen=True)
class Row:
    """One dispatch statement: how to build it, and the bars its count must meet."""

    key: str
    label: str
    group: str
    build: Callable[[Any], tuple[Run, bool]] = field(repr=False)
    """``build(handlers)`` → the timed loop, and whether it delivers to the handlers."""
    bars: tuple[dict[str, Any], ...] = ()
    """As ``benchmark.extra_info['bar']`` (benchmarks/README.md); ``vs`` is a row key."""
    reference: bool = False


@dataclass(frozen=True)
class Count:
    """One row's two callgrind totals and the per-emit difference."""

    key: str
    small: int
    large: int
    emits: int
    """Emits between the two runs: ``(LARGE - SMALL) * BATCH``."""

    @property
    def per_emit(self) -> float:
        return per_emit(self.small, self.large, self.emits)


class CallgrindError(Exception):
    """valgrind could not count a row (the message says why and what to do)."""


def per_emit(small: int, large: int, emits: int) -> float:
    """Instructions per emit from two totals ``emits`` emits apart; start-up cancels."""
    if emits <= 0:
        raise CallgrindError(f"the two runs must differ in emits, got {emits}")
    if large <= small:
        raise CallgrindError(
            f"the larger run counted {large:,} instructions, no more than the smaller run's "
            f"{small:,}\nhelp: the rows' loops did not run; rerun one row with "
            "`python benchmarks/callgrind.py -k KEY` and read its output"
        )
    return (large - small) / emits


def parse_totals(text: str, where: str) -> int:
    """The instruction total (``Ir``) of one callgrind output file."""
    match = _TOTALS.search(text)
    if match is None:
        raise CallgrindError(
            f"{where}: no 'totals:' or 'summary:' line; is this a callgrind output file?\n"
            "help: run `valgrind --tool=callgrind python -c pass` and look at the "
            "callgrind.out.<pid> it writes"
        )
    return int(match[1])


# -- the rows: the dispatch statements of bench_emit.py and bench_inline.py -------------------


def _loop_alone(handlers: Any) -> tuple[Run, bool]:
    def run(msgs: Sequence[Any]) -> None:
        for _m in msgs:
            pass

    return run, False


def _workload(name: str) -> Callable[[Any], tuple[Run, bool]]:
    def build(handlers: Any) -> tuple[Run, bool]:
        from mycelium_bench import workload

        return getattr(workload, name)(handlers), True

    return build


def _bus(bus_class: str, *, bound: bool, generic: bool = False
         ) -> Callable[[Any], tuple[Run, bool]]:
    def build(handlers: Any) -> tuple[Run, bool]:
        from mycelium_bench.dispatchers import emit_method
        from mycelium_bench.routing import CallBus
        from mycelium_bench.routing_inline import InlineBus
        from mycelium_bench.workload import emit_each

        cls = {"CallBus": CallBus, "InlineBus": InlineBus}[bus_class]
        if cls.__mycelium_origin__ != "import hook":
            raise CallgrindError(f"{bus_class} was built at run time, not by the import hook")
        bus = cls(*handlers)
        if bound or generic:
            return emit_each(bus.emit if generic else bus.emit_bench_swap), True
        return emit_method(bus), True

    return build


def _dict_and_loop(handlers: Any) -> tuple[Run, bool]:
    from mycelium_bench.dispatchers import dict_and_loop

    return dict_and_loop(handlers), True


def _psygnal(method: str, *, bound: bool) -> Callable[[Any], tuple[Run, bool]]:
    def build(handlers: Any) -> tuple[Run, bool]:
        import psygnal
        from mycelium_bench.dispatchers import psygnal_emit
        from mycelium_bench.messages import BenchSwap
        from mycelium_bench.workload import emit_each

        class SwapEvents:
            swap = psygnal.Signal(BenchSwap)

        signal = SwapEvents().swap
        for h in handlers:
            signal.connect(h.handle)
        if bound:
            return emit_each(getattr(signal, method)), True
        return psygnal_emit(signal, fast=method == "emit_fast"), True

    return build


def _blinker(handlers: Any) -> tuple[Run, bool]:
    import blinker
    from mycelium_bench.dispatchers import blinker_send

    signal = blinker.Signal()
    for h in handlers:
        signal.connect(h.handle)  # weak references; the caller keeps the handlers alive
    return blinker_send(signal), True


def _pypubsub(handlers: Any) -> tuple[Run, bool]:
    from mycelium_bench.dispatchers import pypubsub_send
    from pubsub import pub

    for h in handlers:
        pub.subscribe(h.handle, "mycelium_bench_swap")
    return pypubsub_send(pub, "mycelium_bench_swap"), True


def _pyee(handlers: Any) -> tuple[Run, bool]:
    import pyee
    from mycelium_bench.dispatchers import pyee_emit

    emitter = pyee.EventEmitter()
    for h in handlers:
        emitter.on("bench_swap", h.handle)
    return pyee_emit(emitter), True


def _zope_event(handlers: Any) -> tuple[Run, bool]:
    import zope.event  # type: ignore[import-untyped]
    from mycelium_bench.workload import emit_each

    zope.event.subscribers[:] = [h.handle for h in handlers]
    return emit_each(zope.event.notify), True


ROWS: tuple[Row, ...] = (
    Row("loop", "the call-site loop alone (no dispatch)", EMIT_GROUP, _loop_alone),
    Row("hand_written", "hand-written `h.handle(m)` x3", EMIT_GROUP, _workload("hand_written"),
        reference=True),
    Row("bodies_pasted", "bodies pasted at the call site `h.n += 1` x3 (no calls)", EMIT_GROUP,
        _workload("bodies_pasted")),
    Row("call_mode", "generated `bus.emit_bench_swap(m)` (inline=False)", EMIT_GROUP,
        _bus("CallBus", bound=False), bars=({"vs": "hand_written", "at_most": 1.3},)),
    Row("inline_mode", "generated `bus.emit_bench_swap(m)` (inline=True)", EMIT_GROUP,
        _bus("InlineBus", bound=False), bars=({"vs": "hand_written", "at_most": 0.8},)),
    Row("generic_emit", "generated generic `bus.emit(m)` (one dict lookup)", EMIT_GROUP,
        _bus("CallBus", bound=True, generic=True)),
    Row("dict_and_loop", "dict-and-loop `for h in routes[type(m)]: h(m)`", EMIT_GROUP,
        _dict_and_loop),
    Row("zope_event", "zope.event `notify`", EMIT_GROUP, _zope_event),
    Row("psygnal_emit_fast", "psygnal `emit_fast`", EMIT_GROUP,
        _psygnal("emit_fast", bound=False), bars=({"vs": "call_mode", "at_least": 3.0},)),
    Row("psygnal_emit", "psygnal `emit`", EMIT_GROUP, _psygnal("emit", bound=False)),
    Row("pyee", "pyee `EventEmitter.emit`", EMIT_GROUP, _pyee),
    Row("blinker", "blinker `send`", EMIT_GROUP, _blinker,
        bars=({"vs": "call_mode", "at_least": 15.0},)),
    Row("pypubsub", "pypubsub `pub.sendMessage`", EMIT_GROUP, _pypubsub),
    Row("call_floor", "one empty call + bodies pasted (floor for any emit method)", INLINE_GROUP,
        _workload("call_floor")),
    Row("inline_bound", "inline=True `emit = bus.emit_bench_swap; emit(m)`", INLINE_GROUP,
        _bus("InlineBus", bound=True),
        bars=({"vs": "hand_written", "at_most": 0.8}, {"vs": "call_floor", "at_most": 1.15})),
    Row("call_bound", "inline=False `emit = bus.emit_bench_swap; emit(m)`", INLINE_GROUP,
        _bus("CallBus", bound=True)),
    Row("psygnal_emit_fast_bound", "psygnal `emit = signal.emit_fast; emit(m)`", INLINE_GROUP,
        _psygnal("emit_fast", bound=True)),
)


# -- the child: every row, in the one interpreter valgrind runs --------------------------------

MARKER = "os_getppid"
"""The C function whose entry makes callgrind dump (and zero) its counters: ``os.getppid()``.

One process counts every row: ``--dump-before=os_getppid`` cuts the run into parts at each
``os.getppid()`` the child makes, so start-up is counted in no part at all, and each row's
SMALL and LARGE parts differ only in the emits. Nothing else here calls ``os.getppid``. The
symbol is in every pyenv/python.org build (checked with ``nm`` on 3.11.7, 3.12.1, 3.13.0); a
stripped interpreter gives no parts, which is reported as exactly that.
"""
PARTS_PER_ROW = 3
"""Per row: building it and one warm-up batch (so the specialising interpreter has settled),
then SMALL batches, then LARGE batches; only the last two are compared."""


def run_child(keys: Sequence[str], small: int, large: int) -> None:
    """Run each row's batches between the markers, checking every handler saw every message."""
    sys.path.insert(0, str(FIXTURES))
    from mycelium_mono.routing.hook import install_import_hook

    install_import_hook(["mycelium_bench"])
    from mycelium_bench.workload import BATCH, MESSAGES, check_counts, new_handlers

    for key in keys:
        row = _row(key)
        handlers = new_handlers()
        run, delivers = row.build(handlers)
        run(MESSAGES)  # warm-up: specialisation and first-call costs land in no counted part
        for batches in (small, large):
            os.getppid()  # marker: the part before this one ends here
            for _ in range(batches):
                run(MESSAGES)
        os.getppid()
        if delivers:
            check_counts(handlers, row.label)
            expected = (1 + small + large) * BATCH
            if handlers[0].n != expected:
                raise CallgrindError(f"{row.label}: {handlers[0].n} deliveries, not {expected}")


def _row(key: str) -> Row:
    for row in ROWS:
        if row.key == key:
            return row
    raise CallgrindError(f"no row {key!r}; rows: {', '.join(r.key for r in ROWS)}")


# -- the parent: one valgrind run, two counts per row -----------------------------------------


def interpreter() -> str:
    """The interpreter to count: this one, as the venv's own path (valgrind follows symlinks)."""
    real = os.path.realpath(sys.executable)
    with open(real, "rb") as file:
        if file.read(4) != b"\x7fELF":
            raise CallgrindError(
                f"{sys.executable} resolves to {real}, which is not an ELF binary (a shim "
                "script?)\nhelp: run this file with the interpreter itself, e.g. "
                "`$(pyenv prefix 3.12.1)/bin/python3.12 benchmarks/callgrind.py`"
            )
    return sys.executable


def valgrind() -> str:
    found = shutil.which("valgrind")
    if found is None:
        raise CallgrindError(
            "valgrind is not on PATH\nhelp: `apt install valgrind` (Debian/Ubuntu), then rerun"
        )
    return found


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the warm-up run must leave the caches behind
    return env


def count_rows(keys: Sequence[str], tmp: Path, small: int = SMALL,
               large: int = LARGE) -> list[Count]:
    """Warm the caches natively, then count every row in one callgrind run."""
    from mycelium_bench.workload import BATCH

    child = [interpreter(), str(Path(__file__).resolve()), "--child", str(small), str(large),
             *keys]
    _check_call(child)  # natively first: .pyc and hook caches written, row errors shown fast
    out = tmp / "callgrind.out"
    _check_call([valgrind(), "--tool=callgrind", f"--dump-before={MARKER}",
                 f"--callgrind-out-file={out}", *child])
    totals = [parse_totals(part.read_text(), str(part)) for part in _parts(out)]
    if len(totals) < PARTS_PER_ROW * len(keys):
        raise CallgrindError(
            f"callgrind dumped {len(totals)} parts, {PARTS_PER_ROW * len(keys)} expected: the "
            f"marker {MARKER} was not seen\nhelp: the interpreter may be stripped of symbols; "
            "use a pyenv or python.org build (`nm -D` or `nm` on libpython should list "
            f"{MARKER})"
        )
    return [Count(key, totals[PARTS_PER_ROW * i + 1], totals[PARTS_PER_ROW * i + 2],
                  (large - small) * BATCH) for i, key in enumerate(keys)]


def _parts(out: Path) -> list[Path]:
    """``callgrind.out.1``, ``.2``, ... in dump order (the final part has no number)."""
    numbered = [p for p in out.parent.glob(out.name + ".*") if p.suffix[1:].isdigit()]
    return sorted(numbered, key=lambda p: int(p.suffix[1:]))


def _check_call(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise CallgrindError(
            f"`{' '.join(command)}` exited with {done.returncode}\n"
            f"{done.stderr[-3000:]}\nhelp: run the same command to see the whole output"
        )


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("mycelium-mono", "psygnal", "blinker", "pypubsub", "pyee", "zope.event"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def results(counts: Sequence[Count]) -> dict[str, Any]:
    """The JSON ``report.py --instructions`` reads: rows with counts and bars, and provenance."""
    by_key = {count.key: count for count in counts}
    import psygnal

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": os.path.realpath(sys.executable),
        "machine": f"{platform.system()} {platform.machine()}",
        "valgrind": subprocess.run([valgrind(), "--version"], capture_output=True, text=True,
                                   check=False).stdout.strip(),
        "libraries": library_versions(),
        "psygnal_compiled": bool(getattr(psygnal, "_compiled", False)),
        "batches": [SMALL, LARGE],
        "rows": [
            {"key": row.key, "label": row.label, "group": row.group,
             "reference": row.reference, "bars": list(row.bars),
             "small": by_key[row.key].small, "large": by_key[row.key].large,
             "emits": by_key[row.key].emits, "per_emit": by_key[row.key].per_emit}
            for row in ROWS if row.key in by_key
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child:
        small, large, *keys = args.child
        run_child(keys, int(small), int(large))
        return 0
    sys.path.insert(0, str(FIXTURES))
    rows = [row for row in ROWS if not args.k or args.k in row.key or args.k in row.label]
    if not rows:
        print(f"error: no row matches -k {args.k!r}\nhelp: rows are "
              f"{', '.join(row.key for row in ROWS)}", file=sys.stderr)
        return 2
    try:
        counts = _count_all(rows)
    except CallgrindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = results(counts)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    for row in data["rows"]:
        print(f"{data['python']:>8}  {row['per_emit']:9.1f} instructions/emit  {row['label']}")
    return 0


def _count_all(rows: Sequence[Row]) -> list[Count]:
    with tempfile.TemporaryDirectory(prefix="mycelium-callgrind-") as tmp:
        return count_rows([row.key for row in rows], Path(tmp))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the counts here (report.py "
                        "--instructions renders them)")
    parser.add_argument("-k", metavar="TEXT", help="only rows whose key or label contains it")
    parser.add_argument("--child", nargs="+", metavar="ARG",
                        help=argparse.SUPPRESS)  # what valgrind runs: SMALL LARGE KEY...
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
