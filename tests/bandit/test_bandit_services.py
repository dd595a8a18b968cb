"""Detector, risk and execution services on hand-built inputs."""

from __future__ import annotations

from bandit.arbitrage import optimal_input
from bandit.protocol import (
    ArbitrageSignal,
    OrderExecution,
    OrderRequest,
    OrderStatus,
    RejectReason,
    V2Swap,
)
from bandit.services import (
    ArbitrageDetector,
    DetectorConfig,
    ExecutionService,
    RiskConfig,
    RiskManager,
)
from bandit.tokens import TOKENS

from mycelium_mono.handlers import attach_emitter

WETH = next(t for t in TOKENS if t.symbol == "WETH")
USDC = next(t for t in TOKENS if t.symbol == "USDC")
FOT = next(t for t in TOKENS if t.symbol == "FOT")
E = 10**18


def swap(
    pool: int,
    r0: int,
    r1: int,
    seq: int,
    token0: bytes = WETH.address,
    token1: bytes = USDC.address,
) -> V2Swap:
    return V2Swap(
        pool_address=bytes([pool]) * 20,
        token0=token0,
        token1=token1,
        amount_in=1,
        amount_out=1,
        zero_for_one=True,
        reserve0=r0,
        reserve1=r1,
        timestamp_ns=1_000 + seq,
        block_number=7,
        seq=seq,
    )


def collect(handler: object) -> list[object]:
    out: list[object] = []
    attach_emitter(handler, out.append)
    return out


def test_detector_compares_the_moved_pool_with_every_other_pool() -> None:
    det = ArbitrageDetector()
    signals = collect(det)
    # Three pools at 2000 USDC/WETH; then the third moves to 2100: only it is mispriced.
    for i in range(3):
        det.handle(swap(i, 1000 * E, 2_000_000 * 10**6, seq=i))
    assert signals == []
    det.handle(swap(2, 1000 * E, 2_100_000 * 10**6, seq=3))
    [sig] = signals
    assert isinstance(sig, ArbitrageSignal)
    assert sig.source_seq == 3 and sig.deadline_block == 7 + DetectorConfig().deadline_blocks
    assert bytes([2]) * 20 in (sig.buy_pool, sig.sell_pool)
    assert sig.expected_out > sig.amount_in + sig.gas_cost


def test_detector_sizes_the_worked_case_at_x_star() -> None:
    det = ArbitrageDetector(
        DetectorConfig(max_input_usd_e6=10**18, gas_cost_usd_e6=0, min_profit_usd_e6=0)
    )
    signals = collect(det)
    # A = 1000 X / 2100 Y and B = 1000 X / 2000 Y (WETH is X, USDC is Y; scaled).
    det.handle(swap(1, 1000 * E, 2000 * 10**6, seq=0))
    det.handle(swap(2, 1000 * E, 2100 * 10**6, seq=1))
    [sig] = signals
    assert isinstance(sig, ArbitrageSignal)
    # Either direction earns; the detector keeps the most valuable in USD.
    assert sig.amount_in == optimal_input(
        sig.buy_reserve_in, sig.buy_reserve_out, sig.sell_reserve_in, sig.sell_reserve_out
    )


MID = (2_100_000 * 10**6, 2_000_000 * 10**6)


def signal(
    oid: int,
    amount_in: int,
    *,
    ts: int = 0,
    token_mid: bytes = USDC.address,
    mid_reserves: tuple[int, int] = MID,
) -> ArbitrageSignal:
    return ArbitrageSignal(
        opportunity_id=oid,
        source_seq=oid,
        timestamp_ns=ts,
        deadline_block=9,
        buy_pool=b"\x01" * 20,
        sell_pool=b"\x02" * 20,
        token_in=WETH.address,
        token_mid=token_mid,
        amount_in=amount_in,
        expected_mid=0,
        expected_out=0,
        gas_cost=0,
        buy_reserve_in=1000 * E,
        buy_reserve_out=mid_reserves[0],
        sell_reserve_in=mid_reserves[1],
        sell_reserve_out=1000 * E,
    )


def test_risk_rejects_orders_over_the_position_limit() -> None:
    risk = RiskManager(RiskConfig(max_position_usd_e6=10_000 * 10**6))
    requests = collect(risk)
    risk.handle(signal(1, 6 * E))  # 6 WETH = 12 000 USD
    [req] = requests
    assert isinstance(req, OrderRequest)
    assert not req.approved and req.reason == RejectReason.POSITION_LIMIT
    assert risk.state().rejected["POSITION_LIMIT"] == 1


def test_risk_books_paper_fill_pnl_and_inventory_per_token() -> None:
    risk = RiskManager()
    collect(risk)
    risk.handle(signal(1, 10 * E))
    state = risk.state()
    assert state.approved == 1 and state.pnl_usd_e6 > 0
    assert state.inventory[WETH.address] > 0


def test_drawdown_halt_blocks_execution_until_reset() -> None:
    risk = RiskManager(RiskConfig(max_drawdown_usd_e6=10 * 10**6, halt_cooldown_ns=0))
    requests = collect(risk)
    # Equal prices plus a fee-on-transfer middle token: a loss of fees and tax, ~500 USD.
    losing = signal(1, 10 * E, token_mid=FOT.address, mid_reserves=(2000 * E, 2000 * E))
    risk.handle(losing)
    assert risk.state().halted and risk.state().halts == 1
    risk.handle(signal(2, 10 * E, ts=10**15))
    assert [r.approved for r in requests] == [True, False]  # type: ignore[attr-defined]
    assert requests[1].reason == RejectReason.HALTED  # type: ignore[attr-defined]
    risk.reset_halt()
    risk.handle(signal(3, 10 * E))
    assert requests[2].approved  # type: ignore[attr-defined]
    assert risk.state().drawdown_usd_e6 == 0


def test_halt_lifts_after_cooldown_in_feed_time() -> None:
    risk = RiskManager(RiskConfig(max_drawdown_usd_e6=10 * 10**6, halt_cooldown_ns=1_000))
    requests = collect(risk)
    risk.handle(signal(1, 10 * E, ts=0, token_mid=FOT.address, mid_reserves=(2000 * E, 2000 * E)))
    risk.handle(signal(2, 10 * E, ts=999))
    risk.handle(signal(3, 10 * E, ts=1_000))
    assert [r.approved for r in requests] == [True, False, True]  # type: ignore[attr-defined]


def test_execution_fills_approved_and_passes_rejections_through() -> None:
    risk, ex = RiskManager(RiskConfig(max_position_usd_e6=30_000 * 10**6)), ExecutionService()
    attach_emitter(risk, ex.handle)
    executions = collect(ex)
    risk.handle(signal(1, 10 * E))
    risk.handle(signal(2, 20 * E))
    filled, rejected = executions
    assert isinstance(filled, OrderExecution) and isinstance(rejected, OrderExecution)
    assert filled.status == OrderStatus.FILLED and filled.pnl_usd_e6 == risk.state().pnl_usd_e6
    assert rejected.status == OrderStatus.REJECTED and rejected.amount_out == 0
