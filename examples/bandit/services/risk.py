"""RiskManager: position and exposure limits, and a drawdown halt that blocks execution."""

from __future__ import annotations

from dataclasses import dataclass

from bandit.arbitrage import paper_fill
from bandit.protocol import ArbitrageSignal, OrderRequest, RejectReason
from bandit.tokens import token_by_address, usd_e6
from mycelium_mono import MessageHandler

I64_MAX = 2**63 - 1

__all__ = ["RiskConfig", "RiskManager", "RiskState", "expected_fill"]


@dataclass(frozen=True)
class RiskConfig:
    """Limits in micro-USD at the reference prices.

    ``halt_cooldown_ns`` (feed time, never wall-clock) lifts a halt automatically; 0 means a
    halt lasts until :meth:`RiskManager.reset_halt` is called.

    ``max_order_pnl_usd_e6`` refuses an order whose paper fill gains or loses more: a cycle
    worth more than a whole position is a broken pool or price, not an opportunity. It also
    keeps every PnL the trail records inside ``OrderExecution.pnl_usd_e6`` (an I64), so a feed
    that absurd gives the same audited decisions in every mode instead of a failed handler.
    """

    max_position_usd_e6: int = 25_000_000_000
    max_exposure_usd_e6: int = 60_000_000_000
    max_drawdown_usd_e6: int = 150_000_000
    halt_cooldown_ns: int = 600_000_000_000
    max_order_pnl_usd_e6: int = 25_000_000_000

    def __post_init__(self) -> None:
        if not 0 <= self.max_order_pnl_usd_e6 <= I64_MAX:
            raise ValueError(
                f"risk.max_order_pnl_usd_e6 must be in 0..{I64_MAX} (an order's PnL is recorded "
                f"as an I64), got {self.max_order_pnl_usd_e6}"
            )


@dataclass(frozen=True)
class RiskState:
    """A snapshot of everything the risk manager decides on."""

    halted: bool
    halts: int
    approved: int
    rejected: dict[str, int]
    pnl_usd_e6: int
    peak_pnl_usd_e6: int
    inventory: dict[bytes, int]

    @property
    def drawdown_usd_e6(self) -> int:
        return self.peak_pnl_usd_e6 - self.pnl_usd_e6


def expected_fill(sig: ArbitrageSignal | OrderRequest) -> int:
    """X received for the order on its snapshot, transfer taxes included (the paper fill)."""
    return paper_fill(
        sig.amount_in,
        sig.buy_reserve_in,
        sig.buy_reserve_out,
        sig.sell_reserve_in,
        sig.sell_reserve_out,
        tax_x_bps=token_by_address(sig.token_in).transfer_tax_bps,
        tax_y_bps=token_by_address(sig.token_mid).transfer_tax_bps,
    )


class RiskManager(MessageHandler[ArbitrageSignal]):
    """Decides on every signal and emits one :class:`OrderRequest` per signal.

    PnL and inventory are updated at decision time from the deterministic paper fill (the same
    function the execution service fills with), so no service reads another's state and the
    decisions are the same in every deployment. Profitability is the detector's job: risk only
    enforces limits, and halts when losses it did not foresee (tax tokens) pile up.
    """

    def __init__(self, config: RiskConfig | None = None) -> None:
        self.config = config or RiskConfig()
        self.halted = False
        self.halted_at_ns = 0
        self.halts = 0
        self.approved = 0
        self.rejected = {r.name: 0 for r in RejectReason if r is not RejectReason.NONE}
        self.pnl_usd_e6 = 0
        self.peak_pnl_usd_e6 = 0
        self.inventory: dict[bytes, int] = {}

    def state(self) -> RiskState:
        """An immutable snapshot for inspection (tests, summary, metrics)."""
        return RiskState(self.halted, self.halts, self.approved, dict(self.rejected),
                         self.pnl_usd_e6, self.peak_pnl_usd_e6, dict(self.inventory))

    def reset_halt(self) -> None:
        """Lift a drawdown halt; the drawdown is measured from the current PnL from now on."""
        self.halted = False
        self.peak_pnl_usd_e6 = self.pnl_usd_e6

    def handle(self, sig: ArbitrageSignal) -> None:
        cooldown = self.config.halt_cooldown_ns
        if self.halted and cooldown and sig.timestamp_ns - self.halted_at_ns >= cooldown:
            self.reset_halt()
        reason = self.check(sig)
        if reason is RejectReason.NONE:
            # The paper fill is priced once, here and not in check(): the limits above cost
            # two multiplications, the fill a few dozen big-int operations.
            pnl = expected_fill(sig) - sig.amount_in - sig.gas_cost
            pnl_usd = usd_e6(sig.token_in, pnl)
            if abs(pnl_usd) > self.config.max_order_pnl_usd_e6:
                reason = RejectReason.IMPLAUSIBLE
        if reason is RejectReason.NONE:
            self.approved += 1
            self._book(sig, pnl, pnl_usd)
        else:
            self.rejected[reason.name] += 1
        self.emit(self._request(sig, reason))

    def check(self, sig: ArbitrageSignal) -> RejectReason:
        """Why ``sig`` may not trade now, or ``RejectReason.NONE``."""
        if self.halted:
            return RejectReason.HALTED
        order_usd = usd_e6(sig.token_in, sig.amount_in)
        if order_usd > self.config.max_position_usd_e6:
            return RejectReason.POSITION_LIMIT
        held_usd = abs(usd_e6(sig.token_in, self.inventory.get(sig.token_in, 0)))
        if held_usd + order_usd > self.config.max_exposure_usd_e6:
            return RejectReason.EXPOSURE_LIMIT
        return RejectReason.NONE

    def _book(self, sig: ArbitrageSignal, pnl: int, pnl_usd: int) -> None:
        self.inventory[sig.token_in] = self.inventory.get(sig.token_in, 0) + pnl
        self.pnl_usd_e6 += pnl_usd
        self.peak_pnl_usd_e6 = max(self.peak_pnl_usd_e6, self.pnl_usd_e6)
        if self.peak_pnl_usd_e6 - self.pnl_usd_e6 > self.config.max_drawdown_usd_e6:
            self.halted = True
            self.halted_at_ns = sig.timestamp_ns
            self.halts += 1

    def _request(self, sig: ArbitrageSignal, reason: RejectReason) -> OrderRequest:
        return OrderRequest(
            order_id=sig.opportunity_id,
            source_seq=sig.source_seq,
            timestamp_ns=sig.timestamp_ns,
            approved=reason is RejectReason.NONE,
            reason=int(reason),
            buy_pool=sig.buy_pool,
            sell_pool=sig.sell_pool,
            token_in=sig.token_in,
            token_mid=sig.token_mid,
            amount_in=sig.amount_in,
            gas_cost=sig.gas_cost,
            buy_reserve_in=sig.buy_reserve_in,
            buy_reserve_out=sig.buy_reserve_out,
            sell_reserve_in=sig.sell_reserve_in,
            sell_reserve_out=sig.sell_reserve_out,
        )
