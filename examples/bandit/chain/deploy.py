"""Deploy the bundled market on a node: 8 tokens, the real V2 factory and pairs, liquidity.

The bundled feed has 3-5 pools per token pair; one ``UniswapV2Factory`` makes one pair per
token pair, so the j-th pool of every token pair comes from the j-th factory. Each pair opens
with the feed's opening reserves (transfer both tokens, ``mint``), so the chain starts in the
very state the replay starts in. Every transaction has an explicit nonce and the same gas
limit; each phase is one ``evm_mine``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bandit.chain.abi import decode_address, hex_address
from bandit.chain.contracts import bandit_contract, uniswap_contract
from bandit.chain.rpc import Call, RpcClient, TxFailed
from bandit.feed import Feed
from bandit.tokens import TOKENS

__all__ = ["GAS_PRICE_WEI", "Deployment", "PairInfo", "Sender", "deploy_market"]

GAS_PRICE_WEI = 30 * 10**9  # 30 gwei; the node's base fee is 0, so this is what gas costs
SETUP_GAS = 8_000_000
TOKEN_SUPPLY = 10**30
TRADER_FUNDS = 10**28
MAX_UINT = 2**256 - 1


@dataclass(frozen=True)
class PairInfo:
    """A deployed pair and how it maps onto the feed's pool (``flipped``: the chain's token0
    is the feed's token1, because the pair orders its tokens by the deployed addresses)."""

    address: bytes
    token0: bytes
    token1: bytes
    flipped: bool


@dataclass(frozen=True)
class Deployment:
    """Where everything is; ``tokens`` in ``bandit.tokens.TOKENS`` order, ``pairs`` in the
    feed's pool order."""

    market: bytes
    trader: bytes
    tokens: tuple[bytes, ...]
    factories: tuple[bytes, ...]
    pairs: tuple[PairInfo, ...]
    arb: bytes


class Sender:
    """Transactions from one unlocked node account, nonces counted here (never 'pending')."""

    def __init__(self, rpc: RpcClient, account: bytes, *, gas: int = SETUP_GAS,
                 gas_price: int = GAS_PRICE_WEI) -> None:
        self.rpc, self.account, self.gas, self.gas_price = rpc, account, gas, gas_price
        self.nonce = int(rpc.call("eth_getTransactionCount", hex_address(account), "latest"), 16)

    def tx(self, to: bytes | None, data: str) -> Call:
        """The ``eth_sendTransaction`` call of the next nonce."""
        tx: dict[str, Any] = {"from": hex_address(self.account), "data": data,
                              "gas": hex(self.gas), "gasPrice": hex(self.gas_price),
                              "nonce": hex(self.nonce)}
        if to is not None:
            tx["to"] = hex_address(to)
        self.nonce += 1
        return Call("eth_sendTransaction", (tx,))


def mine_all(rpc: RpcClient, calls: Sequence[Call], what: str) -> list[dict[str, Any]]:
    """Send ``calls``, mine one block, and return their receipts (all must have succeeded)."""
    hashes = rpc.batch(calls)
    rpc.call("evm_mine")
    receipts = rpc.batch([Call("eth_getTransactionReceipt", (h,)) for h in hashes])
    for receipt in receipts:
        if receipt is None or receipt.get("status") != "0x1":
            raise TxFailed(f"{what}: a transaction failed or was not mined: {receipt!r:.300}\n"
                           "help: run the node with --gas-limit large enough for one phase",
                           receipt or {})
    return [dict(r) for r in receipts]


def _address(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text[2:])


def _deploy_contracts(rpc: RpcClient, market: Sender, factories: int) -> list[bytes]:
    token, factory, arb = (bandit_contract("BanditToken"), uniswap_contract("UniswapV2Factory"),
                           bandit_contract("BanditArb"))
    calls = [market.tx(None, token.creation(t.symbol, t.decimals, TOKEN_SUPPLY)) for t in TOKENS]
    calls += [market.tx(None, factory.creation(market.account)) for _ in range(factories)]
    calls.append(market.tx(None, arb.creation()))
    return [_address(r["contractAddress"]) for r in mine_all(rpc, calls, "deploy contracts")]


