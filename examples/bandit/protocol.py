"""Bandit's messages: the fixed binary layouts every mode and every process shares.

The pipeline is one linear chain, so every service sees its input in one well-defined order
in every deployment (see ``bandit.routing``)::

    V2Swap -> ArbitrageDetector -> ArbitrageSignal -> RiskManager -> OrderRequest
           -> ExecutionService -> OrderExecution -> AuditLogger, DatabaseLogger, MetricsCollector

Token amounts are ``U256`` (Python ints, 32 bytes on the wire), as on chain. No field holds
wall-clock time: timestamps come from the feed, so logs are identical across runs and modes.
"""

from __future__ import annotations

from enum import IntEnum

from mycelium_mono import I64, U8, U64, U256, Address, Bool, Message, message

__all__ = [
    "ArbitrageSignal",
    "OrderExecution",
    "OrderRequest",
    "OrderStatus",
    "RejectReason",
    "V2Swap",
]


@message(type_id=19, topic="market_data")
class V2Swap(Message):
    """One Uniswap-V2 swap, with the pool's reserves right after it.

    The seed design's ``V2Swap`` carried only pool, tokens, amounts and a timestamp. From that
    nothing can detect an opportunity: an arbitrage is a price gap between two pools, and a
    pool's price is its reserve ratio, which neither amount reveals (nor does it say which token
    went in). So this layout adds the post-swap reserves (what a V2 ``Sync`` event carries) and
    the direction (which of ``amount0In``/``amount1In`` of the ``Swap`` event was non-zero).
    """

    pool_address: Address
    token0: Address
    token1: Address
    amount_in: U256
    amount_out: U256
    # True: token0 went into the pool and token1 came out.
    zero_for_one: Bool
    reserve0: U256
    reserve1: U256
    timestamp_ns: U64
    block_number: U64
    # Position in the feed (replay) or a per-connection counter (live): the order key.
    seq: U64


@message(type_id=20, topic="arbitrage")
class ArbitrageSignal(Message):
    """A profitable two-pool cycle: ``token_in`` into ``buy_pool``, the other token back out
    of ``sell_pool``. Carries the reserves it was priced on, so downstream services simulate
    against exactly the same snapshot in every process."""

    opportunity_id: U64
    source_seq: U64
    timestamp_ns: U64
    deadline_block: U64
    buy_pool: Address
    sell_pool: Address
    token_in: Address
    token_mid: Address
    amount_in: U256
    expected_mid: U256
    expected_out: U256
    gas_cost: U256
    # buy_pool reserves (in, mid) and sell_pool reserves (mid, in) at detection time.
    buy_reserve_in: U256
    buy_reserve_out: U256
    sell_reserve_in: U256
    sell_reserve_out: U256


class RejectReason(IntEnum):
    """Why the risk manager did not approve an order (0 = approved)."""

    NONE = 0
    POSITION_LIMIT = 1
    EXPOSURE_LIMIT = 2
    HALTED = 3
    # Live mode: simulating the on-chain transaction first showed the cycle is gone (the
    # signal was priced between two legs of one transaction, or the pools moved since).
    STALE = 4
    # The paper fill gains or loses more than ``risk.max_order_pnl_usd_e6``: a broken pool or price.
    IMPLAUSIBLE = 5


@message(type_id=21, topic="orders")
class OrderRequest(Message):
    """The risk manager's decision on one signal, with the signal's snapshot attached."""

    order_id: U64
    source_seq: U64
    timestamp_ns: U64
    approved: Bool
    reason: U8
    buy_pool: Address
    sell_pool: Address
    token_in: Address
    token_mid: Address
    amount_in: U256
    gas_cost: U256
    buy_reserve_in: U256
    buy_reserve_out: U256
    sell_reserve_in: U256
    sell_reserve_out: U256


class OrderStatus(IntEnum):
    """What happened to an order."""

    FILLED = 1
    REJECTED = 2


@message(type_id=22, topic="executions")
class OrderExecution(Message):
    """A paper fill (or a rejection passed through), as the audit trail records it."""

    order_id: U64
    source_seq: U64
    timestamp_ns: U64
    status: U8
    reason: U8
    buy_pool: Address
    sell_pool: Address
    token_in: Address
    amount_in: U256
    amount_out: U256
    gas_cost: U256
    # Net result in micro-USD at the reference price (negative on a loss).
    pnl_usd_e6: I64
    # On-chain fills (live mode): the transaction, its gas used and the gas price in wei.
    # Paper fills and rejections carry zeros.
    tx_hash: U256
    gas_used: U64
    gas_price: U256
