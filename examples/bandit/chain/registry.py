"""The token registry of live mode: every pool's tokens, symbol and decimals read from chain.

``token0``/``token1`` of each watched pair, then ``symbol``/``decimals`` of each token, by
``eth_call``. Reference prices (micro-USD per whole token, for thresholds and risk limits) come
by symbol from a table given to :func:`read_registry` (``bandit.live.prepare(prices=...)``), by
default from ``bandit.tokens.TOKENS``. A token with no price is left out and counted: the
adapter skips its swaps (``unknown_token_skips``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bandit.chain.abi import SELECTORS, decode_address, decode_string, decode_words, hex_address
from bandit.chain.rpc import Call, RpcClient
from bandit.tokens import TOKENS, Token

__all__ = ["ChainToken", "Registry", "read_registry"]


@dataclass(frozen=True)
class ChainToken(Token):
    """A token at a deployed address (``Token.address`` is a hash of the symbol)."""

    deployed_at: bytes = b""

    @property
    def address(self) -> bytes:
        return self.deployed_at


@dataclass(frozen=True)
class Registry:
    """What the chain says: priced tokens, and the addresses nothing could price."""

    tokens: tuple[ChainToken, ...]
    unpriced: tuple[tuple[bytes, str], ...]


def _eth_calls(rpc: RpcClient, targets: Sequence[bytes], signature: str) -> list[str]:
    data = "0x" + SELECTORS[signature]
    return list(rpc.batch([Call("eth_call", ({"to": hex_address(t), "data": data}, "latest"))
                           for t in targets]))


def read_registry(rpc: RpcClient, pools: Sequence[bytes],
                  prices: Mapping[str, int] | None = None) -> Registry:
    """Tokens of ``pools`` with their on-chain symbol and decimals and a reference price
    (``prices`` by symbol; by default the bundled tokens' reference prices)."""
    table = dict(prices) if prices is not None else {t.symbol: t.price_usd_e6 for t in TOKENS}
    addresses: list[bytes] = []
    for signature in ("token0()", "token1()"):
        for result in _eth_calls(rpc, pools, signature):
            token = decode_address(result, signature)
            if token not in addresses:
                addresses.append(token)
    symbols = [decode_string(r, "symbol()") for r in _eth_calls(rpc, addresses, "symbol()")]
    decimals = [decode_words(r, 1, "decimals()")[0]
                for r in _eth_calls(rpc, addresses, "decimals()")]
    priced, unpriced = [], []
    for address, symbol, places in zip(addresses, symbols, decimals, strict=True):
        if symbol in table:
            priced.append(ChainToken(symbol, places, table[symbol], deployed_at=address))
        else:
            unpriced.append((address, symbol))
    return Registry(tuple(priced), tuple(unpriced))
