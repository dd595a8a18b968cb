"""Reference prices from the config (``[prices]``) on the real node: a table, or a designated
pool whose reserves price a token against a numeraire; a token priced neither way is a counted
skip; a config the chain cannot honour is an error at start that names its key."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bandit.chain.abi import decode_address, decode_words, hex_address
from bandit.chain.contracts import uniswap_contract
from bandit.chain.deploy import Sender
from bandit.chain.registry import PriceConfigError, read_registry
from bandit.chain.rpc import RpcClient
from bandit.config import BanditConfig, PriceConfig, load_config
from bandit.live import LiveResult, run_live
from bandit.tokens import TOKENS

from tests.bandit.live_support import LiveChain, free_port, live_chain

LIMIT = 120
# WETH only through its pool against USDC; AAVE priced nowhere.
TABLE = {t.symbol: t.price_usd_e6 for t in TOKENS if t.symbol not in ("WETH", "AAVE")}
PRICES = {"usd_e6": TABLE, "reference_pools": {"WETH": "WETH/USDC"}}


@pytest.fixture(scope="module")
def chain() -> Iterator[LiveChain]:
    with live_chain() as found:
        yield found


def priced_cfg(out: Path, prices: dict[str, Any]) -> BanditConfig:
    """The bundled config with ``[prices]`` replaced, as a TOML file would give it."""
    cfg = load_config(None, output_dir=out, overrides={"prices": prices, "distributed": {
        "adapters": f"127.0.0.1:{free_port()}", "strategies": f"127.0.0.1:{free_port()}"}})
    return replace(cfg, metrics=replace(cfg.metrics, http_port=None))


def run(chain: LiveChain, cfg: BanditConfig, mode: str = "monolith") -> LiveResult:
    chain.fresh()
    return asyncio.run(run_live(mode, cfg, chain.setup, limit=LIMIT, feed=chain.feed))


def symbol_index(symbol: str) -> int:
    return next(i for i, t in enumerate(TOKENS) if t.symbol == symbol)


def test_a_token_priced_only_by_its_pool_gets_the_price_its_reserves_imply(
        chain: LiveChain, tmp_path: Path) -> None:
    result = run(chain, priced_cfg(tmp_path, PRICES))
    assert result.registry is not None
    (ref,) = result.registry.references
    # The first watched pool of the pair, in the feed's order: pool 5, USDC/WETH.
    usdc, weth = symbol_index("USDC"), symbol_index("WETH")
    first = next(i for i, p in enumerate(chain.feed.pools) if {p.token0, p.token1} == {usdc, weth})
    pair = chain.setup.deployment.pairs[first]
    opening = chain.feed.pools[first]
    r_usdc, r_weth = ((opening.reserve0, opening.reserve1) if opening.token0 == usdc
                      else (opening.reserve1, opening.reserve0))
    # Rounded down: USDC has 6 decimals, WETH 18; USDC is 1_000_000 micro-USD.
    expected = r_usdc * 1_000_000 * 10**18 // (r_weth * 10**6)
    assert (ref.symbol, ref.numeraire, ref.pool) == ("WETH", "USDC", pair.address)
    assert (ref.reserve_token, ref.reserve_numeraire) == (r_weth, r_usdc)
    assert ref.price_usd_e6 == expected == 1_997_403_375
    weth_token = next(t for t in result.registry.tokens if t.symbol == "WETH")
    assert weth_token.price_usd_e6 == expected and weth_token.decimals == 18
    # ... and it is what the chain says at the run's start (the snapshot).
    rpc = RpcClient(chain.setup.rpc_url)
    try:
        chain.fresh()
        word = rpc.eth_call(hex_address(pair.address), "0x0902f1ac")
        reserve0, reserve1 = decode_words(word, 2)
        token0 = decode_address(rpc.eth_call(hex_address(pair.address), "0x0dfe1681"))
    finally:
        rpc.close()
    on_chain_weth = reserve0 if token0 == chain.setup.deployment.tokens[weth] else reserve1
    assert on_chain_weth == r_weth and {reserve0, reserve1} == {r_usdc, r_weth}


def test_an_unpriced_token_is_a_counted_skip_in_every_process(
        chain: LiveChain, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bandit.chain.registry"):
        mono = run(chain, priced_cfg(tmp_path / "m", PRICES))
    (line,) = [r.getMessage() for r in caplog.records if "AAVE" in r.getMessage()]
    assert "no reference price" in line and "[prices] usd_e6" in line and "reference_pools" in line
    dist = run(chain, cfg := priced_cfg(tmp_path / "d", PRICES), "distributed")
    aave = symbol_index("AAVE")
    aave_pools = {i for i, p in enumerate(chain.feed.pools) if aave in (p.token0, p.token1)}
    on_aave = sum(1 for s in chain.feed.swaps[:LIMIT] if s.pool in aave_pools)
    assert mono.registry is not None
    assert [symbol for _, symbol in mono.registry.unpriced] == ["AAVE"]
    # Each AAVE pool's start snapshot and each of its swaps: skipped, counted, no crash.
    assert mono.unknown_token_skips == len(aave_pools) + on_aave > len(aave_pools)
    assert mono.market_swaps == dist.market_swaps == LIMIT
    assert mono.chain_fills > 0
    # The adapters node (another process) skipped the same swaps: it was given these prices.
    adapters_cfg = (cfg.output_dir / "adapters-node.toml").read_text()
    assert "AAVE" not in adapters_cfg and f"WETH = {mono.registry.prices()['WETH']}" in adapters_cfg
    mono_log = (tmp_path / "m" / "audit.jsonl").read_bytes()
    assert (tmp_path / "d" / "audit.jsonl").read_bytes() == mono_log
    assert all(json.loads(line)["status"] for line in mono_log.splitlines())


@pytest.mark.parametrize(("prices", "names"), [
    ({"usd_e6": {**TABLE, "XYZ": 5}}, "usd_e6.XYZ"),
    ({"reference_pools": {"XYZ": "XYZ/USDC"}}, "reference_pools.XYZ"),
    ({"reference_pools": {"LINK": "0x" + "11" * 20}}, "reference_pools.LINK = '0x1111"),
    ({"reference_pools": {"LINK": "LINK/USDC"}}, "reference_pools.LINK = 'LINK/USDC'"),
    ({"reference_pools": {"LINK": "WETH/USDC"}}, "does not hold LINK"),
    ({"usd_e6": {k: v for k, v in TABLE.items() if k != "LINK"},
      "reference_pools": {"LINK": "LINK/WETH"}}, "WETH has no usd_e6 price"),
    ({"reference_pools": {"LINK": "LINK"}}, "reference_pools.LINK = 'LINK'"),
])
def test_a_price_config_the_chain_cannot_honour_fails_at_start_naming_the_key(
        chain: LiveChain, tmp_path: Path, prices: dict[str, Any], names: str) -> None:
    with pytest.raises(PriceConfigError, match=r"^\[prices\] ") as failed:
        run(chain, priced_cfg(tmp_path, prices))
    assert names in str(failed.value)
    assert "\nhelp: " in str(failed.value)


def test_a_reference_pool_with_zero_reserves_fails_naming_the_key(chain: LiveChain) -> None:
    setup = chain.fresh()
    deployment = setup.deployment
    rpc = RpcClient(setup.rpc_url)
    try:
        link, usdc = (deployment.tokens[symbol_index(s)] for s in ("LINK", "USDC"))
        factory = uniswap_contract("UniswapV2Factory")
        trader = Sender(rpc, deployment.trader)
        rpc.call("eth_sendTransaction", trader.tx(deployment.factories[0], factory.data(
            "createPair(address,address)", link, usdc)).params[0])
        rpc.call("evm_mine")
        empty = decode_address(rpc.eth_call(hex_address(deployment.factories[0]), factory.data(
            "getPair(address,address)", link, usdc)), "getPair")
        assert empty != bytes(20)
        pools = [p.address for p in deployment.pairs] + [empty]
        config = PriceConfig(reference_pools={"LINK": "LINK/USDC"})
        with pytest.raises(PriceConfigError, match=r"reference_pools\.LINK .* zero reserves"):
            read_registry(rpc, pools, config)
    finally:
        rpc.close()


@pytest.mark.parametrize(("prices", "names"), [
    ({"usd_e6": {"LINK": 0}}, "usd_e6.LINK = 0"),
    ({"usd_e6": {"LINK": "15"}}, "usd_e6.LINK = '15'"),
    ({"usd_e6": {"LINK": 1}, "reference_pools": {"LINK": "LINK/WETH"}}, "LINK is priced twice"),
    ({"reference_pools": {"LINK": 3}}, "reference_pools.LINK = 3"),
    ({"usd": {}}, "[prices] has unknown keys ['usd']"),
])
def test_a_malformed_prices_section_fails_when_the_config_is_read(
        tmp_path: Path, prices: dict[str, Any], names: str) -> None:
    with pytest.raises(ValueError) as failed:
        priced_cfg(tmp_path, prices)
    assert names in str(failed.value)
