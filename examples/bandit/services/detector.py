"""ArbitrageDetector: keeps every pool's reserves from the swap stream and prices cycles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from math import sqrt
from typing import NamedTuple

from bandit.arbitrage import FEE_DEN, FEE_NUM, Opportunity, size_cycle
from bandit.protocol import ArbitrageSignal, V2Swap
from bandit.tokens import TOKENS, Token
from mycelium_mono import MessageHandler

__all__ = ["ArbitrageDetector", "DetectorConfig"]

# is_profitable's factors, hoisted: 997²·a_y·b_x > 1000²·a_x·b_y.
_GAMMA2 = FEE_NUM * FEE_NUM
_ONE2 = FEE_DEN * FEE_DEN
# The fee factor g = 0.997 and g² as floats, for _profit_bound only: no amount is a float.
_G = FEE_NUM / FEE_DEN
_G2 = _G * _G
# The bound's safety margin, relative: the dozen float roundings it makes are each at most
# 2**-53 (1.1e-16) relative, so 1e-12 covers them a thousand times over.
_SLACK = 1e-12
_ABOVE, _BELOW = 1.0 + _SLACK, 1.0 - _SLACK


@dataclass(frozen=True)
class DetectorConfig:
    """Sizing and profitability thresholds, in micro-USD at the reference prices."""

    max_input_usd_e6: int = 50_000_000_000
    gas_cost_usd_e6: int = 500_000
    min_profit_usd_e6: int = 5_000_000
    deadline_blocks: int = 2


@dataclass(frozen=True)
class _Pricing:
    """One token's thresholds in its own base units, converted once (issue 16: the detector
    used to convert all three for every candidate, 745,000 conversions for 20,000 swaps)."""

    max_input: int
    gas_cost: int
    min_profit: int
    price_usd_e6: int
    scale: int  # 10**decimals
    # min_profit + gas_cost as a float: a cycle whose profit bound is below it cannot pay.
    need: float

    @classmethod
    def of(cls, token: Token, cfg: DetectorConfig) -> _Pricing:
        scale = 10**token.decimals
        # The same floor divisions as bandit.tokens.token_amount, so every amount is identical.
        def amount(usd_e6: int) -> int:
            return usd_e6 * scale // token.price_usd_e6

        gas_cost, min_profit = amount(cfg.gas_cost_usd_e6), amount(cfg.min_profit_usd_e6)
        return cls(amount(cfg.max_input_usd_e6), gas_cost, min_profit, token.price_usd_e6, scale,
                   float(gas_cost + min_profit))

    def usd_e6(self, amount: int) -> int:
        return amount * self.price_usd_e6 // self.scale  # as bandit.tokens.usd_e6


@dataclass(slots=True, eq=False)
class _PoolState:
    address: bytes
    token0: bytes
    token1: bytes
    reserve0: int
    reserve1: int
    # The reserves as floats, converted once per swap, for the float tests only (_cycles,
    # _profit_bound): every amount is computed from the integers.
    float0: float
    float1: float
    # min_profit + gas_cost of token0 and token1 (_Pricing.need), for the same tests.
    need0: float
    need1: float
    # Every pool of this pair, this one included, in first-seen order: one list shared by the
    # pair, so a swap finds its counterparts without building the pair's key.
    peers: list[_PoolState]


class _Candidate(NamedTuple):
    buy_pool: bytes
    sell_pool: bytes
    token_in: bytes
    token_mid: bytes
    reserves: tuple[int, int, int, int]  # a_x, a_y, b_y, b_x
    sized: tuple[int, int, int]  # amount_in, amount_mid, amount_out (size_cycle)
    gas_cost: int
    value_usd_e6: int

    @property
    def found(self) -> Opportunity:
        """What :func:`bandit.arbitrage.evaluate` returns for this cycle (built on demand:
        only tests ask, the signal is made from the numbers)."""
        return Opportunity(*self.sized, self.gas_cost)


class ArbitrageDetector(MessageHandler[V2Swap]):
    """On every swap, compare the pool that moved with every other pool of its pair.

    At most one signal per swap (the most valuable cycle): one input, at most one output, keeps
    the chain linear, which is what makes downstream order identical in every mode.

    ``tokens`` is the table the detector prices in (default: the bundled market's). A swap in a
    pool with a token outside it cannot be priced: it is skipped and counted in
    ``unknown_token_swaps``, never an error (a live chain has pools the table does not list).
    """

    def __init__(
        self, config: DetectorConfig | None = None, tokens: Iterable[Token] = TOKENS
    ) -> None:
        self.config = config or DetectorConfig()
        self.pricing = {t.address: _Pricing.of(t, self.config) for t in tokens}
        self.pools: dict[bytes, _PoolState] = {}
        self.pairs: dict[tuple[bytes, bytes], list[bytes]] = {}
        self._peers: dict[tuple[bytes, bytes], list[_PoolState]] = {}
        self.swaps_seen = 0
        self.signals_emitted = 0
        self.unknown_token_swaps = 0

    def handle(self, swap: V2Swap) -> None:
        self.swaps_seen += 1
        pricing = self.pricing
        if swap.token0 not in pricing or swap.token1 not in pricing:
            self.unknown_token_swaps += 1
            return
        state = self._update(swap)
        best = self._best(state)
        if best is not None:
            self.signals_emitted += 1
            self.emit(self._signal(swap, best))

    def _update(self, swap: V2Swap) -> _PoolState:
        state = self.pools.get(swap.pool_address)
        r0, r1 = swap.reserve0, swap.reserve1
        if state is None:
            return self._add_pool(swap)
        state.reserve0, state.reserve1 = r0, r1
        state.float0, state.float1 = float(r0), float(r1)
        return state

    def _add_pool(self, swap: V2Swap) -> _PoolState:
        pair = (swap.token0, swap.token1)
        peers = self._peers.setdefault(pair, [])
        r0, r1 = swap.reserve0, swap.reserve1
        state = _PoolState(swap.pool_address, swap.token0, swap.token1, r0, r1, float(r0),
                           float(r1), self.pricing[swap.token0].need,
                           self.pricing[swap.token1].need, peers)
        peers.append(state)
        self.pools[swap.pool_address] = state
        self.pairs.setdefault(pair, []).append(swap.pool_address)
        return state

    def best_cycle(self, moved: bytes) -> _Candidate | None:
        """The most valuable profitable cycle between ``moved`` and any other pool of its pair.

        Every other pool, in both directions and with either token as the input: the pool that
        just moved is the one whose price changed, so it is never skipped. Only the cycles
        that can pay are sized (see :func:`_cycles` and :func:`_profit_bound`), in the order
        all four were tried before, so the winner (the first of the most valuable) is the same.
        """
        return self._best(self.pools[moved])

    def _best(self, m: _PoolState) -> _Candidate | None:
        """best_cycle's loop: :func:`_cycles` and :func:`_profit_bound` written out.

        The two cycles of the direction that passes the profitability test share
        K = g²·m.r1·o.r0 and L = m.r0·o.r1 (the mirror direction: g²·m.r0·o.r1 and m.r1·o.r0),
        so one √K - √L bounds both; only a cycle whose bound reaches its input token's need is
        sized exactly. In the sliver where the float tests cannot tell the direction, the
        integers decide (:func:`_cycles`). Per swap this is a few float operations per
        counterpart pool: most swaps size nothing.
        """
        best: _Candidate | None = None
        m0, m1, need0, need1 = m.float0, m.float1, m.need0, m.need1
        for o in m.peers:
            if o is m:
                continue
            o0, o1 = o.float0, o.float1
            p, q = m1 * o0, m0 * o1
            k, k_mirror = _G2 * p, _G2 * q
            if k > q * _ABOVE:  # (m, o, token0 in), then (o, m, token1 in)
                root = sqrt(k)
                gap = root - sqrt(q) + _SLACK * root
                peak = gap * gap * _ABOVE  # _profit_bound times M
                if peak >= need0 * (_G * o1 + _G2 * m1):
                    best = self._better(best, m, o, True)
                if peak >= need1 * (_G * m0 + _G2 * o0):
                    best = self._better(best, o, m, False)
            elif k_mirror > p * _ABOVE:  # (m, o, token1 in), then (o, m, token0 in)
                root = sqrt(k_mirror)
                gap = root - sqrt(p) + _SLACK * root
                peak = gap * gap * _ABOVE
                if peak >= need1 * (_G * o0 + _G2 * m0):
                    best = self._better(best, m, o, False)
                if peak >= need0 * (_G * m1 + _G2 * o1):
                    best = self._better(best, o, m, True)
            elif not (k < q * _BELOW and k_mirror < p * _BELOW):
                for buy, sell, zero_in in _cycles(m, o):
                    if self._can_pay(buy, sell, zero_in):
                        best = self._better(best, buy, sell, zero_in)
        return best

    def _better(
        self, best: _Candidate | None, a: _PoolState, b: _PoolState, zero_in: bool
    ) -> _Candidate | None:
        """``best``, or the cycle (a, b, zero_in) if it pays more (the first of equals wins)."""
        found = self._price(a, b, zero_in)
        if found is not None and (best is None or found.value_usd_e6 > best.value_usd_e6):
            return found
        return best

    def _can_pay(self, a: _PoolState, b: _PoolState, zero_in: bool) -> bool:
        """The cycle's :func:`_profit_bound` reaches its input token's need."""
        if zero_in:
            return _profit_bound(a.float0, a.float1, b.float1, b.float0) >= a.need0
        return _profit_bound(a.float1, a.float0, b.float0, b.float1) >= a.need1

    def _price(self, a: _PoolState, b: _PoolState, zero_in: bool) -> _Candidate | None:
        """Size the cycle exactly (:func:`bandit.arbitrage.size_cycle`) and value it."""
        if zero_in:
            token_in, token_mid = a.token0, a.token1
            reserves = (a.reserve0, a.reserve1, b.reserve1, b.reserve0)
        else:
            token_in, token_mid = a.token1, a.token0
            reserves = (a.reserve1, a.reserve0, b.reserve0, b.reserve1)
        pricing = self.pricing[token_in]
        gas = pricing.gas_cost
        sized = size_cycle(*reserves, max_input=pricing.max_input, gas_cost=gas,
                           min_profit=pricing.min_profit)
        if sized is None:
            return None
        value = pricing.usd_e6(sized[2] - sized[0] - gas)  # Opportunity.profit
        return _Candidate(a.address, b.address, token_in, token_mid, reserves, sized, gas, value)

    def _signal(self, swap: V2Swap, best: _Candidate) -> ArbitrageSignal:
        a_x, a_y, b_y, b_x = best.reserves
        amount_in, amount_mid, amount_out = best.sized
        return ArbitrageSignal(
            opportunity_id=self.signals_emitted,
            source_seq=swap.seq,
            timestamp_ns=swap.timestamp_ns,
            deadline_block=swap.block_number + self.config.deadline_blocks,
            buy_pool=best.buy_pool,
            sell_pool=best.sell_pool,
            token_in=best.token_in,
            token_mid=best.token_mid,
            amount_in=amount_in,
            expected_mid=amount_mid,
            expected_out=amount_out,
            gas_cost=best.gas_cost,
            buy_reserve_in=a_x,
            buy_reserve_out=a_y,
            sell_reserve_in=b_y,
            sell_reserve_out=b_x,
        )


def _cycles(m: _PoolState, o: _PoolState) -> tuple[tuple[_PoolState, _PoolState, bool], ...]:
    """The cycles through pools ``m`` (moved) and ``o`` that bandit.arbitrage.is_profitable
    passes, as (buy, sell, token0 in?), on the integer reserves.

    Of the four cycles, (m, o, True) and (o, m, False) both reduce to g²·m.r1·o.r0 > m.r0·o.r1,
    the other two to the mirror test; g² < 1, so at most one test holds. A cycle that fails it
    is never sized (optimal_input is 0), so skipping it changes nothing but the time: 12
    evaluations per swap became 0 or 2. :meth:`ArbitrageDetector._best` makes the same tests
    on the float reserves where they clear the margin ``_SLACK`` (float products are off by a
    few 1e-16 at most) and calls this only in the sliver where they do not.
    """
    p, q = m.reserve1 * o.reserve0, m.reserve0 * o.reserve1
    if _GAMMA2 * p > _ONE2 * q:
        return ((m, o, True), (o, m, False))
    if _GAMMA2 * q > _ONE2 * p:
        return ((m, o, False), (o, m, True))
    return ()


def _profit_bound(a_x: float, a_y: float, b_y: float, b_x: float) -> float:
    """More than ``out - x`` of any sizing of the cycle, from its reserves as floats.

    With g = 0.997 the round trip's real-valued curve is out(x) = K·x / (L + M·x), where
    K = g²·a_y·b_x, L = a_x·b_y and M = g·b_y + g²·a_y, and out(x) - x peaks at (√K - √L)² / M
    (at x*). The pair contract's floor divisions only return less and the ``max_input`` cap
    only moves x off the peak, so when this bound is below ``min_profit + gas_cost``,
    :func:`bandit.arbitrage.evaluate` returns None, and the detector skips its integer square
    root and divisions (issue 16: 92 % of the bundled feed's sized cycles; the exact path still
    decides every cycle that remains). Only called for a cycle that passed the exact
    profitability test (K > L, so M > 0). The margin ``_SLACK·√K`` keeps the bound above the
    true peak whatever the float roundings.
    """
    root_k = sqrt(_G2 * a_y * b_x)
    gap = root_k - sqrt(a_x * b_y) + _SLACK * root_k
    return gap * gap / (_G * b_y + _G2 * a_y) * (1.0 + _SLACK)
