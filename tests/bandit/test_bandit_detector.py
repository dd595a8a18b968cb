"""The detector's lean hot path: the same winner as sizing every cycle, any token table."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from bandit.arbitrage import evaluate
from bandit.config import load_config
from bandit.feed import load_feed
from bandit.protocol import ArbitrageSignal, V2Swap
from bandit.runner import run_monolith
from bandit.services import ArbitrageDetector, DetectorConfig
from bandit.tokens import TOKENS, Token, token_amount, usd_e6
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium_mono.handlers import attach_emitter

WETH = next(t for t in TOKENS if t.symbol == "WETH")
USDC = next(t for t in TOKENS if t.symbol == "USDC")
E = 10**18


def swap(pool: int, r0: int, r1: int, seq: int = 0, token0: bytes = WETH.address,
         token1: bytes = USDC.address) -> V2Swap:
    return V2Swap(pool_address=bytes([pool]) * 20, token0=token0, token1=token1, amount_in=1,
                  amount_out=1, zero_for_one=True, reserve0=r0, reserve1=r1,
                  timestamp_ns=seq, block_number=7, seq=seq)


def every_cycle_best(det: ArbitrageDetector, moved: bytes) -> tuple[object, ...] | None:
    """The detector as it was: all four cycles per pool pair sized, thresholds per candidate."""
    cfg, state = det.config, det.pools[moved]
    best: tuple[int, tuple[object, ...]] | None = None
    for other in det.pairs[(state.token0, state.token1)]:
        if other == moved:
            continue
        for buy, sell in ((moved, other), (other, moved)):
            for zero_in in (True, False):
                a, b = det.pools[buy], det.pools[sell]
                token_in = a.token0 if zero_in else a.token1
                reserves = ((a.reserve0, a.reserve1, b.reserve1, b.reserve0) if zero_in
                            else (a.reserve1, a.reserve0, b.reserve0, b.reserve1))
                found = evaluate(*reserves,
                                 max_input=token_amount(token_in, cfg.max_input_usd_e6),
                                 gas_cost=token_amount(token_in, cfg.gas_cost_usd_e6),
                                 min_profit=token_amount(token_in, cfg.min_profit_usd_e6))
                if found is None:
                    continue
                value = usd_e6(token_in, found.profit)
                if best is None or value > best[0]:
                    best = (value, (buy, sell, token_in, reserves, found))
    return None if best is None else best[1]


reserve = st.integers(1, 10**30)


@settings(max_examples=300, deadline=None)
@given(pools=st.lists(st.tuples(reserve, reserve), min_size=2, max_size=5),
       moved=st.tuples(reserve, reserve))
def test_sizing_only_profitable_cycles_picks_the_same_winner(
    pools: list[tuple[int, int]], moved: tuple[int, int]
) -> None:
    det = ArbitrageDetector(DetectorConfig(gas_cost_usd_e6=0, min_profit_usd_e6=0))
    for i, (r0, r1) in enumerate(pools):
        det._update(swap(i, r0, r1))
    det._update(swap(0, *moved))
    best = det.best_cycle(bytes([0]) * 20)
    expected = every_cycle_best(det, bytes([0]) * 20)
    got = None if best is None else (best.buy_pool, best.sell_pool, best.token_in,
                                     best.reserves, best.found)
    assert got == expected


def test_the_bundled_feed_gives_the_same_signals_as_sizing_every_cycle() -> None:
    det = ArbitrageDetector()
    attach_emitter(det, lambda _: None)
    agreed = 0
    for s in load_feed().replay(1_500):
        det.handle(s)
        best = det.best_cycle(s.pool_address)
        expected = every_cycle_best(det, s.pool_address)
        assert (None if best is None else (best.buy_pool, best.sell_pool, best.token_in,
                                           best.reserves, best.found)) == expected
        agreed += expected is not None
    assert agreed > 50  # the feed does produce opportunities to compare


def test_a_swap_with_a_token_outside_the_table_is_a_counted_skip() -> None:
    det = ArbitrageDetector()
    signals: list[object] = []
    attach_emitter(det, signals.append)
    stranger = b"\xee" * 20
    det.handle(swap(1, 1000 * E, 2000 * 10**6, token1=stranger))
    det.handle(swap(2, 1000 * E, 2100 * 10**6, token1=stranger))
    assert (det.swaps_seen, det.unknown_token_swaps, signals, det.pools) == (2, 2, [], {})


def test_the_token_table_is_a_constructor_argument() -> None:
    # The same pools in a market whose WETH is worth half: the 1 USD gas cost, in WETH, doubles.
    cheap_weth = replace(WETH, price_usd_e6=WETH.price_usd_e6 // 2)
    cfg = DetectorConfig(max_input_usd_e6=10**18, gas_cost_usd_e6=1_000_000, min_profit_usd_e6=0)
    gas = []
    for table in (TOKENS, (cheap_weth, USDC)):
        det = ArbitrageDetector(cfg, tokens=table)
        out: list[ArbitrageSignal] = []
        attach_emitter(det, out.append)
        det.handle(swap(1, 1000 * E, 2000 * 10**6))
        det.handle(swap(2, 1000 * E, 2100 * 10**6))
        [sig] = out
        assert sig.token_in == WETH.address
        gas.append(sig.gas_cost)
    assert gas == [10**6 * E // WETH.price_usd_e6, 10**6 * E // cheap_weth.price_usd_e6]


def test_a_token_missing_from_a_custom_table_is_skipped_not_raised() -> None:
    only_usdc: tuple[Token, ...] = (USDC,)
    det = ArbitrageDetector(tokens=only_usdc)
    det.handle(swap(1, 1000 * E, 2000 * 10**6))
    assert det.unknown_token_swaps == 1


# sha256 of audit.jsonl for the whole bundled feed, written by the detector before issue 16's
# changes (commit f1bc84e): the lean hot path must not change one audited byte. The golden
# tests compare modes with each other; this compares the code with its own past.
#
# Regenerated when issue 14 (live mode) added tx_hash, gas_used and gas_price to
# OrderExecution, so every audit line carries three more keys (zeros on paper fills). How: the
# bundled feed through run_monolith (this test's config) twice on i14's protocol, once with
# main's ArbitrageDetector and main's arbitrage.evaluate (`git show main:...`, unchanged but
# for the import) and once with the lean ones: the two audit logs were byte-identical (1,364
# records), and this is their digest. Issue 16's own digest is kept below: the same log with
# i14's three keys dropped must still hash to it.
AUDIT_SHA256_BEFORE_ISSUE_16 = "4463817abef7730ccc5e81f913499012e4664446be2d758231014f7d9e580bed"
AUDIT_SHA256_BEFORE_ISSUE_16_WITHOUT_ISSUE_14_FIELDS = (
    "aa63b00452c788432fbf01d54b344e644743636c053a0f0d135710d2b3d92cbc"
)
ISSUE_14_FIELDS = ("tx_hash", "gas_used", "gas_price")


def without_issue_14_fields(audit: bytes) -> bytes:
    """The audit log as written before issue 14: the same sorted-key JSON lines, minus its
    three OrderExecution fields."""
    lines = []
    for line in audit.splitlines():
        record = {k: v for k, v in json.loads(line).items() if k not in ISSUE_14_FIELDS}
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
    return "".join(lines).encode()


def test_the_whole_feed_audits_the_same_bytes_as_before_the_lean_hot_path(
    tmp_path: Path,
) -> None:
    cfg = load_config(output_dir=tmp_path, overrides={"metrics": {"http_port": None},
                                                      "audit": {"fsync": "never"}})
    summary = run_monolith(cfg)
    assert summary.signals > 1_000
    audit = (tmp_path / "audit.jsonl").read_bytes()
    assert hashlib.sha256(audit).hexdigest() == AUDIT_SHA256_BEFORE_ISSUE_16
    assert (hashlib.sha256(without_issue_14_fields(audit)).hexdigest()
            == AUDIT_SHA256_BEFORE_ISSUE_16_WITHOUT_ISSUE_14_FIELDS)
