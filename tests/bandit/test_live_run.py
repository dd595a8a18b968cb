"""Bandit live on a real anvil node: real V2 pairs, real swaps, arbitrage on chain.

One 2,000-swap run (monolith) is checked against the chain: every swap the pipeline saw, every
arbitrage's profit, every receipt. A 300-swap run in each of the four modes must write the same
audit log, and so must a run whose WebSocket is cut and refused (503) on the way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bandit.arbitrage import get_amount_out
from bandit.chain.abi import hex_address
from bandit.chain.rpc import Call, RpcClient
from bandit.config import BanditConfig
from bandit.live import LiveResult, run_live
from bandit.protocol import V2Swap
from bandit.services.database import fetch_rows

from tests.bandit.live_support import LiveChain, live_cfg, live_chain

BIG = 2_000
SMALL = 300


@pytest.fixture(scope="module")
def chain() -> Iterator[LiveChain]:
    with live_chain() as found:
        yield found


@dataclass
class Run:
    cfg: BanditConfig
    result: LiveResult
    swaps: list[V2Swap]

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.cfg.audit.path.read_text().splitlines()]


def live_run(chain: LiveChain, out: Path, mode: str, limit: int, **kw: Any) -> Run:
    chain.fresh()
    cfg, swaps = live_cfg(out), list[V2Swap]()
    setup = chain.setup if "setup" not in kw else kw.pop("setup")
    result = asyncio.run(run_live(mode, cfg, setup, limit=limit, feed=chain.feed,
                                  on_swap=swaps.append, **kw))
    return Run(cfg, result, swaps)


@pytest.fixture(scope="module")
def big(chain: LiveChain, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return live_run(chain, tmp_path_factory.mktemp("big"), "monolith", BIG)


@pytest.fixture
def rpc(chain: LiveChain) -> Iterator[RpcClient]:
    client = RpcClient(chain.node.http_url)
    yield client
    client.close()


def _reserves_at(rpc: RpcClient, swaps: list[V2Swap]) -> list[tuple[int, int]]:
    out = []
    for i in range(0, len(swaps), 400):
        calls = [Call("eth_call", ({"to": hex_address(s.pool_address), "data": "0x0902f1ac"},
                                   hex(s.block_number))) for s in swaps[i : i + 400]]
        out += [(int(r[2:66], 16), int(r[66:130], 16)) for r in rpc.batch(calls)]
    return out


def test_follows_2000_real_swaps_each_equal_to_the_chain(big: Run, chain: LiveChain) -> None:
    # The chain is as the run left it only until the next fresh(): this test reads it first.
    rpc = RpcClient(chain.node.http_url)
    trades = [s for s in big.swaps if s.amount_in > 0]
    assert big.result.market_swaps == BIG
    assert len(trades) == BIG + 2 * big.result.chain_fills
    assert _reserves_at(rpc, trades) == [(s.reserve0, s.reserve1) for s in trades]
    market_blocks = {int(r["blockNumber"], 16) for r in big.result.market_receipts}
    sent = [(s.pool_address, s.amount_in) for s in trades if s.block_number in market_blocks]
    pairs = {i: p.address for i, p in enumerate(chain.setup.deployment.pairs)}
    expected = [(pairs[r.pool], r.amount_in) for r in chain.feed.swaps[:BIG]]
    assert sent == expected
    rpc.close()


def test_every_swap_moves_reserves_by_its_amounts_with_the_pair_math(big: Run) -> None:
    reserves: dict[bytes, tuple[int, int]] = {}
    for swap in big.swaps:
        if swap.amount_in == 0:  # the start snapshot's getReserves
            reserves[swap.pool_address] = (swap.reserve0, swap.reserve1)
            continue
        r0, r1 = reserves[swap.pool_address]
        if swap.zero_for_one:
            assert swap.amount_out == get_amount_out(swap.amount_in, r0, r1)
            assert (swap.reserve0, swap.reserve1) == (r0 + swap.amount_in, r1 - swap.amount_out)
        else:
            assert swap.amount_out == get_amount_out(swap.amount_in, r1, r0)
            assert (swap.reserve0, swap.reserve1) == (r0 - swap.amount_out, r1 + swap.amount_in)
        reserves[swap.pool_address] = (swap.reserve0, swap.reserve1)


def test_each_onchain_arbitrage_realizes_the_predicted_profit_to_the_wei(
        big: Run, chain: LiveChain) -> None:
    rpc = RpcClient(chain.node.http_url)
    predicted = {row[0]: row[7] for row in fetch_rows(big.cfg.database)["signals"]}
    fills = [r for r in big.audit() if r["status"] == "FILLED"]
    assert len(fills) == big.result.chain_fills > 10
    trader = chain.setup.deployment.trader
    for fill in fills:
        receipt = rpc.call("eth_getTransactionReceipt", f"0x{fill['tx_hash']:064x}")
        block = int(receipt["blockNumber"], 16)
        data = "0x70a08231" + bytes(12).hex() + trader.hex()
        after, before = (int(rpc.eth_call(fill["token_in"], data, b), 16)
                         for b in (block, block - 1))
        assert fill["amount_out"] == predicted[fill["order_id"]]
        assert after - before == fill["amount_out"] - fill["amount_in"] > 0
        assert fill["gas_used"] == int(receipt["gasUsed"], 16)
        assert fill["gas_price"] == int(receipt["effectiveGasPrice"], 16) > 0
    rpc.close()


def test_no_transaction_reverts(big: Run, chain: LiveChain) -> None:
    rpc = RpcClient(chain.node.http_url)
    arbs = [f"0x{r['tx_hash']:064x}" for r in big.audit() if r["tx_hash"]]
    receipts = list(big.result.market_receipts) + rpc.batch(
        [Call("eth_getTransactionReceipt", (h,)) for h in arbs])
    assert len(receipts) == BIG + big.result.chain_fills
    assert {r["status"] for r in receipts} == {"0x1"}
    assert big.result.chain_reverts == 0
    rpc.close()


def own_stale(run: Run, rpc: RpcClient) -> tuple[int, int]:
    """(STALE rejections, those whose signal was priced on a swap of our own arbitrage)."""
    fills = [f"0x{r['tx_hash']:064x}" for r in run.audit() if r["tx_hash"]]
    own_blocks = {int(r["blockNumber"], 16) for r in rpc.batch(
        [Call("eth_getTransactionReceipt", (h,)) for h in fills])}
    block_of = {s.seq: s.block_number for s in run.swaps}
    stale = [r for r in run.audit() if r["reason"] == "STALE"]
    return len(stale), sum(1 for r in stale if block_of[r["source_seq"]] in own_blocks)


def test_the_detector_never_fires_on_our_own_half_done_arbitrage(
        big: Run, chain: LiveChain) -> None:
    rpc = RpcClient(chain.node.http_url)
    stale, ours = own_stale(big, rpc)
    rpc.close()
    # Each fill's first leg came back as a swap whose state exists only inside our
    # transaction: its reserves were applied, it was not priced.
    assert big.result.own_legs_held == big.result.chain_fills > 10
    assert ours == 0
    assert stale == 0  # the market's bursts never hold two swaps of a token pair either


@pytest.fixture(scope="module")
def modes(chain: LiveChain, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return {mode: live_run(chain, tmp_path_factory.mktemp(mode), mode, SMALL)
            for mode in ("monolith", "inproc", "hybrid", "distributed")}


@pytest.mark.parametrize("mode", ["inproc", "hybrid", "distributed"])
def test_every_mode_writes_the_monolith_audit_log(modes: dict[str, Run], mode: str) -> None:
    golden = modes["monolith"].cfg.audit.path.read_bytes()
    assert modes["monolith"].result.chain_fills > 0
    assert modes[mode].cfg.audit.path.read_bytes() == golden


class FlakyProxy:
    """A TCP proxy to the node that cuts the first connection after ``cut_after`` bytes
    towards the client, then answers the next ``refusals`` handshakes with HTTP 503."""

    def __init__(self, port: int, cut_after: int, refusals: int) -> None:
        self.port, self.cut_after, self.refusals = port, cut_after, refusals
        self.connections = self.refused = 0
        self.cut = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.cut and self.refused < self.refusals:
            self.refused += 1
            await reader.read(4096)
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        first = self.connections == 1
        await asyncio.gather(self._pipe(reader, up_writer, False),
                             self._pipe(up_reader, writer, first), return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    cutting: bool) -> None:
        moved = 0
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
            moved += len(data)
            if cutting and moved > self.cut_after:
                self.cut = True
                dst.transport.abort()
                return
        dst.close()


def test_reconnect_after_a_cut_and_503s_backfills_and_loses_no_swap(
        chain: LiveChain, modes: dict[str, Run], tmp_path: Path) -> None:
    from dataclasses import replace

    proxy = FlakyProxy(chain.node.port, cut_after=120_000, refusals=2)

    async def run() -> Run:
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        chain.fresh()
        cfg, swaps = live_cfg(tmp_path), list[V2Swap]()
        setup = replace(chain.setup, ws_url=f"ws://127.0.0.1:{port}")
        try:
            result = await run_live("monolith", cfg, setup, limit=SMALL, feed=chain.feed,
                                    on_swap=swaps.append)
        finally:
            server.close()
        return Run(cfg, result, swaps)

    flaky = asyncio.run(run())
    stats = flaky.result.feed_stats
    assert stats is not None and proxy.cut and proxy.refused == 2
    assert (stats.connects, stats.reconnects) == (2, 1)
    assert "503" in stats.last_error  # the refused handshakes were retried, not fatal
    assert stats.backfilled > 0
    assert flaky.cfg.audit.path.read_bytes() == modes["monolith"].cfg.audit.path.read_bytes()
    assert [(s.pool_address, s.amount_in, s.reserve0) for s in flaky.swaps if s.amount_in] == [
        (s.pool_address, s.amount_in, s.reserve0) for s in modes["monolith"].swaps if s.amount_in]
