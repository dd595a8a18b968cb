"""Bandit live on a real anvil node: swap-to-signal and signal-to-receipt latency, throughput.

Not a pytest-benchmark file: a live run is one long measurement, not a call repeated. Run
``python benchmarks/bench_live.py [--swaps N] [--modes monolith,inproc,...]``. For each mode,
from one deployment snapshot (the same chain every time), over every signal of the run:

- **mined → signal**: from the ``evm_mine`` that mined the swap's block returning to the
  detector emitting the :class:`ArbitrageSignal` the swap caused (the node's notification,
  decoding, the adapter, the bus, the detector). The block is a market burst, or one of our
  arbitrages (its last leg can reveal another cycle).
- **notification → signal**: from the swap's ``Swap`` log notification arriving at the feed
  client (its WebSocket message routed) to the same emission. Single-process modes only: in
  distributed mode the client runs in the adapters node process.
- **signal → receipt**: from that emission to the execution service having read the
  arbitrage's receipt (risk, the ``eth_call`` pre-check, ``eth_sendTransaction``,
  ``evm_mine``, ``eth_getTransactionReceipt``); filled arbitrages only.
- **swaps/s followed**: market swaps per second of the lock-step run (the market waits for the
  pipeline after each burst) — against a bare WebSocket client subscribed to the same
  ``Swap``/``Sync`` logs that only counts the swaps, under the same lock-step.

Percentiles are nearest-rank; one run per mode. Times are ``perf_counter_ns`` in this process
(the market, the executor and the detector run here in every mode).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from bandit.chain.market import MarketReplay
from bandit.chain.node import anvil_node
from bandit.chain.rpc import Call, RpcClient
from bandit.config import load_config
from bandit.ethrpc import SWAP_TOPIC, SYNC_TOPIC, EthLogClient, _quick_ack
from bandit.feed import Feed, load_feed
from bandit.live import LiveSetup, OwnLegAwareDetector, prepare, restart_from_snapshot, run_live
from bandit.protocol import ArbitrageSignal, OrderExecution, OrderRequest, OrderStatus, V2Swap
from bandit.services import ArbitrageDetector, ExecutionService

MODES = ("monolith", "inproc", "hybrid", "distributed")
clock = time.perf_counter_ns


@dataclass
class Clock:
    """Per run: when each block was mined, each swap notified, each signal emitted (ns)."""

    next_block: int = 0
    mined: dict[int, int] = field(default_factory=dict)  # block number -> evm_mine returned
    arrived: dict[int, int] = field(default_factory=dict)  # id(log entry) -> routed
    notified: dict[int, int] = field(default_factory=dict)  # V2Swap.seq -> its Swap log routed
    signalled: dict[int, int] = field(default_factory=dict)  # source seq -> signal emitted
    to_signal: list[int] = field(default_factory=list)
    notify_to_signal: list[int] = field(default_factory=list)
    to_receipt: list[int] = field(default_factory=list)
    entry: int | None = None  # arrival of the log _on_log is handling


CLOCK = Clock()  # replaced by each run (the wrappers read the global)


class _Stamping:
    """The notification queue as ``_route`` sees it: each log is stamped as it is queued."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue

    def put_nowait(self, item: Any) -> None:
        CLOCK.arrived[id(item)] = clock()
        self.queue.put_nowait(item)


@contextmanager
def instrumented() -> Iterator[None]:
    """Time-stamp mining, notifications, signals and receipts by wrapping (not changing) the
    methods that do them; restored on exit."""
    batch, route, on_log, make_swap = (RpcClient.batch, EthLogClient._route,
                                       EthLogClient._on_log, EthLogClient._swap)
    fill = ExecutionService._fill_on_chain

    def timed_batch(self: RpcClient, calls: Sequence[Call]) -> list[Any]:
        out = batch(self, calls)
        if calls and calls[-1].method == "evm_mine":  # a market burst or an arbitrage
            CLOCK.mined[CLOCK.next_block] = clock()
            CLOCK.next_block += 1
        return out

    def timed_route(self: EthLogClient, raw: Any, queue: Any, pending: Any) -> None:
        route(self, raw, cast(Any, _Stamping(queue)), pending)  # it only calls put_nowait

    async def timed_on_log(self: EthLogClient, ws: Any, pending: Any, entry: Any) -> Any:
        CLOCK.entry = CLOCK.arrived.pop(id(entry), None)
        return await on_log(self, ws, pending, entry)

    def timed_swap(self: EthLogClient, event: Any, tokens: Any) -> V2Swap | None:
        swap = make_swap(self, event, tokens)
        if swap is not None and CLOCK.entry is not None:
            CLOCK.notified[swap.seq] = CLOCK.entry
        return swap

    def timed_signal(self: ArbitrageDetector, swap: V2Swap, best: Any) -> ArbitrageSignal:
        signal = ArbitrageDetector._signal(self, swap, best)
        now = clock()
        CLOCK.signalled[swap.seq] = now
        CLOCK.to_signal.append(now - CLOCK.mined[swap.block_number])
        if swap.seq in CLOCK.notified:
            CLOCK.notify_to_signal.append(now - CLOCK.notified[swap.seq])
        return signal

    def timed_fill(self: ExecutionService, req: OrderRequest, out: int) -> OrderExecution:
        execution = fill(self, req, out)
        if execution.tx_hash and execution.status == OrderStatus.FILLED:  # a receipt was read
            CLOCK.to_receipt.append(clock() - CLOCK.signalled[req.source_seq])
        return execution

    patches: list[tuple[Any, str, Any]] = [
        (RpcClient, "batch", timed_batch), (EthLogClient, "_route", timed_route),
        (EthLogClient, "_on_log", timed_on_log), (EthLogClient, "_swap", timed_swap),
        (OwnLegAwareDetector, "_signal", timed_signal),
        (ExecutionService, "_fill_on_chain", timed_fill)]
    saved = [(cls, name, cls.__dict__.get(name)) for cls, name, _ in patches]
    for cls, name, wrapper in patches:
        setattr(cls, name, wrapper)
    try:
        yield
    finally:
        for cls, name, original in saved:
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)


