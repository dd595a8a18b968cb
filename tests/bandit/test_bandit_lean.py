"""Issue 16's lean hot path: each shortcut gives exactly what the long way gives."""

from __future__ import annotations

import pytest
from bandit.arbitrage import FEE_DEN, FEE_NUM, evaluate
from bandit.protocol import OrderExecution, OrderStatus, RejectReason
from bandit.services import ArbitrageDetector, DetectorConfig
from bandit.services.audit import audit_record, audit_record_json
from bandit.services.detector import _profit_bound
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.bandit.test_bandit_detector import every_cycle_best, swap

U256 = st.integers(0, 2**256 - 1)
U64 = st.integers(0, 2**64 - 1)
ADDRESS = st.binary(min_size=20, max_size=20)


@settings(max_examples=300, deadline=None)
@given(ids=st.tuples(U64, U64, U64, U64), status=st.sampled_from(list(OrderStatus)),
       reason=st.sampled_from(list(RejectReason)), pools=st.tuples(ADDRESS, ADDRESS, ADDRESS),
       amounts=st.tuples(U256, U256, U256, U256, U256),
       pnl=st.integers(-(2**63), 2**63 - 1))
def test_the_audit_template_writes_what_json_dumps_writes(
    ids: tuple[int, ...], status: OrderStatus, reason: RejectReason,
    pools: tuple[bytes, ...], amounts: tuple[int, ...], pnl: int,
) -> None:
    execution = OrderExecution(
        order_id=ids[0], source_seq=ids[1], timestamp_ns=ids[2], status=int(status),
        reason=int(reason), buy_pool=pools[0], sell_pool=pools[1], token_in=pools[2],
        amount_in=amounts[0], amount_out=amounts[1], gas_cost=amounts[2], pnl_usd_e6=pnl,
        tx_hash=amounts[3], gas_used=ids[3], gas_price=amounts[4],
    )
    assert audit_record(execution) == audit_record_json(execution)


def test_an_unknown_status_code_is_the_same_error_as_before() -> None:
    execution = OrderExecution(
        order_id=1, source_seq=1, timestamp_ns=1, status=9, reason=0, buy_pool=b"\x01" * 20,
        sell_pool=b"\x02" * 20, token_in=b"\x03" * 20, amount_in=1, amount_out=1, gas_cost=0,
        pnl_usd_e6=0, tx_hash=0, gas_used=0, gas_price=0,
    )
    with pytest.raises(ValueError, match="9 is not a valid OrderStatus"):
        audit_record(execution)


reserve = st.integers(1, 10**30)


@settings(max_examples=500, deadline=None)
@given(a_x=reserve, a_y=reserve, b_y=reserve, b_x=reserve, cap=st.integers(1, 10**30),
       gas=st.integers(0, 10**20), min_profit=st.integers(0, 10**20))
def test_the_profit_bound_is_above_every_sizing_that_pays(
    a_x: int, a_y: int, b_y: int, b_x: int, cap: int, gas: int, min_profit: int
) -> None:
    found = evaluate(a_x, a_y, b_y, b_x, max_input=cap, gas_cost=gas, min_profit=min_profit)
    if found is not None:
        bound = _profit_bound(float(a_x), float(a_y), float(b_y), float(b_x))
        assert bound >= float(gas + min_profit)
        assert bound >= found.amount_out - found.amount_in


@settings(max_examples=300, deadline=None)
@given(pools=st.lists(st.tuples(reserve, reserve), min_size=2, max_size=5),
       moved=st.tuples(reserve, reserve), gas=st.integers(0, 10**7),
       min_profit=st.integers(0, 10**8))
def test_skipping_cycles_under_the_bound_picks_the_same_winner(
    pools: list[tuple[int, int]], moved: tuple[int, int], gas: int, min_profit: int
) -> None:
    det = ArbitrageDetector(DetectorConfig(gas_cost_usd_e6=gas, min_profit_usd_e6=min_profit))
    for i, (r0, r1) in enumerate(pools):
        det._update(swap(i, r0, r1))
    det._update(swap(0, *moved))
    best = det.best_cycle(bytes([0]) * 20)
    expected = every_cycle_best(det, bytes([0]) * 20)
    got = None if best is None else (best.buy_pool, best.sell_pool, best.token_in,
                                     best.reserves, best.found)
    assert got == expected


def test_the_bound_is_tight_on_the_worked_case() -> None:
    # 1000 WETH / 2 000 000 USDC against 1000 WETH / 2 100 000 USDC: the bound exceeds the
    # real profit by less than a percent, so it skips only what is really far from paying.
    a_x, a_y, b_y, b_x = 2_000_000 * 10**6, 1000 * 10**18, 1000 * 10**18, 2_100_000 * 10**6
    found = evaluate(a_x, a_y, b_y, b_x, max_input=10**30, gas_cost=0, min_profit=0)
    assert found is not None
    bound = _profit_bound(float(a_x), float(a_y), float(b_y), float(b_x))
    assert found.amount_out - found.amount_in <= bound < 1.01 * (found.amount_out - found.amount_in)


@settings(max_examples=500, deadline=None)
@given(m0=reserve, m1=reserve, o0=reserve, delta=st.integers(-3, 3), mirror=st.booleans(),
       others=st.lists(st.tuples(reserve, reserve), max_size=2))
def test_at_the_edge_of_profitability_the_integers_decide(
    m0: int, m1: int, o0: int, delta: int, mirror: bool, others: list[tuple[int, int]]
) -> None:
    # The moved pool and one other right at the edge 997²·m1·o0 = 1000²·m0·o1 (give or take a
    # few units), where the float products cannot tell the direction; no thresholds, so every
    # cycle the integers pass is sized and the winner shows any cycle the floats got wrong.
    o1 = max(1, FEE_NUM**2 * m1 * o0 // (FEE_DEN**2 * m0) + delta)
    edge = [(m0, m1), (o0, o1)] if not mirror else [(o0, o1), (m0, m1)]
    det = ArbitrageDetector(DetectorConfig(gas_cost_usd_e6=0, min_profit_usd_e6=0))
    for i, (r0, r1) in enumerate([edge[1], *others]):
        det._update(swap(i + 1, r0, r1))
    det._update(swap(0, *edge[0]))
    best = det.best_cycle(bytes([0]) * 20)
    expected = every_cycle_best(det, bytes([0]) * 20)
    got = None if best is None else (best.buy_pool, best.sell_pool, best.token_in,
                                     best.reserves, best.found)
    assert got == expected
