"""Live mode: the pipeline follows a real node while the bundled market trades on it.

``python -m bandit live [--mode monolith|inproc|hybrid|distributed] [--rpc ws://host:port]``

1. A node: a fresh anvil on a free port (:func:`bandit.chain.node.anvil_node`), or ``--rpc``.
2. :func:`prepare`: deploy 8 tokens, the real ``UniswapV2Factory`` (5 of them) and 32 pairs at the
   feed's opening reserves, our ``BanditArb``; read the token registry from the chain; measure
   an arbitrage's gas; pin block timestamps; ``evm_snapshot`` (each run starts from it).
3. :func:`run_live`: the registry again if the config's ``[prices]`` asks for other prices
   (reference pools are read at the run's start: the snapshot), then the adapter follows the
   node over WebSocket (``getReserves`` of every pair first), the market replays the feed's
   swaps as transactions, the execution service fills every approved order on chain (one
   transaction, both legs). Lock-step: after each burst the
   market waits until the pipeline has handled it and everything it caused, so the chain and
   the audit log are the same in every mode.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bandit.chain.abi import hex_address
from bandit.chain.deploy import GAS_PRICE_WEI, Deployment, deploy_market
from bandit.chain.execute import ChainExecutor
from bandit.chain.market import MarketReplay
from bandit.chain.registry import Registry, read_registry
from bandit.chain.rpc import RpcClient
from bandit.config import BanditConfig, PriceConfig
from bandit.ethrpc import ClientStats
from bandit.feed import Feed, load_feed
from bandit.protocol import V2Swap
from bandit.runner import (
    Pipeline,
    Summary,
    _TimedAdapter,
    build_pipeline,
    fresh_outputs,
    run_adapters_node,
)
from bandit.services import ArbitrageDetector, DetectorConfig, PolygonAdapter
from bandit.tokens import TOKENS, Token, register
from mycelium_mono import LatencyTracker, MessageBus, ServiceRuntime

__all__ = ["LiveResult", "LiveSetup", "OwnLegAwareDetector", "live_config", "node_urls",
           "prepare", "priced_as_configured", "run_live", "run_live_adapters"]

BLOCK_INTERVAL_S = 2  # Polygon PoS; every block's timestamp is the previous one's + 2 s
NATIVE_PRICE_USD_E6 = 700_000  # gas is paid in the native token (MATIC on Polygon)


@dataclass(frozen=True)
class LiveSetup:
    """A node with the market deployed, and what the pipeline needs to know about it."""

    rpc_url: str
    ws_url: str
    deployment: Deployment
    registry: Registry
    arb_gas: int
    snapshot: str
    prices: PriceConfig = field(default_factory=PriceConfig)  # what ``registry`` was read with

    @property
    def gas_cost_usd_e6(self) -> int:
        """One arbitrage's measured gas at the run's gas price, in micro-USD."""
        return self.arb_gas * GAS_PRICE_WEI * NATIVE_PRICE_USD_E6 // 10**18

    @property
    def tokens(self) -> tuple[Token, ...]:
        """The table the live pipeline prices in: the bundled tokens plus the chain's, the same
        as :func:`bandit.tokens.register` makes the global one (risk and execution read that).
        The detector takes its table as a constructor argument (issue 16) and skips, counted,
        every swap of a token outside it: without the chain's tokens it skips them all."""
        return TOKENS + self.registry.tokens

    @property
    def priced_pools(self) -> frozenset[bytes]:
        known = {t.address for t in self.registry.tokens}
        return frozenset(p.address for p in self.deployment.pairs
                         if p.token0 in known and p.token1 in known)


