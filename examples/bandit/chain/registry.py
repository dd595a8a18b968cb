"""The token registry of live mode: every pool's tokens, symbol and decimals read from chain.

``token0``/``token1`` of each watched pair, then ``symbol``/``decimals`` of each token, by
``eth_call``. Reference prices (micro-USD per whole token, for thresholds and risk limits) come
by symbol from the config's ``[prices]`` (:class:`bandit.config.PriceConfig`):

- ``usd_e6``: a table (by default the bundled tokens' prices, ``bandit.tokens.TOKENS``);
- ``reference_pools``: a token priced by a designated pool of the deployment against a token
  the table prices (the numeraire), from the pool's ``getReserves`` when the registry is read
  (live mode: the start of the run). Integer math, rounded down::

      price_usd_e6 = reserve_numeraire * numeraire_usd_e6 * 10**token_decimals
                     // (reserve_token * 10**numeraire_decimals)

A token priced neither way is left out, logged with how to price it, and counted: the adapter
skips its swaps (``unknown_token_skips``). A ``[prices]`` entry that cannot be honoured (a
symbol no watched pool has, a pool outside the deployment, a pool without that token, an
unpriced numeraire, zero reserves) is a :class:`PriceConfigError` naming the key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bandit.chain.abi import SELECTORS, decode_address, decode_string, decode_words, hex_address
from bandit.chain.rpc import Call, RpcClient
from bandit.config import PriceConfig
from bandit.tokens import TOKENS, Token

__all__ = ["ChainToken", "PriceConfigError", "ReferencePrice", "Registry", "read_registry"]

log = logging.getLogger("bandit.chain.registry")


class PriceConfigError(ValueError):
    """A ``[prices]`` entry the chain cannot honour; the message names the key."""


@dataclass(frozen=True)
class ChainToken(Token):
    """A token at a deployed address (``Token.address`` is a hash of the symbol)."""

    deployed_at: bytes = b""

    @property
    def address(self) -> bytes:
        return self.deployed_at


@dataclass(frozen=True)
class ReferencePrice:
    """A price derived from a designated pool: what was read, and what it implies."""

    symbol: str
    pool: bytes
    numeraire: str
    reserve_token: int
    reserve_numeraire: int
    price_usd_e6: int


@dataclass(frozen=True)
class Registry:
    """What the chain says: priced tokens, and the addresses nothing could price."""

    tokens: tuple[ChainToken, ...]
    unpriced: tuple[tuple[bytes, str], ...]
    references: tuple[ReferencePrice, ...] = ()

    def prices(self) -> dict[str, int]:
        """Every priced token's reference price by symbol (what another process needs)."""
        return {t.symbol: t.price_usd_e6 for t in self.tokens}


@dataclass(frozen=True)
class _OnChain:
    """The watched pools' tokens as the chain reports them."""

    pools: tuple[bytes, ...]
    pool_tokens: dict[bytes, tuple[bytes, bytes]]
    symbol: dict[bytes, str]
    decimals: dict[bytes, int]

    def holding(self, pool: bytes, symbol: str) -> tuple[bytes, bytes] | None:
        """(the token with ``symbol``, the other token) of ``pool``, if it holds ``symbol``."""
        a, b = self.pool_tokens[pool]
        if self.symbol[a] == symbol:
            return a, b
        if self.symbol[b] == symbol:
            return b, a
        return None


def _eth_calls(rpc: RpcClient, targets: Sequence[bytes], signature: str) -> list[str]:
    data = "0x" + SELECTORS[signature]
    return list(rpc.batch([Call("eth_call", ({"to": hex_address(t), "data": data}, "latest"))
                           for t in targets]))


def _read_chain(rpc: RpcClient, pools: Sequence[bytes]) -> _OnChain:
    sides = [[decode_address(r, s) for r in _eth_calls(rpc, pools, s)]
             for s in ("token0()", "token1()")]
    pool_tokens = {p: (a, b) for p, a, b in zip(pools, sides[0], sides[1], strict=True)}
    addresses = list(dict.fromkeys(sides[0] + sides[1]))  # first seen first, as before
    symbols = [decode_string(r, "symbol()") for r in _eth_calls(rpc, addresses, "symbol()")]
    places = [decode_words(r, 1, "decimals()")[0]
              for r in _eth_calls(rpc, addresses, "decimals()")]
    return _OnChain(tuple(pools), pool_tokens, dict(zip(addresses, symbols, strict=True)),
                    dict(zip(addresses, places, strict=True)))


def _check_symbols(chain: _OnChain, config: PriceConfig) -> None:
    known = set(chain.symbol.values())
    for table, keys in (("usd_e6", config.usd_e6 or {}),
                        ("reference_pools", config.reference_pools)):
        for symbol in keys:
            if symbol not in known:
                raise PriceConfigError(
                    f"[prices] {table}.{symbol}: no watched pool has a token with symbol "
                    f"{symbol!r}\nhelp: the chain's symbols are {sorted(known)}")


