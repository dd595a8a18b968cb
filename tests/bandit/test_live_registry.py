"""A token the registry cannot price: its pools' swaps are skipped and counted, never a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bandit.feed import load_feed
from bandit.live import prepare, run_live
from bandit.tokens import TOKENS

from tests.bandit.live_support import live_cfg, running_node

LIMIT = 120


def test_swaps_of_an_unpriced_token_are_counted_skips(tmp_path: Path) -> None:
    feed = load_feed()
    prices = {t.symbol: t.price_usd_e6 for t in TOKENS if t.symbol != "AAVE"}
    with running_node() as node:
        setup = prepare(node.http_url, node.ws_url, feed, prices=prices)
        result = asyncio.run(run_live("monolith", live_cfg(tmp_path), setup, limit=LIMIT,
                                      feed=feed))
    aave = TOKENS.index(next(t for t in TOKENS if t.symbol == "AAVE"))
    aave_pools = {i for i, p in enumerate(feed.pools) if aave in (p.token0, p.token1)}
    on_aave = sum(1 for s in feed.swaps[:LIMIT] if s.pool in aave_pools)
    assert [symbol for _, symbol in setup.registry.unpriced] == ["AAVE"]
    # Each AAVE pool's start snapshot and each of its swaps: skipped, counted.
    assert result.unknown_token_skips == len(aave_pools) + on_aave > len(aave_pools)
    assert result.market_swaps == LIMIT