def _factory_slots(feed: Feed) -> list[int]:
    """For each feed pool: which factory makes it (its rank among its token pair's pools)."""
    seen: dict[tuple[int, int], int] = {}
    slots = []
    for pool in feed.pools:
        key = (pool.token0, pool.token1)
        slots.append(seen.get(key, 0))
        seen[key] = slots[-1] + 1
    return slots


def _create_pairs(rpc: RpcClient, market: Sender, feed: Feed, tokens: Sequence[bytes],
                  factories: Sequence[bytes]) -> list[PairInfo]:
    factory = uniswap_contract("UniswapV2Factory")
    slots = _factory_slots(feed)
    wanted = [(factories[s], tokens[p.token0], tokens[p.token1])
              for s, p in zip(slots, feed.pools, strict=True)]
    mine_all(rpc, [market.tx(f, factory.data("createPair(address,address)", a, b))
                   for f, a, b in wanted], "create pairs")
    found = rpc.batch([Call("eth_call", ({"to": hex_address(f), "data": factory.data(
        "getPair(address,address)", a, b)}, "latest")) for f, a, b in wanted])
    pairs = []
    for (_, a, b), result in zip(wanted, found, strict=True):
        token0, token1 = sorted((a, b))  # UniswapV2Factory.createPair sorts by address
        pairs.append(PairInfo(decode_address(result, "getPair"), token0, token1, token0 != a))
    return pairs


def _liquidity(market: Sender, feed: Feed, tokens: Sequence[bytes],
               pairs: Sequence[PairInfo]) -> list[Call]:
    token, pair_c = bandit_contract("BanditToken"), uniswap_contract("UniswapV2Pair")
    calls = []
    for opening, pair in zip(feed.pools, pairs, strict=True):
        sides = ((opening.token0, opening.reserve0), (opening.token1, opening.reserve1))
        for index, amount in sides:
            calls.append(market.tx(tokens[index], token.data("transfer(address,uint256)",
                                                             pair.address, amount)))
        calls.append(market.tx(pair.address, pair_c.data("mint(address)", market.account)))
    return calls


def _funding(market: Sender, trader: Sender, tokens: Sequence[bytes], arb: bytes) -> list[Call]:
    token = bandit_contract("BanditToken")
    calls = [market.tx(t, token.data("transfer(address,uint256)", trader.account, TRADER_FUNDS))
             for t in tokens]
    for sender in (market, trader):
        calls += [sender.tx(t, token.data("approve(address,uint256)", arb, MAX_UINT))
                  for t in tokens]
    return calls


def deploy_market(rpc: RpcClient, feed: Feed) -> Deployment:
    """Deploy tokens, factories, pairs at the feed's opening reserves, and fund the trader."""
    accounts = [_address(a) for a in rpc.call("eth_accounts")]
    if len(accounts) < 2:
        raise RuntimeError("the node has fewer than 2 unlocked accounts\n"
                           "help: Bandit needs a market maker and a trader account (anvil -a 2)")
    market, trader = Sender(rpc, accounts[0]), Sender(rpc, accounts[1])
    n_factories = max(_factory_slots(feed)) + 1
    created = _deploy_contracts(rpc, market, n_factories)
    tokens = tuple(created[: len(TOKENS)])
    factories = tuple(created[len(TOKENS) : len(TOKENS) + n_factories])
    arb = created[-1]
    pairs = _create_pairs(rpc, market, feed, tokens, factories)
    mine_all(rpc, _liquidity(market, feed, tokens, pairs) + _funding(market, trader, tokens, arb),
             "add liquidity and fund the trader")
    return Deployment(market.account, trader.account, tokens, factories, tuple(pairs), arb)