def _measure_arb_gas(rpc_url: str, deployment: Deployment, feed: Feed) -> int:
    """``eth_estimateGas`` of a cycle over the first two pools of one pair, sized at 0.1 % of
    the first pool's reserve (what an arbitrage of the run costs, within a few per cent)."""
    first, second = deployment.pairs[0], deployment.pairs[1]
    opening = feed.pools[0]
    reserve_in = opening.reserve1 if first.flipped else opening.reserve0
    executor = ChainExecutor(rpc_url, deployment.trader, deployment.arb)
    try:
        return executor.estimate_gas(first.address, second.address, first.token0,
                                     reserve_in // 1000)
    finally:
        executor.close()


def node_urls(url: str) -> tuple[str, str]:
    """(HTTP, WebSocket) URLs of a node that serves both on one port, as anvil does."""
    for scheme in ("ws://", "http://"):
        if url.startswith(scheme):
            rest = url[len(scheme):]
            return "http://" + rest, "ws://" + rest
    raise ValueError(f"node URL {url!r} is neither ws:// nor http://\n"
                     "help: e.g. --rpc ws://127.0.0.1:8545 (anvil serves both on one port)")


def _price_config(prices: PriceConfig | Mapping[str, int] | None) -> PriceConfig:
    return prices if isinstance(prices, PriceConfig) else PriceConfig(usd_e6=prices)


def prepare(rpc_url: str, ws_url: str, feed: Feed, *,
            prices: PriceConfig | Mapping[str, int] | None = None) -> LiveSetup:
    """Deploy the market on the node and snapshot the chain there (``prices``: the config's
    ``[prices]``, or a table by symbol; default the bundled tokens' prices)."""
    config = _price_config(prices)
    rpc = RpcClient(rpc_url)
    try:
        deployment = deploy_market(rpc, feed)
        registry = read_registry(rpc, [p.address for p in deployment.pairs], config)
        register(registry.tokens)
        gas = _measure_arb_gas(rpc_url, deployment, feed)
        rpc.call("anvil_setBlockTimestampInterval", BLOCK_INTERVAL_S)
        snapshot = str(rpc.call("evm_snapshot"))
    finally:
        rpc.close()
    return LiveSetup(rpc_url, ws_url, deployment, registry, gas, snapshot, config)


def priced_as_configured(setup: LiveSetup, prices: PriceConfig) -> LiveSetup:
    """The setup with its registry read with ``prices`` (the config's ``[prices]``), unless
    that is the default or what it was read with: on a fresh setup the chain is at the
    snapshot, so reference pools give the same price on every run."""
    if prices == PriceConfig() or prices == setup.prices:
        return setup
    rpc = RpcClient(setup.rpc_url)
    try:
        registry = read_registry(rpc, [p.address for p in setup.deployment.pairs], prices)
    finally:
        rpc.close()
    return replace(setup, registry=registry, prices=prices)


def restart_from_snapshot(setup: LiveSetup) -> LiveSetup:
    """Back to the freshly deployed chain (``evm_revert`` uses up the snapshot: take another)."""
    rpc = RpcClient(setup.rpc_url)
    try:
        if rpc.call("evm_revert", setup.snapshot) is not True:
            raise RuntimeError(f"evm_revert({setup.snapshot}) failed on {setup.rpc_url}\n"
                               "help: was the node restarted since prepare()?")
        return replace(setup, snapshot=str(rpc.call("evm_snapshot")))
    finally:
        rpc.close()


def live_config(cfg: BanditConfig, setup: LiveSetup) -> BanditConfig:
    """The config with the live source (every deployed pair) and the measured gas."""
    pools = tuple(hex_address(p.address) for p in setup.deployment.pairs)
    adapter = replace(cfg.adapter, source="websocket", ws_url=setup.ws_url, pools=pools,
                      snapshot=True)
    detector = replace(cfg.detector, gas_cost_usd_e6=setup.gas_cost_usd_e6)
    return replace(cfg, adapter=adapter, detector=detector)


@dataclass(frozen=True)
class LiveResult:
    """One live run: the summary, the market it replayed and the chain work it did."""

    summary: Summary
    market_swaps: int
    market_receipts: tuple[dict[str, Any], ...]
    chain_fills: int
    chain_reverts: int
    unknown_token_skips: int
    feed_stats: ClientStats | None  # the live client's counters (None: it ran elsewhere)
    own_legs_held: int = 0  # swaps of our arbitrages' first legs: reserves updated, not priced
    registry: Registry | None = None  # what this run priced in


class _Progress:
    """Whether the pipeline has handled everything the chain has produced so far.

    Counted from the chain side, so it holds in every mode (in distributed mode the feed runs
    in another process): the start snapshot's reserve updates, the market's swaps and the two
    swaps of each filled arbitrage, on priced pools; and one execution per signal.
    """

    def __init__(self, p: Pipeline, market: MarketReplay, executor: ChainExecutor,
                 priced: frozenset[bytes]) -> None:
        self.p, self.market, self.executor, self.priced = p, market, executor, priced
        self._counted = self._priced_swaps = 0

    def caught_up(self, _sent: int) -> bool:
        for swap in self.market.sent[self._counted :]:
            self._priced_swaps += swap.pair in self.priced
        self._counted = len(self.market.sent)
        expected = len(self.priced) + self._priced_swaps + 2 * self.executor.fills
        d = self.p.detector
        return d.swaps_seen == expected and self.p.execution.handled == d.signals_emitted


async def _drive(market: MarketReplay, progress: _Progress, stop: Callable[[], None]) -> None:
    """Wait for the start snapshot, replay the market, then end the feed."""
    try:
        await market.wait(progress.caught_up)
        await market.run(progress.caught_up)
    finally:
        stop()


async def _follow_monolith(p: Pipeline, emit: Callable[[Any], None],
                           tracker: LatencyTracker) -> None:
    clock = time.perf_counter_ns
    async for swap in p.adapter.stream():
        start = clock()
        emit(swap)
        tracker.record(clock() - start)


async def _follow_hybrid(p: Pipeline, bus: Any, tracker: LatencyTracker) -> None:
    clock = time.perf_counter_ns
    async for swap in p.adapter.stream():
        start = clock()
        bus.emit_v2_swap(swap)
        tracker.record(clock() - start)
        await bus.background.wait_for_space()
    await bus.background.drain()


async def _follow_inproc(p: Pipeline, tracker: LatencyTracker, drive: asyncio.Task[None]) -> None:
    runtime = ServiceRuntime(MessageBus())
    try:
        for svc in p.handlers():
            await runtime.spawn_service(svc)
        source = await runtime.spawn_service(_TimedAdapter(p.adapter, tracker),
                                             name="PolygonAdapter")
        assert source.task is not None
        await asyncio.wait([source.task, drive], return_when=asyncio.FIRST_EXCEPTION)
        if source.failure is not None:
            raise source.failure
    finally:
        await runtime.shutdown()


def _stopper(p: Pipeline) -> Callable[[], None]:
    def stop() -> None:
        if p.adapter.client is not None:
            p.adapter.client.stop()
    return stop


class OwnLegAwareDetector(ArbitrageDetector):
    """The detector of live mode: it prices our own arbitrage only once it is whole.

    ``BanditArb`` does both legs in one transaction, but the feed delivers logs one by one:
    after the first leg's ``Sync`` the first pool has moved and the second not yet, a state
    that exists only inside our transaction (21 of 113 signals of a 2,000-swap run were priced
    on it, then rejected as STALE by the ``eth_call`` pre-check). A real bot knows its own
    transactions: it sent them, and has read their receipts before their logs come back
    (execution waits for the receipt; the feed's next log is handled after). The receipts list
    the states each leg leaves (:attr:`ChainExecutor.mid_states`, ``end_states``). A swap
    that arrives in a mid-transaction state only updates its pool's reserves; the last leg's
    swap updates its pool, then every pool the transaction moved is priced against the other
    pools of its pair, on the state after the transaction, and the most valuable cycle is the
    signal (still at most one per swap). The first pool's state is real once the transaction
    is whole: against a third pool of its pair it can still gap (in that run, 3 of the 85
    arbitrages' best cycles were the first pool's). That run now: 88 signals, 85 fills, no
    STALE (it was 113, 89, 21).

    Not chosen: holding every transaction's swaps until its last log. ``eth_subscribe`` sends
    logs one at a time without saying which is a transaction's last, so each block's last swap
    would wait for the next block's first log (an extra block of latency on every swap, and
    never, in the lock-step run), or for a receipt per transaction. A third party's multi-hop
    transaction is still priced leg by leg (the market here has none; the pre-check catches
    what it would cause).
    """

    def __init__(self, config: DetectorConfig, tokens: Iterable[Token],
                 executor: ChainExecutor) -> None:
        super().__init__(config, tokens=tokens)
        self.executor = executor
        self.own_legs_held = 0
        self._held: list[bytes] = []  # pools our transaction moved before its last leg

    def handle(self, swap: V2Swap) -> None:
        state = (swap.pool_address, swap.block_number, swap.reserve0, swap.reserve1)
        if swap.amount_in and state in self.executor.mid_states:
            self.executor.mid_states.discard(state)
            self._apply(swap)
            self._held.append(swap.pool_address)
            self.own_legs_held += 1
        elif swap.amount_in and state in self.executor.end_states and self._held:
            self.executor.end_states.discard(state)
            self._apply(swap)
            moved, self._held = [swap.pool_address, *self._held], []
            self._price_all(swap, moved)
        else:
            super().handle(swap)

    def _apply(self, swap: V2Swap) -> None:
        """The reserves of a swap of ours, as ``handle`` applies them (our pools are priced:
        we traded them)."""
        self.swaps_seen += 1
        self._update(swap)

    def _price_all(self, swap: V2Swap, moved: list[bytes]) -> None:
        """``handle``'s pricing over every pool in ``moved``; the first most valuable wins."""
        best = None
        for pool in moved:
            found = self.best_cycle(pool)
            if found is not None and (best is None or found.value_usd_e6 > best.value_usd_e6):
                best = found
        if best is not None:
            self.signals_emitted += 1
            self.emit(self._signal(swap, best))


class _ObservedAdapter(PolygonAdapter):
    """The adapter with a callback on every swap it yields (tests, benchmarks)."""

    def __init__(self, config: Any, on_swap: Callable[[V2Swap], None]) -> None:
        super().__init__(config)
        self._on_swap = on_swap

    async def stream(self) -> AsyncIterator[V2Swap]:
        async for swap in super().stream():
            self._on_swap(swap)
            yield swap


async def run_live(mode: str, cfg: BanditConfig, setup: LiveSetup, *,
                   limit: int | None = None, feed: Feed | None = None,
                   on_swap: Callable[[V2Swap], None] | None = None) -> LiveResult:
    """One live run in ``mode`` from the setup's snapshot (``setup`` must be fresh: see
    :func:`restart_from_snapshot`). ``on_swap`` sees every swap the adapter yields, in the
    single-process modes (in distributed mode the adapter is another process)."""
    feed = feed or load_feed(cfg.adapter.feed_path)
    setup = priced_as_configured(setup, cfg.prices)
    register(setup.registry.tokens)  # this setup's chain, whatever ran before in the process
    cfg = live_config(cfg, setup)
    fresh_outputs(cfg)
    executor = ChainExecutor(setup.rpc_url, setup.deployment.trader, setup.deployment.arb)
    p = build_pipeline(cfg, tokens=setup.tokens)  # every mode: distributed's strategies node too
    detector = OwnLegAwareDetector(cfg.detector, setup.tokens, executor)
    p = replace(p, execution=type(p.execution)(cfg.execution, chain=executor), detector=detector)
    if cfg.execution.report_path is not None:  # as build_pipeline wired the paper one
        p.execution.report_when_audited(p.audit)
    if on_swap is not None:
        p = replace(p, adapter=_ObservedAdapter(cfg.adapter, on_swap))
    rpc = RpcClient(setup.rpc_url)
    market = MarketReplay(rpc, setup.deployment, feed, limit=limit)
    progress = _Progress(p, market, executor, setup.priced_pools)
    tracker = LatencyTracker()
    start = time.perf_counter()
    try:
        drive = asyncio.create_task(_drive(market, progress, _stopper(p)))
        await _follow(mode, p, cfg, setup, tracker, drive)
        await drive  # its failure (a pipeline that did not catch up) is the run's
    finally:
        p.close()
        executor.close()
        rpc.close()
    summary = _live_summary(mode, p, tracker, time.perf_counter() - start)
    return LiveResult(summary, len(market.sent), tuple(market.receipts()), executor.fills,
                      executor.reverts, p.adapter.unknown_token_skips,
                      p.adapter.client.stats if p.adapter.client is not None else None,
                      detector.own_legs_held, setup.registry)


async def _follow(mode: str, p: Pipeline, cfg: BanditConfig, setup: LiveSetup,
                  tracker: LatencyTracker, drive: asyncio.Task[None]) -> None:
    if mode == "monolith":
        from bandit.routing import MonolithBus

        bus: Any = MonolithBus(**p.bus_services())
        await _follow_monolith(p, bus.emit_v2_swap, tracker)
    elif mode == "hybrid":
        from bandit.routing import HybridBus

        await _follow_hybrid(p, HybridBus(**p.bus_services()), tracker)
    elif mode == "inproc":
        await _follow_inproc(p, tracker, drive)
    elif mode == "distributed":
        await _follow_distributed(p, cfg, setup.registry, drive)
    else:
        raise ValueError(f"unknown live mode {mode!r}\n"
                         "help: monolith, inproc, hybrid or distributed")


def _adapters_config(cfg: BanditConfig, registry: Registry) -> Path:
    """The adapters node's config: this run's resolved prices, so that it skips exactly the
    tokens the detector cannot price (a reference pool's price is read once, here)."""
    path = cfg.output_dir / "adapters-node.toml"
    table = ", ".join(f"{symbol} = {price}" for symbol, price in registry.prices().items())
    path.write_text("# written by bandit.live for its adapters node\n"
                    f"[prices]\nusd_e6 = {{ {table} }}\n")
    return path


def _adapters_argv(cfg: BanditConfig, config: Path) -> list[str]:
    return [sys.executable, "-m", "bandit", "live", "--node", "adapters",
            "--config", str(config), "--rpc", cfg.adapter.ws_url,
            "--adapters", cfg.adapters_address, "--pools", ",".join(cfg.adapter.pools),
            "--out", str(cfg.output_dir / "adapters")]


async def _follow_distributed(p: Pipeline, cfg: BanditConfig, registry: Registry,
                              drive: asyncio.Task[None]) -> None:
    """This process is the strategies node; the feed runs in an adapters node process that
    follows the node over WebSocket and publishes over ZeroMQ."""
    runtime = ServiceRuntime(MessageBus.with_tcp(cfg.strategies_address))
    proc: asyncio.subprocess.Process | None = None
    argv = _adapters_argv(cfg, _adapters_config(cfg, registry))
    try:
        for svc in p.handlers():
            await runtime.spawn_service(svc)
        proc = await asyncio.create_subprocess_exec(*argv)
        await runtime.bus.connect_to(cfg.adapters_address)
        await runtime.bus.ready()
        exited = asyncio.create_task(proc.wait())
        await asyncio.wait([drive, exited], return_when=asyncio.FIRST_COMPLETED)
        if exited.done() and not drive.done():
            drive.cancel()
            raise RuntimeError(f"the adapters node exited with code {proc.returncode}\n"
                               f"help: run it alone: {' '.join(argv)}")
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()
        await runtime.shutdown()


async def run_live_adapters(cfg: BanditConfig, rpc: str, pools: tuple[str, ...]) -> int:
    """The adapters node of a distributed live run: registry from the chain, then the feed
    published over ZeroMQ until the process is stopped."""
    http_url, ws_url = node_urls(rpc)
    client = RpcClient(http_url)
    try:
        registry = read_registry(client, [bytes.fromhex(p[2:]) for p in pools], cfg.prices)
    finally:
        client.close()
    register(registry.tokens)
    adapter = replace(cfg.adapter, source="websocket", ws_url=ws_url, pools=pools, snapshot=True)
    sent, _ = await run_adapters_node(replace(cfg, adapter=adapter), wait_s=60.0)
    return sent


def _live_summary(mode: str, p: Pipeline, tracker: LatencyTracker, elapsed: float) -> Summary:
    report = tracker.report()
    p50, p99 = (int(report.p50), int(report.p99)) if report.count else (None, None)
    state = p.risk.state()
    return Summary(f"live {mode}", p.detector.swaps_seen, p.detector.signals_emitted,
                   p.execution.filled, p.execution.rejected, p.execution.pnl_usd_e6, state.halts,
                   "per-swap dispatch of live swaps", p50, p99, elapsed)
