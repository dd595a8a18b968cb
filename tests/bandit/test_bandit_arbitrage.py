"""The arbitrage math: closed form, integer re-simulation, the unprofitable side."""

from __future__ import annotations

from bandit.arbitrage import (
    evaluate,
    get_amount_out,
    is_profitable,
    optimal_input,
    paper_fill,
    round_trip,
)
from hypothesis import given, settings
from hypothesis import strategies as st

E = 10**18
# The worked case: A = 1000 X / 2100 Y, B = 2000 Y / 1000 X.
A_X, A_Y, B_Y, B_X = 1000 * E, 2100 * E, 2000 * E, 1000 * E


def profit(x: int) -> int:
    return round_trip(x, A_X, A_Y, B_Y, B_X)[1] - x


def test_worked_case_optimal_input_is_about_10_59_x() -> None:
    x = optimal_input(A_X, A_Y, B_Y, B_X)
    assert 10_590 * E // 1000 <= x <= 10_600 * E // 1000


def test_worked_case_profit_is_about_0_229_x() -> None:
    p = profit(optimal_input(A_X, A_Y, B_Y, B_X))
    assert 228 * E // 1000 < p < 230 * E // 1000


def test_grid_search_agrees_with_closed_form() -> None:
    x_star = optimal_input(A_X, A_Y, B_Y, B_X)
    grid = [i * E // 100 for i in range(1, 3001)]  # 0.01 X .. 30 X
    best = max(grid, key=profit)
    assert abs(best - x_star) <= E // 100
    assert profit(x_star) >= profit(best)


def test_get_amount_out_matches_pair_contract_formula() -> None:
    # amountIn * 997 * reserveOut / (reserveIn * 1000 + amountIn * 997), floored.
    assert get_amount_out(10**18, 100 * 10**18, 200 * 10**18) == (
        10**18 * 997 * 200 * 10**18 // (100 * 10**18 * 1000 + 10**18 * 997)
    )
    assert get_amount_out(1, 10**6, 10**6) == 0  # dust floors to nothing
    assert get_amount_out(0, 10, 10) == 0


def test_re_simulation_floors_each_leg() -> None:
    x = optimal_input(A_X, A_Y, B_Y, B_X)
    mid, out = round_trip(x, A_X, A_Y, B_Y, B_X)
    assert mid == get_amount_out(x, A_X, A_Y)
    assert out == get_amount_out(mid, B_Y, B_X)


def test_unprofitable_side_gives_no_input_and_no_opportunity() -> None:
    # Reversed cycle: X into B first (it is the pool where X is cheap), then back through A.
    assert not is_profitable(B_X, B_Y, A_Y, A_X)
    assert optimal_input(B_X, B_Y, A_Y, A_X) == 0
    assert evaluate(B_X, B_Y, A_Y, A_X, max_input=10**30, gas_cost=0, min_profit=0) is None


def test_fee_band_is_not_an_opportunity() -> None:
    # Prices 0.5 % apart are inside the two 0.3 % fees.
    assert not is_profitable(1000 * E, 2010 * E, 2000 * E, 1000 * E)


def test_cap_limits_input_and_profit_is_re_simulated() -> None:
    found = evaluate(A_X, A_Y, B_Y, B_X, max_input=5 * E, gas_cost=0, min_profit=0)
    assert found is not None
    assert found.amount_in == 5 * E
    assert found.amount_out == round_trip(5 * E, A_X, A_Y, B_Y, B_X)[1]


def test_gas_and_minimum_profit_reject_thin_cycles() -> None:
    gross = profit(optimal_input(A_X, A_Y, B_Y, B_X))
    assert evaluate(A_X, A_Y, B_Y, B_X, max_input=10**30, gas_cost=gross, min_profit=1) is None
    kept = evaluate(A_X, A_Y, B_Y, B_X, max_input=10**30, gas_cost=E // 10, min_profit=E // 10)
    assert kept is not None and kept.profit == gross - E // 10


def test_transfer_tax_turns_the_worked_case_into_a_loss() -> None:
    x = optimal_input(A_X, A_Y, B_Y, B_X)
    assert paper_fill(x, A_X, A_Y, B_Y, B_X) == round_trip(x, A_X, A_Y, B_Y, B_X)[1]
    assert paper_fill(x, A_X, A_Y, B_Y, B_X, tax_x_bps=200) < x  # X is taxed twice


@settings(max_examples=200, deadline=None)
@given(
    a_x=st.integers(10**18, 10**24), a_y=st.integers(10**18, 10**24),
    skew_bps=st.integers(100, 3_000), depth=st.integers(1, 50),
)
def test_closed_form_beats_its_neighbours_on_random_pools(a_x: int, a_y: int, skew_bps: int,
                                                          depth: int) -> None:
    # B prices Y higher than A by skew_bps, with depth times A's liquidity.
    b_x = a_x * depth
    b_y = a_y * depth * 10_000 // (10_000 + skew_bps)
    x = optimal_input(a_x, a_y, b_y, b_x)
    assert x > 0

    def gain(v: int) -> int:
        return round_trip(v, a_x, a_y, b_y, b_x)[1] - v

    step = max(x // 1000, 1)
    # Integer floors make the curve a little ragged: x* is optimal up to a few wei.
    assert gain(x) >= gain(x + step) - 4 and gain(x) >= gain(x - step) - 4
    assert gain(x) >= max(gain(x * k // 10) for k in (2, 5, 8, 12, 15, 20)) - 4
