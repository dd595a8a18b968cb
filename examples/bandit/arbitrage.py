# ruff: noqa: RUF002  (docstrings use the paper notation for gamma, minus and dot)
"""Two-pool constant-product arbitrage, in exact integer math.

Pool A takes X in and pays Y out (reserves ``a_x``, ``a_y``); pool B takes that Y back and
pays X (reserves ``b_y``, ``b_x``). With the V2 fee γ = 997/1000 the round trip returns

    out(x) = γ·b_x·γ·a_y·x / (b_y·(a_x + γx) + γ·γ·a_y·x)

which is maximised at x* = (γ·√(a_x·a_y·b_x·b_y) − a_x·b_y) / (γ·(b_y + γ·a_y)), and is
worth anything only when γ²·a_y·b_x > a_x·b_y. Everything here is integers (``math.isqrt``),
so every machine and every deployment mode computes the same numbers to the last wei.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isqrt

__all__ = [
    "Opportunity",
    "evaluate",
    "get_amount_out",
    "is_profitable",
    "optimal_input",
    "paper_fill",
    "round_trip",
    "size_cycle",
]

FEE_NUM = 997
FEE_DEN = 1000
BPS = 10_000


def get_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """Uniswap V2 ``getAmountOut``: 0.3 % fee, floor division, exactly as the pair contract."""
    if amount_in <= 0 or reserve_in <= 0 or reserve_out <= 0:
        return 0
    with_fee = amount_in * FEE_NUM
    return with_fee * reserve_out // (reserve_in * FEE_DEN + with_fee)


def is_profitable(a_x: int, a_y: int, b_y: int, b_x: int) -> bool:
    """γ²·a_y·b_x > a_x·b_y: the marginal round trip returns more X than it costs."""
    return FEE_NUM * FEE_NUM * a_y * b_x > FEE_DEN * FEE_DEN * a_x * b_y


def optimal_input(a_x: int, a_y: int, b_y: int, b_x: int) -> int:
    """x*, floored, or 0 when the cycle is not profitable.

    Multiplying numerator and denominator by 1000² keeps γ integral:
    x* = 1000·(997·√P − 1000·a_x·b_y) / (997·(1000·b_y + 997·a_y)), P = a_x·a_y·b_x·b_y.
    """
    if not is_profitable(a_x, a_y, b_y, b_x):
        return 0
    root = isqrt(a_x * a_y * b_x * b_y)
    numerator = FEE_DEN * (FEE_NUM * root - FEE_DEN * a_x * b_y)
    if numerator <= 0:
        return 0
    return numerator // (FEE_NUM * (FEE_DEN * b_y + FEE_NUM * a_y))


def round_trip(x: int, a_x: int, a_y: int, b_y: int, b_x: int) -> tuple[int, int]:
    """(Y received from A, X received from B) for ``x`` in, with integer ``getAmountOut``."""
    mid = get_amount_out(x, a_x, a_y)
    return mid, get_amount_out(mid, b_y, b_x)


@dataclass(frozen=True)
class Opportunity:
    """A sized, re-simulated cycle (all amounts in base units; profit in X, net of gas)."""

    amount_in: int
    amount_mid: int
    amount_out: int
    gas_cost: int

    @property
    def profit(self) -> int:
        return self.amount_out - self.amount_in - self.gas_cost


def evaluate(
    a_x: int, a_y: int, b_y: int, b_x: int, *, max_input: int, gas_cost: int, min_profit: int
) -> Opportunity | None:
    """Size the cycle at x* capped to ``max_input``, re-simulate it, keep it if it pays.

    The closed form is the optimum of the real-valued curve; the re-simulation with the
    contract's floor divisions is what a fill would actually return, so profit is taken from it.
    """
    sized = size_cycle(a_x, a_y, b_y, b_x, max_input=max_input, gas_cost=gas_cost,
                       min_profit=min_profit)
    return None if sized is None else Opportunity(*sized, gas_cost)


def size_cycle(
    a_x: int, a_y: int, b_y: int, b_x: int, *, max_input: int, gas_cost: int, min_profit: int
) -> tuple[int, int, int] | None:
    """:func:`evaluate`'s ``(amount_in, amount_mid, amount_out)``, without the Opportunity.

    The detector sizes many cycles and signals the best one: building a frozen dataclass for
    each sized cycle cost more than its arithmetic (issue 16's profile).
    """
    x = min(optimal_input(a_x, a_y, b_y, b_x), max_input)
    if x <= 0:
        return None
    mid, out = round_trip(x, a_x, a_y, b_y, b_x)
    # Opportunity.profit, before any Opportunity: most cycles the detector sizes do not pay.
    if out - x - gas_cost < min_profit:
        return None
    return x, mid, out


def _after_tax(amount: int, tax_bps: int) -> int:
    return amount * (BPS - tax_bps) // BPS


def paper_fill(
    amount_in: int,
    a_x: int,
    a_y: int,
    b_y: int,
    b_x: int,
    *,
    tax_x_bps: int = 0,
    tax_y_bps: int = 0,
) -> int:
    """X received when ``amount_in`` X goes through both pools, transfer taxes included.

    Each token transfer of a fee-on-transfer token delivers ``(1 - tax)`` of what was sent:
    X into A, Y from A to B, X from B back to us.
    """
    mid = get_amount_out(_after_tax(amount_in, tax_x_bps), a_x, a_y)
    back = get_amount_out(_after_tax(mid, tax_y_bps), b_y, b_x)
    return _after_tax(back, tax_x_bps)
