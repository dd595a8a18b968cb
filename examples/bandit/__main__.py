"""``python -m bandit monolith | inproc | hybrid | distributed --node adapters|strategies|all``,
or ``python -m bandit live [--mode MODE] [--rpc ws://host:port]``: the same pipeline following a
local anvil node (started here) on which the bundled market trades."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bandit.config import BanditConfig, load_config
from bandit.runner import MODES, run_adapters_node, run_mode, run_strategies_node


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bandit", description=__doc__)
    parser.add_argument("mode", choices=(*MODES, "live"))
    parser.add_argument("--mode", dest="live_mode", choices=MODES, default="monolith",
                        help="live: the deployment mode of the pipeline (default monolith)")
    parser.add_argument("--rpc", default=None,
                        help="live: an existing node's ws:// URL (default: start anvil here)")
    parser.add_argument("--pools", default=None, help=argparse.SUPPRESS)  # live adapters node
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config (default: the bundled config/bandit.toml)")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N swaps")
    parser.add_argument("--node", choices=("adapters", "strategies", "all"), default="all",
                        help="distributed mode: which process this is (all: start both)")
    parser.add_argument("--adapters", default=None, help="adapters node address host:port")
    parser.add_argument("--strategies", default=None, help="strategies node address host:port")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics on this port (0: any free port)")
    parser.add_argument("--no-metrics-http", action="store_true",
                        help="do not serve /metrics over HTTP")
    parser.add_argument("--report-file", default=None,
                        help="append each filled order id here (after it is audited)")
    parser.add_argument("--fsync", choices=("always", "every", "never"), default=None,
                        help="audit log fsync policy")
    parser.add_argument("--postgres-dsn", default=None, help="log to PostgreSQL instead of SQLite")
    parser.add_argument("--schema", default=None, help="PostgreSQL schema for the tables")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    over: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            over.setdefault(section, {})[key] = value

    put("adapter", "limit", args.limit)
    put("distributed", "adapters", args.adapters)
    put("distributed", "strategies", args.strategies)
    put("metrics", "http_port", args.metrics_port)
    put("execution", "report_file", args.report_file)
    put("audit", "fsync", args.fsync)
    put("database", "postgres_dsn", args.postgres_dsn)
    put("database", "schema", args.schema)
    return over


def _without_http(cfg: BanditConfig) -> BanditConfig:
    from dataclasses import replace

    return replace(cfg, metrics=replace(cfg.metrics, http_port=None))


def _node_argv(args: argparse.Namespace, node: str) -> list[str]:
    argv = [sys.executable, "-m", "bandit", "distributed", "--node", node]
    for flag, value in (("--config", args.config), ("--out", args.out), ("--limit", args.limit),
                        ("--adapters", args.adapters), ("--strategies", args.strategies),
                        ("--metrics-port", args.metrics_port), ("--fsync", args.fsync),
                        ("--report-file", args.report_file),
                        ("--postgres-dsn", args.postgres_dsn), ("--schema", args.schema)):
        if value is not None:
            argv += [flag, str(value)]
    if args.no_metrics_http:
        argv.append("--no-metrics-http")
    return argv


def _run_both(args: argparse.Namespace) -> int:
    """Start the strategies node and the adapters node as two OS processes; wait for both."""
    env = dict(os.environ)
    strategies = subprocess.Popen(_node_argv(args, "strategies"), env=env)
    adapters = subprocess.Popen(_node_argv(args, "adapters"), env=env)
    adapters_code = adapters.wait()
    if adapters_code != 0:
        # Without its feed the strategies node would wait for swaps that never come.
        strategies.terminate()
    strategies_code = strategies.wait()
    return adapters_code or strategies_code


def _live(args: argparse.Namespace, cfg: BanditConfig) -> int:
    """``python -m bandit live``: a node (anvil here unless --rpc), the market, the pipeline."""
    from contextlib import nullcontext

    from bandit.chain.node import anvil_node
    from bandit.feed import load_feed
    from bandit.live import node_urls, prepare, run_live, run_live_adapters

    if args.node == "adapters":  # started by a distributed live run
        pools = tuple(args.pools.split(",")) if args.pools else ()
        asyncio.run(run_live_adapters(_without_http(cfg), args.rpc, pools))
        return 0
    feed = load_feed(cfg.adapter.feed_path)
    with anvil_node() if args.rpc is None else nullcontext() as node:
        http_url, ws_url = node_urls(args.rpc) if node is None else (node.http_url, node.ws_url)
        print(f"bandit live: node {http_url}; deploying the market", file=sys.stderr)
        setup = prepare(http_url, ws_url, feed)
        result = asyncio.run(run_live(args.live_mode, cfg, setup, limit=cfg.adapter.limit,
                                      feed=feed))
    print(result.summary.render())
    print(f"  on chain: {result.market_swaps} market swaps, {result.chain_fills} arbitrages "
          f"filled, {result.chain_reverts} reverted; measured arbitrage gas {setup.arb_gas}")
    print(f"  audit log {cfg.audit.path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bandit`` and the ``bandit`` console script."""
    args = _parser().parse_args(argv)
    if args.mode == "live" and args.limit is None:
        args.limit = 2_000  # a live replay of the whole feed takes minutes
    cfg = load_config(args.config, output_dir=args.out, overrides=_overrides(args))
    if args.mode == "live":
        from bandit.chain.node import NodeError
        from bandit.chain.registry import PriceConfigError

        try:
            return _live(args, _without_http(cfg) if args.no_metrics_http else cfg)
        except (PriceConfigError, NodeError) as exc:  # the message says what to change
            print(f"bandit live: {exc}", file=sys.stderr)
            return 2
    replay_in_one_go = args.mode in ("monolith", "hybrid") and cfg.adapter.source == "replay"
    if args.no_metrics_http or replay_in_one_go:
        # A monolith replay finishes in a second: /metrics is for the long-running modes.
        cfg = _without_http(cfg)
    if args.mode != "distributed":
        summary = run_mode(args.mode, cfg)
    elif args.node == "all":
        return _run_both(args)
    elif args.node == "adapters":
        sent, latency = asyncio.run(run_adapters_node(_without_http(cfg)))
        print(f"bandit distributed adapters node: published {sent} swaps "
              f"from {cfg.adapters_address}; per-swap publish p50 {latency.p50 / 1e3:.1f} µs, "
              f"p99 {latency.p99 / 1e3:.1f} µs")
        return 0
    else:
        summary = asyncio.run(run_strategies_node(cfg))
    print(summary.render())
    print(f"  audit log {cfg.audit.path}")
    if cfg.database.postgres_dsn is None:
        print(f"  database  {cfg.database.sqlite_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
