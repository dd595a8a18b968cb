"""Bandit live on a real anvil node: latency from a mined block to the arbitrage, and throughput.

Not a pytest-benchmark file: a live run is one long measurement, not a call repeated. Run
``python benchmarks/bench_live.py [--swaps N] [--modes monolith,inproc,...]``. For each mode,
from one deployment snapshot (the same chain every time):

- **block → submitted**: from the ``evm_mine`` of a block returning (market burst, or an
  arbitrage's own block) to the execution service submitting the arbitrage it caused: the
  node's WebSocket notification, decoding, the detector, risk, and the ``eth_call`` pre-check;
- **submitted → receipt**: ``eth_sendTransaction`` + ``evm_mine`` + ``eth_getTransactionReceipt``;
- **swaps/s followed**: market swaps per second of the lock-step run (the market waits for the
  pipeline after each burst) — against a bare WebSocket client subscribed to the same
  ``Swap``/``Sync`` logs that only counts the swaps, under the same lock-step.

p50/p99 over every arbitrage of the run; one run per mode.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bandit.chain.execute import ChainExecutor, ChainFill
from bandit.chain.market import MarketReplay
from bandit.chain.node import anvil_node
from bandit.chain.rpc import RpcClient
from bandit.config import load_config
from bandit.ethrpc import SWAP_TOPIC, SYNC_TOPIC, _quick_ack
from bandit.feed import Feed, load_feed
from bandit.live import LiveSetup, prepare, restart_from_snapshot, run_live

MODES = ("monolith", "inproc", "hybrid", "distributed")


@dataclass
class Clock:
    """When the last block was mined, and each arbitrage's two latencies (ns)."""

    last_mined: int = 0
    to_submit: list[int] | None = None
    to_receipt: list[int] | None = None

    def reset(self) -> None:
        self.last_mined, self.to_submit, self.to_receipt = time.perf_counter_ns(), [], []


CLOCK = Clock()


@contextmanager
def instrumented() -> Iterator[None]:
    """Time-stamp market bursts and arbitrages (wrapping, not changing, the two methods)."""
    send, execute = MarketReplay._send, ChainExecutor.execute

    def timed_send(self: MarketReplay, block: Any) -> None:
        send(self, block)
        CLOCK.last_mined = time.perf_counter_ns()

    def timed_execute(self: ChainExecutor, *args: Any) -> ChainFill:
        start = time.perf_counter_ns()
        assert CLOCK.to_submit is not None and CLOCK.to_receipt is not None
        CLOCK.to_submit.append(start - CLOCK.last_mined)
        fill = execute(self, *args)
        CLOCK.last_mined = time.perf_counter_ns()
        CLOCK.to_receipt.append(CLOCK.last_mined - start)
        return fill

    MarketReplay._send, ChainExecutor.execute = timed_send, timed_execute  # type: ignore[method-assign]
    try:
        yield
    finally:
        MarketReplay._send, ChainExecutor.execute = send, execute  # type: ignore[method-assign]


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


def run_mode(mode: str, setup: LiveSetup, feed: Feed, swaps: int, out: Path) -> dict[str, Any]:
    cfg = load_config(None, output_dir=out / mode)
    cfg = replace(cfg, metrics=replace(cfg.metrics, http_port=None))
    CLOCK.reset()
    start = time.perf_counter()
    result = asyncio.run(run_live(mode, cfg, setup, limit=swaps, feed=feed))
    elapsed = time.perf_counter() - start
    assert CLOCK.to_submit is not None and CLOCK.to_receipt is not None
    return {"mode": mode, "swaps_per_s": result.market_swaps / elapsed,
            "arbitrages": len(CLOCK.to_submit),
            "submit_p50_ms": percentile(CLOCK.to_submit, 0.5),
            "submit_p99_ms": percentile(CLOCK.to_submit, 0.99),
            "receipt_p50_ms": percentile(CLOCK.to_receipt, 0.5),
            "receipt_p99_ms": percentile(CLOCK.to_receipt, 0.99)}


def render(rows: list[dict[str, Any]], bare: dict[str, float], swaps: int) -> str:
    lines = [f"bandit live, {swaps} market swaps on anvil (one run per mode)", "",
             "| follower | swaps/s followed | arbitrages | block → submitted p50 / p99 "
             "| submitted → receipt p50 / p99 |", "|---|---:|---:|---:|---:|",
             *(f"| bare WebSocket client, {name} | {rate:,.0f} | - | - | - |"
               for name, rate in bare.items())]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['swaps_per_s']:,.0f} | {r['arbitrages']} | "
                     f"{r['submit_p50_ms']:.2f} / {r['submit_p99_ms']:.2f} ms | "
                     f"{r['receipt_p50_ms']:.2f} / {r['receipt_p99_ms']:.2f} ms |")
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

