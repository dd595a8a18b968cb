"""The bundled feed's seeded flow, replayed as real swap transactions on the node.

Each feed swap becomes one ``BanditArb.swapExactIn`` from the market account: the input goes
into the pair and the pair's own ``getAmountOut`` is taken out, so the chain's amounts are the
replay's amounts. Swaps are mined in bursts with ``evm_mine``; a burst never holds two swaps of
one token pair, so a signal priced on one swap's reserves is still exact when it executes
after the burst (the other pools of that pair did not move). After each burst the replay
waits until the pipeline has caught up (``caught_up``): the run is lock-step, hence the same
chain, block for block, in every deployment mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bandit.chain.contracts import bandit_contract
from bandit.chain.deploy import Deployment, Sender
from bandit.chain.rpc import Call, RpcClient
from bandit.feed import Feed

__all__ = ["MARKET_GAS", "MarketReplay", "MarketSwap", "bursts"]

# Equal limits for every market swap, with a margin over the measured 60-95k gas use.
MARKET_GAS = 300_000


@dataclass(frozen=True)
class MarketSwap:
    """One feed swap as a transaction: which pair, which token goes in, how much."""

    seq: int
    pool: int
    pair: bytes
    token_in: bytes
    amount_in: int


def market_swaps(feed: Feed, deployment: Deployment, limit: int | None) -> Iterator[MarketSwap]:
    for seq, record in enumerate(feed.swaps[:limit]):
        opening = feed.pools[record.pool]
        index = opening.token0 if record.zero_for_one else opening.token1
        yield MarketSwap(seq, record.pool, deployment.pairs[record.pool].address,
                         deployment.tokens[index], record.amount_in)


def bursts(swaps: Iterator[MarketSwap], feed: Feed, max_size: int) -> Iterator[list[MarketSwap]]:
    """Consecutive swaps grouped into blocks: a new block when a token pair repeats."""
    block: list[MarketSwap] = []
    pairs: set[tuple[int, int]] = set()
    for swap in swaps:
        opening = feed.pools[swap.pool]
        key = (opening.token0, opening.token1)
        if key in pairs or len(block) == max_size:
            yield block
            block, pairs = [], set()
        block.append(swap)
        pairs.add(key)
    if block:
        yield block


class MarketReplay:
    """``await MarketReplay(...).run(caught_up)``: every burst sent, mined, and followed."""

    def __init__(self, rpc: RpcClient, deployment: Deployment, feed: Feed, *,
                 limit: int | None = None, burst: int = 4, catch_up_s: float = 30.0) -> None:
        self.rpc, self.deployment, self.feed = rpc, deployment, feed
        self.limit, self.burst, self.catch_up_s = limit, burst, catch_up_s
        self.sender = Sender(rpc, deployment.market, gas=MARKET_GAS)
        self.sent: list[MarketSwap] = []
        self.tx_hashes: list[str] = []

    def _send(self, block: Sequence[MarketSwap]) -> None:
        """One burst: the transactions and the ``evm_mine`` in one HTTP round trip."""
        arb = bandit_contract("BanditArb")
        calls = [self.sender.tx(self.deployment.arb, arb.data(
            "swapExactIn(address,address,uint256)", s.pair, s.token_in, s.amount_in))
            for s in block]
        results = self.rpc.batch([*calls, Call("evm_mine")])
        self.tx_hashes.extend(results[:-1])
        self.sent.extend(block)

    def receipts(self) -> list[dict[str, Any]]:
        """Every market transaction's receipt (after the run: nothing waits for them)."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(self.tx_hashes), 500):
            chunk = self.tx_hashes[i : i + 500]
            out += self.rpc.batch([Call("eth_getTransactionReceipt", (h,)) for h in chunk])
        return out

    async def run(self, caught_up: Callable[[int], bool]) -> int:
        """Replay the feed; ``caught_up(n)`` says the pipeline has handled the first ``n``
        market swaps and everything they caused. Returns the number of swaps sent."""
        swaps = market_swaps(self.feed, self.deployment, self.limit)
        for block in bursts(swaps, self.feed, self.burst):
            self._send(block)
            await self.wait(caught_up)
        return len(self.sent)

    async def wait(self, caught_up: Callable[[int], bool]) -> None:
        deadline = time.monotonic() + self.catch_up_s
        while not caught_up(len(self.sent)):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the pipeline did not catch up with {len(self.sent)} market swaps "
                    f"in {self.catch_up_s}s\nhelp: is the feed connected to {self.rpc.url}?")
            await asyncio.sleep(0.0005)
