"""Bandit: a DEX arbitrage pipeline built on mycelium-mono.

A Uniswap-V2 swap feed (a bundled deterministic replay, or a live JSON-RPC WebSocket) flows
through arbitrage detection, risk, paper execution and an audit trail — in monolith,
in-process, hybrid and distributed deployments, with byte-identical audit logs.
Run it with ``python -m bandit monolith``.
"""
