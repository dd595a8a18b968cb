"""Bandit: a DEX arbitrage pipeline built on mycelium-mono."""