def percentile(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6 if ordered else float("nan")


async def bare_client(setup: LiveSetup, feed: Feed, swaps: int, *, quick_ack: bool) -> float:
    """Market swaps/s when the follower only counts Swap notifications (no pipeline);
    ``quick_ack``: re-arm TCP_QUICKACK after every message, as the pipeline's client does."""
    import websockets

    rpc = RpcClient(setup.rpc_url)
    market = MarketReplay(rpc, setup.deployment, feed, limit=swaps)
    seen = 0
    async with websockets.connect(setup.ws_url, max_size=2**22) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                  "params": ["logs", {"topics": [[SWAP_TOPIC, SYNC_TOPIC]]}]}))
        await ws.recv()

        async def count() -> None:
            nonlocal seen
            async for raw in ws:  # Sync and Swap, as the pipeline's client gets them
                if quick_ack:
                    _quick_ack(ws)
                seen += SWAP_TOPIC in raw

        reader = asyncio.create_task(count())
        start = time.perf_counter()
        await market.run(lambda n: seen >= n)
        elapsed = time.perf_counter() - start
        reader.cancel()
    rpc.close()
    return swaps / elapsed


def _first_block(setup: LiveSetup) -> int:
    """The number the run's first ``evm_mine`` gives its block (the chain is at the snapshot)."""
    rpc = RpcClient(setup.rpc_url)
    try:
        return int(rpc.call("eth_blockNumber"), 16) + 1
    finally:
        rpc.close()


def run_mode(mode: str, setup: LiveSetup, feed: Feed, swaps: int, out: Path) -> dict[str, Any]:
    cfg = load_config(None, output_dir=out / mode)
    cfg = replace(cfg, metrics=replace(cfg.metrics, http_port=None))
    global CLOCK
    CLOCK = Clock(next_block=_first_block(setup))
    start = time.perf_counter()
    result = asyncio.run(run_live(mode, cfg, setup, limit=swaps, feed=feed))
    elapsed = time.perf_counter() - start
    assert len(CLOCK.to_signal) == result.summary.signals
    assert len(CLOCK.to_receipt) == result.chain_fills
    row: dict[str, Any] = {"mode": mode, "swaps_per_s": result.market_swaps / elapsed,
                           "signals": result.summary.signals, "fills": result.chain_fills}
    for name, values in (("mined", CLOCK.to_signal), ("notified", CLOCK.notify_to_signal),
                         ("receipt", CLOCK.to_receipt)):
        row[name] = (percentile(values, 0.5), percentile(values, 0.99)) if values else None
    return row


def _pair(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.2f} / {value[1]:.2f} ms"


def render(rows: list[dict[str, Any]], bare: dict[str, float], swaps: int) -> str:
    lines = [f"bandit live, {swaps} market swaps on anvil (one run per mode)", "",
             "| follower | swaps/s followed | signals | fills | mined → signal p50 / p99 "
             "| notification → signal p50 / p99 | signal → receipt p50 / p99 |",
             "|---|---:|---:|---:|---:|---:|---:|",
             *(f"| bare WebSocket client, {name} | {rate:,.0f} | - | - | - | - | - |"
               for name, rate in bare.items())]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['swaps_per_s']:,.0f} | {r['signals']} | {r['fills']} "
                     f"| {_pair(r['mined'])} | {_pair(r['notified'])} | {_pair(r['receipt'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=1_000)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    feed = load_feed()
    rows = []
    with anvil_node() as node, tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, \
            instrumented():
        setup = prepare(node.http_url, node.ws_url, feed)
        bare = {}
        for name, quick in (("default socket", False), ("TCP_QUICKACK re-armed", True)):
            bare[name] = asyncio.run(bare_client(setup, feed, args.swaps, quick_ack=quick))
            setup = restart_from_snapshot(setup)
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, setup, feed, args.swaps, Path(tmp)))
            setup = restart_from_snapshot(setup)
            print(f"  {mode}: {rows[-1]['swaps_per_s']:,.0f} swaps/s", file=sys.stderr)
    print(render(rows, bare, args.swaps))
    return 0


if __name__ == "__main__":
    sys.exit(main())

