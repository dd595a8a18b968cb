"""The Bandit pipeline end to end: swaps per second in each mode, and where the time goes.

Every row pushes the same first ``SWAPS`` swaps of the bundled feed (decoded once, up front)
through fresh service instances that do the real work — pricing every pool pair, risk,
paper fills, the audit log (``fsync = "never"``: disk flushes are not what is compared) and
SQLite — and the table divides by ``SWAPS``.

Rows:

- **hand-wired** (reference): each service's ``emit`` bound straight to the next service's
  method — the business logic with no bus at all, the floor for every mode;
- **monolith**: the generated ``MonolithBus`` (built at run time here: the benchmark hook only
  rewrites the fixture package; the code is the same);
- **hybrid**: ``HybridBus`` on an event loop, database and metrics on the background backlog;
- **inproc**: every service on a ``MessageBus`` + ``ServiceRuntime``, one queue each;
- **distributed**: ``python -m bandit distributed --node all`` — two OS processes over
  ZeroMQ, *including* both interpreters' start-up and the feed replay, so read it as an
  upper bound.

The share of time in dispatch for a mode is ``1 - hand-wired / mode``: everything a mode adds
over the hand-wired chain is message passing. Before issue 16 the detector sized all four
cycles of every pool pair and converted its thresholds per candidate, so the work (26-31 µs
per swap) hid every mode's dispatch; it now sizes only the cycles that pass the
profitability test and whose float profit bound reaches the minimum profit, with the
thresholds converted once per token, and the audited bytes are unchanged
(``tests/bandit/test_bandit_detector.py`` pins the whole feed's audit log). Per swap that
took 131k instructions on main and 41k now (``examples/bandit/README.md``, "Where the time
goes").

Run: ``python benchmarks/report.py -k bench_bandit``.

Instructions per swap, per mode (callgrind; noise-free where wall clock on this shared machine
is not): ``python benchmarks/bench_bandit.py --instructions``. Each mode runs in a child
under ``valgrind --tool=callgrind --dump-before=os_getppid`` twice, with ``FEW`` and ``MANY``
swaps; the child decodes its swaps and builds the pipeline first, then calls ``os.getppid()``
around the run (closing the pipeline included), so only the run is in the counted part. The
difference of the two counts divided by ``MANY - FEW`` is the cost of one swap of the feed's
swaps ``FEW..MANY``: set-up, first-call costs and the event loop's start cancel. ``--cli``
counts whole ``python -m bandit MODE --limit N`` processes the same way (feed replay and the
runner's latency timing included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from bandit.config import BanditConfig, load_config
from bandit.feed import load_feed
from bandit.protocol import V2Swap
from bandit.routing import HybridBus, MonolithBus
from bandit.runner import Pipeline, build_pipeline, fresh_outputs

from mycelium_mono import MessageBus, ServiceRuntime
from mycelium_mono.handlers import attach_emitter

SWAPS = 4_000
ROUNDS = 7
GROUP = "bandit pipeline, per swap"
pytestmark = pytest.mark.benchmark(group=GROUP)

_SWAPS: list[V2Swap] = list(load_feed().replay(SWAPS))


@pytest.fixture
def out_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-bandit-") as tmp:
        yield Path(tmp)


def _config(out: Path) -> BanditConfig:
    return load_config(output_dir=out, overrides={
        "adapter": {"limit": SWAPS}, "metrics": {"http_port": None}, "audit": {"fsync": "never"},
    })


def _fresh(out: Path) -> Pipeline:
    cfg = _config(out)
    fresh_outputs(cfg)
    return build_pipeline(cfg)


def _check(p: Pipeline, swaps: int = SWAPS) -> None:
    # The work was done: every swap was priced, every order audited.
    assert p.detector.swaps_seen == swaps
    assert p.audit.records == p.detector.signals_emitted > 0


Mode = Callable[[Pipeline, Sequence[V2Swap]], None]


def _bench(benchmark: Any, label: str, out: Path, mode: Mode, **extra: Any) -> None:
    pipelines: list[Pipeline] = []

    def setup() -> tuple[tuple[Pipeline], dict[str, Any]]:
        p = _fresh(out / str(len(pipelines)))
        pipelines.append(p)
        return (p,), {}

    def target(p: Pipeline) -> None:
        mode(p, _SWAPS)
        p.close()

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(label=label, ops=SWAPS, **extra)
    _check(pipelines[-1])


def _hand_wired(p: Pipeline, swaps: Sequence[V2Swap]) -> None:
    def execution_out(msg: Any) -> None:
        p.audit.handle(msg)
        p.database.on_execution(msg)
        p.metrics.on_execution(msg)

    def signal_out(msg: Any) -> None:
        p.risk.handle(msg)
        p.database.on_signal(msg)
        p.metrics.on_signal(msg)

    attach_emitter(p.detector, signal_out)
    attach_emitter(p.risk, p.execution.handle)
    attach_emitter(p.execution, execution_out)
    detect, count = p.detector.handle, p.metrics.on_swap
    for swap in swaps:
        detect(swap)
        count(swap)


def test_hand_wired(benchmark: Any, out_dir: Path) -> None:
    _bench(benchmark, "hand-wired calls (business logic only)", out_dir, _hand_wired,
           reference=True)


def _monolith(p: Pipeline, swaps: Sequence[V2Swap]) -> None:
    bus = MonolithBus(arbitrage_detector=p.detector, metrics_collector=p.metrics,
                      risk_manager=p.risk, database_logger=p.database,
                      execution_service=p.execution, audit_logger=p.audit)
    emit = bus.emit_v2_swap
    for swap in swaps:
        emit(swap)


def test_monolith(benchmark: Any, out_dir: Path) -> None:
    _bench(benchmark, "monolith (MonolithBus)", out_dir, _monolith,
           note=f"MonolithBus built by {MonolithBus.__mycelium_origin__}")


async def _hybrid_async(p: Pipeline, swaps: Sequence[V2Swap]) -> None:
    bus = HybridBus(arbitrage_detector=p.detector, risk_manager=p.risk,
                    database_logger=p.database, execution_service=p.execution,
                    audit_logger=p.audit, metrics_collector=p.metrics)
    emit = bus.emit_v2_swap
    for i, swap in enumerate(swaps):
        emit(swap)
        if i % 256 == 255:
            await asyncio.sleep(0)
    await bus.background.drain()


def test_hybrid(benchmark: Any, out_dir: Path) -> None:
    _bench(benchmark, "hybrid (HybridBus + background backlog)", out_dir, _hybrid)


def _hybrid(p: Pipeline, swaps: Sequence[V2Swap]) -> None:
    asyncio.run(_hybrid_async(p, swaps))


async def _inproc_async(p: Pipeline, swaps: Sequence[V2Swap]) -> None:
    runtime = ServiceRuntime(MessageBus())
    for svc in p.handlers():
        await runtime.spawn_service(svc)
    publish = runtime.bus.publisher(V2Swap).publish
    for swap in swaps:
        await publish(swap)
    # Drains every queue first; the default 5 s would cancel the chain under valgrind.
    await runtime.shutdown(timeout=3_600)


def test_inproc(benchmark: Any, out_dir: Path) -> None:
    _bench(benchmark, "inproc (MessageBus + ServiceRuntime)", out_dir, _inproc)


def _inproc(p: Pipeline, swaps: Sequence[V2Swap]) -> None:
    asyncio.run(_inproc_async(p, swaps))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_distributed(benchmark: Any, out_dir: Path) -> None:
    def run() -> None:
        subprocess.run(
            [sys.executable, "-m", "bandit", "distributed", "--node", "all",
             "--limit", str(SWAPS), "--out", str(out_dir), "--fsync", "never",
             "--adapters", f"127.0.0.1:{_free_port()}",
             "--strategies", f"127.0.0.1:{_free_port()}", "--no-metrics-http"],
            check=True, capture_output=True, timeout=300,
        )

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(
        label="distributed (2 processes, ZeroMQ)", ops=SWAPS,
        note="includes 2 interpreter start-ups and the feed replay: an upper bound")
    lines = (out_dir / "audit.jsonl").read_text().count("\n")
    assert lines > 100


# --- instruction counts (run as a script) -----------------------------------------------------

MODES: dict[str, Mode] = {"hand-wired": _hand_wired, "monolith": _monolith, "hybrid": _hybrid,
                          "inproc": _inproc}
FEW, MANY = 1_000, 4_000
MARKER = "os_getppid"  # callgrind dumps its counters when the child enters os.getppid()


def run_child(mode: str, swaps: int) -> None:
    """Decode and build outside the counted part; run ``mode`` between the two markers."""
    feed = list(load_feed().replay(swaps))
    with tempfile.TemporaryDirectory(prefix="bench-bandit-") as tmp:
        p = _fresh(Path(tmp))
        os.getppid()  # marker: set-up ends here
        MODES[mode](p, feed)
        p.close()
        os.getppid()  # marker: the counted part ends here
        _check(p, swaps)


def _counted(mode: str, swaps: int) -> int:
    """Instructions callgrind counted for the run part of one child."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not on PATH\nhelp: `apt install valgrind`, then rerun")
    # The venv's symlink (valgrind follows it to the binary, and the venv stays in effect).
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-bandit-cg-") as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [valgrind, "--tool=callgrind", f"--dump-before={MARKER}",
             f"--callgrind-out-file={out}", python, os.path.abspath(__file__), "--child",
             mode, str(swaps)],
            check=False, capture_output=True, text=True,
            env=dict(os.environ, PYTHONHASHSEED="0"),
        )
        if done.returncode != 0:
            raise SystemExit(f"the {mode} child failed:\n{done.stderr[-3000:]}")
        # Part 1 ends at the first marker (start-up, set-up); part 2 is the run.
        text = Path(f"{out}.2").read_text()
    found = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no instruction total in {out}.2; is the interpreter stripped?")
    return int(found.group(1))


