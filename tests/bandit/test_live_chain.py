"""The chain itself: anvil installed and always stopped, our contracts, the deployment."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bandit.arbitrage import get_amount_out
from bandit.chain import node as node_module
from bandit.chain.abi import SELECTORS, decode_words, hex_address
from bandit.chain.contracts import BUILD, bandit_contract
from bandit.chain.deploy import Sender
from bandit.chain.execute import ChainExecutor
from bandit.chain.node import CHAIN_DIR, NodeError, anvil_node
from bandit.chain.rpc import RpcClient
from bandit.tokens import TOKENS

from tests.bandit.live_support import LiveChain, live_chain, running_node


@pytest.fixture(scope="module")
def chain() -> Iterator[LiveChain]:
    with live_chain() as found:
        yield found


@pytest.fixture
def rpc(chain: LiveChain) -> Iterator[RpcClient]:
    chain.fresh()
    client = RpcClient(chain.node.http_url)
    yield client
    client.close()


def test_a_missing_anvil_fails_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setattr(node_module, "ANVIL", tmp_path / "no-anvil")
    with pytest.raises(NodeError, match=r"anvil is not installed.*\n.*make venv.*npm ci"), \
            anvil_node():
        pass


def test_anvil_is_killed_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), running_node() as node:
        pid = node.pid
        raise RuntimeError("boom")
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped


def test_every_selector_is_keccak_of_its_signature(rpc: RpcClient) -> None:
    table = SELECTORS | bandit_contract("BanditArb").selectors
    for signature, selector in table.items():
        digest = rpc.call("web3_sha3", "0x" + signature.encode().hex())
        assert digest[2:10] == selector, signature


def test_checked_in_bytecode_is_what_the_pinned_solc_compiles(tmp_path: Path) -> None:
    subprocess.run(["node", str(CHAIN_DIR / "compile.mjs"), str(tmp_path)], check=True,
                   timeout=120)
    for built in sorted(BUILD.glob("*.json")):
        fresh = json.loads((tmp_path / built.name).read_text())
        assert fresh["bytecode"] == json.loads(built.read_text())["bytecode"], built.name
        assert fresh["compiler"].startswith("solc-js 0.8.28+commit.7893614a")


def test_pairs_open_with_the_feed_reserves(chain: LiveChain, rpc: RpcClient) -> None:
    for opening, pair in zip(chain.feed.pools, chain.setup.deployment.pairs, strict=True):
        r0, r1, _ = decode_words(rpc.eth_call(hex_address(pair.address), "0x0902f1ac"), 3)
        expected = (opening.reserve1, opening.reserve0) if pair.flipped else (
            opening.reserve0, opening.reserve1)
        assert (r0, r1) == expected


def test_registry_has_every_token_with_its_onchain_symbol_and_decimals(chain: LiveChain) -> None:
    found = {t.symbol: (t.decimals, t.address) for t in chain.setup.registry.tokens}
    assert found == {t.symbol: (t.decimals, chain.setup.deployment.tokens[i])
                     for i, t in enumerate(TOKENS)}
    assert chain.setup.registry.unpriced == ()


def _mispriced(chain: LiveChain, rpc: RpcClient) -> tuple[bytes, bytes, bytes, int, int]:
    """Move pool 0 with a 3 % swap; the cycle back through pool 1 and its exact output."""
    d = chain.setup.deployment
    first, second = d.pairs[0], d.pairs[1]
    (r0, r1, _), (s0, s1, _) = (decode_words(rpc.eth_call(hex_address(p.address), "0x0902f1ac"),
                                             3) for p in (first, second))
    market = Sender(rpc, d.market, gas=300_000)
    whale = r0 * 3 // 100
    swap = bandit_contract("BanditArb").data("swapExactIn(address,address,uint256)",
                                              first.address, first.token0, whale)
    rpc.batch([market.tx(d.arb, swap)])
    rpc.call("evm_mine")
    r0, r1 = r0 + whale, r1 - get_amount_out(whale, r0, r1)
    # token1 is now cheap in pool 0: buy it there, sell it in pool 1.
    amount_in = r1 // 200
    mid = get_amount_out(amount_in, r1, r0)
    return first.address, second.address, first.token1, amount_in, get_amount_out(mid, s0, s1)


def test_arbitrage_returns_exactly_the_predicted_output(chain: LiveChain, rpc: RpcClient) -> None:
    buy, sell, token_in, amount_in, predicted = _mispriced(chain, rpc)
    assert predicted > amount_in  # a real opportunity
    executor = ChainExecutor(chain.node.http_url, chain.setup.deployment.trader,
                             chain.setup.deployment.arb)
    fill = executor.execute(buy, sell, token_in, amount_in, predicted)
    executor.close()
    assert fill.ok and fill.amount_out == predicted
    assert 100_000 < fill.gas_used < 250_000


def test_arbitrage_asking_one_wei_more_reverts_and_moves_nothing(chain: LiveChain,
                                                                 rpc: RpcClient) -> None:
    buy, sell, token_in, amount_in, predicted = _mispriced(chain, rpc)
    before = rpc.eth_call(hex_address(buy), "0x0902f1ac")
    executor = ChainExecutor(chain.node.http_url, chain.setup.deployment.trader,
                             chain.setup.deployment.arb)
    assert not executor.would_succeed(buy, sell, token_in, amount_in, predicted + 1)
    fill = executor.execute(buy, sell, token_in, amount_in, predicted + 1)
    executor.close()
    assert not fill.ok and fill.amount_out == 0 and fill.gas_used > 0
    assert rpc.eth_call(hex_address(buy), "0x0902f1ac") == before
