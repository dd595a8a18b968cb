"""ArbitrageDetector: keeps every pool's reserves from the swap stream and prices cycles."""

from __future__ import annotations

from dataclasses import dataclass

from bandit.arbitrage import Opportunity, evaluate
from bandit.protocol import ArbitrageSignal, V2Swap
from bandit.tokens import token_amount, usd_e6
from mycelium_mono import MessageHandler

__all__ = ["ArbitrageDetector", "DetectorConfig"]


@dataclass(frozen=True)
class DetectorConfig:
    """Sizing and profitability thresholds, in micro-USD at the reference prices."""

    max_input_usd_e6: int = 50_000_000_000
    gas_cost_usd_e6: int = 500_000
    min_profit_usd_e6: int = 5_000_000
    deadline_blocks: int = 2


@dataclass
class _PoolState:
    token0: bytes
    token1: bytes
    reserve0: int
    reserve1: int


@dataclass(frozen=True)
class _Candidate:
    buy_pool: bytes
    sell_pool: bytes
    token_in: bytes
    token_mid: bytes
    reserves: tuple[int, int, int, int]  # a_x, a_y, b_y, b_x
    found: Opportunity
    value_usd_e6: int


class ArbitrageDetector(MessageHandler[V2Swap]):
    """On every swap, compare the pool that moved with every other pool of its pair.

    At most one signal per swap (the most valuable cycle): one input, at most one output, keeps
    the chain linear, which is what makes downstream order identical in every mode.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.pools: dict[bytes, _PoolState] = {}
        self.pairs: dict[tuple[bytes, bytes], list[bytes]] = {}
        self.swaps_seen = 0
        self.signals_emitted = 0

    def handle(self, swap: V2Swap) -> None:
        self.swaps_seen += 1
        self._update(swap)
        best = self.best_cycle(swap.pool_address)
        if best is not None:
            self.signals_emitted += 1
            self.emit(self._signal(swap, best))

    def _update(self, swap: V2Swap) -> None:
        state = self.pools.get(swap.pool_address)
        if state is None:
            self.pools[swap.pool_address] = _PoolState(
                swap.token0, swap.token1, swap.reserve0, swap.reserve1
            )
            self.pairs.setdefault((swap.token0, swap.token1), []).append(swap.pool_address)
        else:
            state.reserve0, state.reserve1 = swap.reserve0, swap.reserve1

    def best_cycle(self, moved: bytes) -> _Candidate | None:
        """The most valuable profitable cycle between ``moved`` and any other pool of its pair.

        Every other pool, in both directions and with either token as the input: the pool that
        just moved is the one whose price changed, so it is never skipped.
        """
        state = self.pools[moved]
        best: _Candidate | None = None
        for other in self.pairs[(state.token0, state.token1)]:
            if other == moved:
                continue
            for buy, sell in ((moved, other), (other, moved)):
                for zero_in in (True, False):
                    found = self._price(buy, sell, zero_in)
                    better = best is None or (found and found.value_usd_e6 > best.value_usd_e6)
                    if found is not None and better:
                        best = found
        return best

    def _price(self, buy: bytes, sell: bytes, zero_in: bool) -> _Candidate | None:
        a, b = self.pools[buy], self.pools[sell]
        if zero_in:
            token_in, token_mid = a.token0, a.token1
            reserves = (a.reserve0, a.reserve1, b.reserve1, b.reserve0)
        else:
            token_in, token_mid = a.token1, a.token0
            reserves = (a.reserve1, a.reserve0, b.reserve0, b.reserve1)
        cfg = self.config
        found = evaluate(
            *reserves,
            max_input=token_amount(token_in, cfg.max_input_usd_e6),
            gas_cost=token_amount(token_in, cfg.gas_cost_usd_e6),
            min_profit=token_amount(token_in, cfg.min_profit_usd_e6),
        )
        if found is None:
            return None
        value = usd_e6(token_in, found.profit)
        return _Candidate(buy, sell, token_in, token_mid, reserves, found, value)

    def _signal(self, swap: V2Swap, best: _Candidate) -> ArbitrageSignal:
        a_x, a_y, b_y, b_x = best.reserves
        return ArbitrageSignal(
            opportunity_id=self.signals_emitted,
            source_seq=swap.seq,
            timestamp_ns=swap.timestamp_ns,
            deadline_block=swap.block_number + self.config.deadline_blocks,
            buy_pool=best.buy_pool,
            sell_pool=best.sell_pool,
            token_in=best.token_in,
            token_mid=best.token_mid,
            amount_in=best.found.amount_in,
            expected_mid=best.found.amount_mid,
            expected_out=best.found.amount_out,
            gas_cost=best.found.gas_cost,
            buy_reserve_in=a_x,
            buy_reserve_out=a_y,
            sell_reserve_in=b_y,
            sell_reserve_out=b_x,
        )