def instructions_per_swap(mode: str, few: int = FEW, many: int = MANY) -> float:
    """(count at ``many`` swaps - count at ``few``) / (many - few)."""
    return (_counted(mode, many) - _counted(mode, few)) / (many - few)


CLI_FEW, CLI_MANY = 5_000, 20_000
"""``--cli``: swaps of the two ``python -m bandit MODE --limit N`` runs compared."""


def _counted_cli(mode: str, swaps: int) -> int:
    """Instructions of a whole ``python -m bandit MODE --limit swaps`` process."""
    with tempfile.TemporaryDirectory(prefix="bench-bandit-cli-") as tmp:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             "-m", "bandit", mode, "--limit", str(swaps), "--out", tmp, "--fsync", "never",
             "--no-metrics-http"],
            check=False, capture_output=True, text=True,
            env=dict(os.environ, PYTHONHASHSEED="0"),
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"`python -m bandit {mode}` under valgrind failed:\n"
                         f"{done.stderr[-3000:]}")
    return int(found.group(1))


def cli_instructions_per_swap(mode: str) -> float:
    """Per swap of the command line's run, feed replay and latency timing included: start-up
    (imports, building the bus) is in both processes and cancels."""
    few, many = _counted_cli(mode, CLI_FEW), _counted_cli(mode, CLI_MANY)
    return (many - few) / (CLI_MANY - CLI_FEW)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bandit: instructions per swap, per mode")
    parser.add_argument("--instructions", action="store_true",
                        help="count every mode's instructions per swap with callgrind")
    parser.add_argument("--cli", action="store_true",
                        help="count `python -m bandit MODE` runs instead (monolith, inproc, "
                        "hybrid), the feed replay and the runner's timing included")
    parser.add_argument("modes", nargs="*", help="modes to count (default: all)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SWAPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child[0], int(args.child[1]))
        return 0
    if not args.instructions:
        parser.error("run the wall-clock table with `python benchmarks/report.py -k "
                     "bench_bandit`; this script only counts (--instructions)")
    if args.cli:
        count, modes, span = cli_instructions_per_swap, ["monolith", "inproc", "hybrid"], (
            f"`python -m bandit MODE`, swaps {CLI_FEW:,}..{CLI_MANY:,}")
    else:
        count, modes, span = instructions_per_swap, list(MODES), f"swaps {FEW:,}..{MANY:,}"
    print(f"Bandit, instructions per swap ({sys.implementation.cache_tag}, callgrind, {span} "
          "of the bundled feed)")
    print("| mode | instructions per swap |\n|---|---:|")
    for mode in args.modes or modes:
        print(f"| {mode} | {count(mode):,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