_POOL_HELP = ("help: \"SYMBOL/NUMERAIRE\" names the first watched pool of that token pair; "
              "or give a watched pair's 0x address")


def _reference_pool(chain: _OnChain, symbol: str, name: str) -> bytes:
    key = f"[prices] reference_pools.{symbol} = {name!r}"
    if name.startswith("0x"):
        try:
            pool = bytes.fromhex(name[2:])
        except ValueError:
            raise PriceConfigError(f"{key} is not a hex address\n{_POOL_HELP}") from None
        if pool not in chain.pool_tokens:
            raise PriceConfigError(f"{key} is not a pool of the deployment (not watched)\n"
                                   f"{_POOL_HELP}")
    else:
        wanted = set(name.split("/"))
        if name.count("/") != 1 or len(wanted) != 2:
            raise PriceConfigError(f"{key} is neither \"SYMBOL/NUMERAIRE\" nor a 0x address\n"
                                   f"{_POOL_HELP}")
        found = [p for p in chain.pools
                 if {chain.symbol[t] for t in chain.pool_tokens[p]} == wanted]
        if not found:
            raise PriceConfigError(f"{key}: no pool of the deployment pairs these tokens\n"
                                   "help: name a token pair one of the watched pools holds")
        pool = found[0]
    if chain.holding(pool, symbol) is None:
        raise PriceConfigError(f"{key}: that pool does not hold {symbol}\n"
                               f"help: designate a pool of {symbol} against a priced token")
    return pool


def _derive(rpc: RpcClient, chain: _OnChain, symbol: str, name: str,
            table: Mapping[str, int]) -> ReferencePrice:
    """The price ``symbol``'s reference pool implies, rounded down (module docstring)."""
    key = f"[prices] reference_pools.{symbol} = {name!r}"
    pool = _reference_pool(chain, symbol, name)
    holding = chain.holding(pool, symbol)
    assert holding is not None
    token, numeraire = holding
    num_symbol = chain.symbol[numeraire]
    if num_symbol not in table:
        raise PriceConfigError(f"{key}: its other token {num_symbol} has no usd_e6 price\n"
                               f"help: add {num_symbol} to [prices] usd_e6 (the numeraire)")
    reserve0, reserve1 = decode_words(_eth_calls(rpc, [pool], "getReserves()")[0], 2,
                                      "getReserves()")
    r_token, r_num = (reserve0, reserve1) if token == chain.pool_tokens[pool][0] \
        else (reserve1, reserve0)
    if r_token == 0 or r_num == 0:
        raise PriceConfigError(f"{key}: the pool has zero reserves ({reserve0}, {reserve1})\n"
                               "help: designate a pool with liquidity")
    price = (r_num * table[num_symbol] * 10 ** chain.decimals[token]
             // (r_token * 10 ** chain.decimals[numeraire]))
    if price == 0:
        raise PriceConfigError(f"{key}: the reserves imply a price below 1 micro-USD\n"
                               f"help: price {symbol} in [prices] usd_e6 instead")
    return ReferencePrice(symbol, pool, num_symbol, r_token, r_num, price)


def read_registry(rpc: RpcClient, pools: Sequence[bytes],
                  prices: PriceConfig | Mapping[str, int] | None = None) -> Registry:
    """Tokens of ``pools`` with their on-chain symbol and decimals and a reference price
    (``prices``: a ``[prices]`` config or a table by symbol; by default the bundled tokens'
    reference prices)."""
    config = prices if isinstance(prices, PriceConfig) else PriceConfig(usd_e6=prices)
    chain = _read_chain(rpc, pools)
    _check_symbols(chain, config)
    table = (dict(config.usd_e6) if config.usd_e6 is not None
             else {t.symbol: t.price_usd_e6 for t in TOKENS})
    references = tuple(_derive(rpc, chain, symbol, name, table)
                       for symbol, name in config.reference_pools.items())
    table.update({r.symbol: r.price_usd_e6 for r in references})
    priced, unpriced = [], []
    for address, symbol in chain.symbol.items():
        if symbol in table:
            priced.append(ChainToken(symbol, chain.decimals[address], table[symbol],
                                     deployed_at=address))
        else:
            unpriced.append((address, symbol))
            log.warning("live: token %s (%s) has no reference price: the swaps of its pools "
                        "are skipped and counted (unknown_token_skips); price it in the config "
                        "with [prices] usd_e6 = { %s = ... } or reference_pools = { %s = "
                        "\"%s/NUMERAIRE\" }", symbol, hex_address(address), symbol, symbol,
                        symbol)
    return Registry(tuple(priced), tuple(unpriced), references)
