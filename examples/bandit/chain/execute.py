"""Atomic arbitrage on chain: both legs in one ``BanditArb.arbitrage`` transaction.

The contract reverts unless at least ``min_amount_out`` comes back, so a cycle that moved
since it was priced costs only gas, never a half-done position. The executor submits the
transaction, mines it (the chain runs with automine off) and reads the receipt: the realized
output is the second leg's ``Swap`` log.

The receipt also says which pool states existed only inside the transaction: after every
``Sync`` but the last, a pool has moved that the next leg has not (the second pool, after the
first leg). They are kept in :attr:`ChainExecutor.mid_states`, and the state after the last
leg in :attr:`ChainExecutor.end_states`, for the live detector: it prices our transaction's
pools once the whole transaction is applied, never in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from bandit.chain.abi import hex_address
from bandit.chain.contracts import bandit_contract
from bandit.chain.deploy import GAS_PRICE_WEI, Sender
from bandit.chain.rpc import Call, RpcClient, RpcError
from bandit.ethrpc import SWAP_TOPIC, SYNC_TOPIC, SwapEvent, SyncEvent, decode_log

__all__ = ["ARB_GAS", "ChainExecutor", "ChainFill", "MidState"]

# A pool state by (pool, block, reserve0, reserve1): what a live V2Swap after that Sync carries.
MidState = tuple[bytes, int, int, int]

# Equal limit for every arbitrage, a margin over the ~125-215k gas one uses (measured).
ARB_GAS = 400_000
_MINE = Call("evm_mine")


@dataclass(frozen=True)
class ChainFill:
    """A mined arbitrage: ``amount_out`` is 0 when it reverted (``ok`` False)."""

    ok: bool
    tx_hash: int
    block_number: int
    gas_used: int
    gas_price: int
    amount_out: int


class ChainExecutor:
    """Submits arbitrages from the trader account and waits for each receipt."""

    def __init__(self, rpc_url: str, trader: bytes, arb: bytes, *,
                 gas_price: int = GAS_PRICE_WEI) -> None:
        self.rpc = RpcClient(rpc_url)
        self.arb = arb
        self.sender = Sender(self.rpc, trader, gas=ARB_GAS, gas_price=gas_price)
        self.fills = 0
        self.reverts = 0
        # States our own filled arbitrages passed through mid-transaction / ended in, that
        # the feed has not brought back yet.
        self.mid_states: set[MidState] = set()
        self.end_states: set[MidState] = set()

    def would_succeed(self, buy_pool: bytes, sell_pool: bytes, token_in: bytes, amount_in: int,
                      min_amount_out: int) -> bool:
        """``eth_call`` of the arbitrage on the latest state: does it return, or revert?"""
        data = self._data(buy_pool, sell_pool, token_in, amount_in, min_amount_out)
        try:
            self.rpc.call("eth_call", {"from": hex_address(self.sender.account),
                                       "to": hex_address(self.arb), "data": data}, "latest")
        except RpcError:
            return False
        return True

    def execute(self, buy_pool: bytes, sell_pool: bytes, token_in: bytes, amount_in: int,
                min_amount_out: int) -> ChainFill:
        """Submit, mine, and read the receipt of one arbitrage."""
        data = self._data(buy_pool, sell_pool, token_in, amount_in, min_amount_out)
        tx_hash = self.rpc.batch([self.sender.tx(self.arb, data), _MINE])[0]
        receipt = self.rpc.receipt(tx_hash)
        ok = receipt.get("status") == "0x1"
        out = _second_leg_out(receipt, sell_pool) if ok else 0
        if ok:
            self.fills += 1
            *mid, end = _sync_states(receipt)
            self.mid_states.update(mid)
            self.end_states.add(end)
        else:
            self.reverts += 1
        return ChainFill(ok, int(tx_hash, 16), int(receipt["blockNumber"], 16),
                         int(receipt["gasUsed"], 16), int(receipt["effectiveGasPrice"], 16), out)

    @staticmethod
    def _data(buy_pool: bytes, sell_pool: bytes, token_in: bytes, amount_in: int,
              min_amount_out: int) -> str:
        return bandit_contract("BanditArb").data(
            "arbitrage(address,address,address,uint256,uint256)",
            buy_pool, sell_pool, token_in, amount_in, min_amount_out)

    def estimate_gas(self, buy_pool: bytes, sell_pool: bytes, token_in: bytes,
                     amount_in: int) -> int:
        """Gas of one arbitrage on the current state (``eth_estimateGas``, floor 0)."""
        data = self._data(buy_pool, sell_pool, token_in, amount_in, 0)
        found = self.rpc.call("eth_estimateGas", {"from": hex_address(self.sender.account),
                                                  "to": hex_address(self.arb), "data": data})
        return int(found, 16)

    def close(self) -> None:
        self.rpc.close()


def _second_leg_out(receipt: dict[str, object], sell_pool: bytes) -> int:
    logs = receipt.get("logs")
    assert isinstance(logs, list)
    for entry in reversed(logs):
        if entry["topics"][0] == SWAP_TOPIC and entry["address"] == hex_address(sell_pool):
            event = decode_log(entry)
            assert isinstance(event, SwapEvent)
            return max(event.amount0_out, event.amount1_out)
    raise ValueError(f"receipt {receipt.get('transactionHash')} has no Swap of {sell_pool.hex()}")



def _sync_states(receipt: dict[str, object]) -> list[MidState]:
    """The state after every ``Sync`` of the transaction, in log order."""
    logs = receipt.get("logs")
    assert isinstance(logs, list)
    syncs = [decode_log(e) for e in logs if e["topics"][0] == SYNC_TOPIC]
    return [(s.pool, s.block_number, s.reserve0, s.reserve1) for s in syncs
            if isinstance(s, SyncEvent)]
