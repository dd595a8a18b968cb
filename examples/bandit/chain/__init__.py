"""Bandit's live chain: a local anvil node, the real Uniswap V2 contracts, a replayed market.

This folder is also an npm project (``package.json``/``package-lock.json``): ``make venv``
runs ``npm ci`` here, which puts anvil, ``@uniswap/v2-core``'s build artifacts and the pinned
solc-js into ``node_modules/``. Nothing is fetched at run time.

- :mod:`bandit.chain.node` — start anvil on a free port, always stop it.
- :mod:`bandit.chain.rpc` — a small synchronous JSON-RPC client (HTTP, batches).
- :mod:`bandit.chain.abi` — the few ABI encodings and selectors Bandit needs.
- :mod:`bandit.chain.deploy` — tokens, factories, pairs with the feed's opening reserves.
- :mod:`bandit.chain.market` — the bundled feed's swaps replayed as real transactions.
- :mod:`bandit.chain.execute` — both arbitrage legs in one transaction of ``BanditArb``.
"""
