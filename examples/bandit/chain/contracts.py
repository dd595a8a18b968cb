"""The contracts' ABI selectors and creation bytecode: v2-core's artifacts and our build/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from bandit.chain.abi import SELECTORS, Arg, call_data, encode_args
from bandit.chain.node import CHAIN_DIR, INSTALL_HELP

__all__ = ["Contract", "bandit_contract", "uniswap_contract"]

V2_CORE_BUILD = CHAIN_DIR / "node_modules" / "@uniswap" / "v2-core" / "build"
BUILD = CHAIN_DIR / "build"


@dataclass(frozen=True)
class Contract:
    """A contract's creation code and the selectors of its functions."""

    name: str
    bytecode: str
    selectors: dict[str, str]

    def data(self, signature: str, *args: Arg) -> str:
        """Call data of one of this contract's functions."""
        return call_data(signature, *args, selectors=self.selectors)

    def creation(self, *args: Arg) -> str:
        """Creation code with the constructor's arguments appended."""
        return self.bytecode + encode_args(args).hex()


@cache
def uniswap_contract(name: str) -> Contract:
    """``UniswapV2Factory`` or ``UniswapV2Pair`` from ``@uniswap/v2-core@1.0.1``."""
    path = V2_CORE_BUILD / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: @uniswap/v2-core is not installed\n"
                                f"{INSTALL_HELP}")
    artifact = json.loads(path.read_text())
    return Contract(name, "0x" + artifact["bytecode"].removeprefix("0x"), dict(SELECTORS))


@cache
def bandit_contract(name: str) -> Contract:
    """``BanditToken`` or ``BanditArb``, compiled by ``compile.mjs`` into ``build/``."""
    artifact = json.loads((BUILD / f"{name}.json").read_text())
    selectors = dict(SELECTORS) | artifact["methodIdentifiers"]
    return Contract(name, artifact["bytecode"], selectors)
