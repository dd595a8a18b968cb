"""The bundled feed: reproducible, consistent with the pair contract, mispricings detectable."""

from __future__ import annotations

import gzip

import pytest
from bandit.arbitrage import get_amount_out
from bandit.feed import FeedError, bundled_path, generate, load_feed, parse_feed
from bandit.services import ArbitrageDetector

from mycelium_mono.handlers import attach_emitter


def test_generator_reproduces_the_bundled_file_byte_for_byte() -> None:
    assert gzip.decompress(bundled_path().read_bytes()) == generate()


def test_bundled_feed_is_tens_of_thousands_of_swaps_over_dozens_of_pools() -> None:
    feed = load_feed()
    assert len(feed) >= 20_000
    assert len(feed.pools) >= 24
    pairs = {(p.token0, p.token1) for p in feed.pools}
    assert all(sum((p.token0, p.token1) == pair for p in feed.pools) >= 3 for pair in pairs)


def test_replayed_reserves_follow_the_pair_contract() -> None:
    feed = load_feed()
    reserves = {p.address: (p.reserve0, p.reserve1) for p in feed.pools}
    for swap in feed.replay(2_000):
        r0, r1 = reserves[swap.pool_address]
        r_in, r_out = (r0, r1) if swap.zero_for_one else (r1, r0)
        assert swap.amount_out == get_amount_out(swap.amount_in, r_in, r_out)
        if swap.zero_for_one:
            expected = (r0 + swap.amount_in, r1 - swap.amount_out)
        else:
            expected = (r0 - swap.amount_out, r1 + swap.amount_in)
        assert (swap.reserve0, swap.reserve1) == expected
        reserves[swap.pool_address] = expected


def test_every_injected_mispricing_is_found_on_the_swap_that_made_it() -> None:
    feed = load_feed()
    detector = ArbitrageDetector()
    signalled: set[int] = set()
    attach_emitter(detector, lambda sig: signalled.add(sig.source_seq))
    for swap in feed.replay():
        detector.handle(swap)
    assert len(feed.injected) >= 20
    assert set(feed.injected) <= signalled


def test_truncated_feed_is_refused_with_the_sizes() -> None:
    raw = generate()
    with pytest.raises(FeedError, match="header promises"):
        parse_feed(raw[:-5])
    with pytest.raises(FeedError, match="expected b'BANDITF1'"):
        parse_feed(b"NOTAFEED" + raw[8:])
