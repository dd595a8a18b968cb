"""The token universe of the bundled market: addresses, decimals, reference prices, taxes.

Every service that needs a price (gas and minimum profit in the input token, risk limits in
USD) reads it from here, so every process of a distributed run agrees without a price feed.
Prices are integers in micro-USD per whole token: all money math in Bandit is integer math,
so results are bit-identical on every machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

__all__ = ["TOKENS", "Token", "is_known", "register", "token_amount", "token_by_address",
           "usd_e6"]


@dataclass(frozen=True)
class Token:
    """One ERC-20 token of the simulated Polygon market."""

    symbol: str
    decimals: int
    price_usd_e6: int
    # Fee-on-transfer ("tax") tokens keep a share of every transfer. The detector prices
    # pools as pure constant-product, so arbitrage through such a token loses money on
    # paper fills: that is what the risk manager's drawdown halt is for.
    transfer_tax_bps: int = 0

    @cached_property  # the feed replay reads it twice per swap: hash the symbol once
    def address(self) -> bytes:
        """A stable 20-byte address derived from the symbol (not a real deployment)."""
        return hashlib.blake2b(b"bandit-token:" + self.symbol.encode(), digest_size=20).digest()


TOKENS: tuple[Token, ...] = (
    Token("WMATIC", 18, 700_000),
    Token("WETH", 18, 2_000_000_000),
    Token("USDC", 6, 1_000_000),
    Token("DAI", 18, 1_000_000),
    Token("WBTC", 8, 40_000_000_000),
    Token("LINK", 18, 15_000_000),
    Token("AAVE", 18, 90_000_000),
    Token("FOT", 18, 2_000_000, transfer_tax_bps=200),
)

_BY_ADDRESS = {t.address: t for t in TOKENS}
_BUNDLED = dict(_BY_ADDRESS)


def register(tokens: tuple[Token, ...]) -> None:
    """The bundled tokens plus ``tokens`` (live mode: read from the chain by
    ``bandit.chain.registry``); replaces what an earlier call registered."""
    _BY_ADDRESS.clear()
    _BY_ADDRESS.update(_BUNDLED)
    _BY_ADDRESS.update({t.address: t for t in tokens})


def is_known(address: bytes) -> bool:
    """Whether a price and decimals are known for this token address."""
    return address in _BY_ADDRESS


def token_by_address(address: bytes) -> Token:
    """The token with this address; ``KeyError`` with a hint for an unknown one."""
    try:
        return _BY_ADDRESS[address]
    except KeyError:
        raise KeyError(
            f"unknown token address 0x{address.hex()}\n"
            "help: Bandit prices only the tokens listed in bandit.tokens.TOKENS"
        ) from None


def usd_e6(address: bytes, amount: int) -> int:
    """Value of ``amount`` base units of the token in micro-USD (floor, sign kept)."""
    token = token_by_address(address)
    return amount * token.price_usd_e6 // 10**token.decimals


def token_amount(address: bytes, value_usd_e6: int) -> int:
    """Base units of the token worth ``value_usd_e6`` micro-USD (floor)."""
    token = token_by_address(address)
    return value_usd_e6 * 10**token.decimals // token.price_usd_e6
