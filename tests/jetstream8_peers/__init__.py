"""Peer processes of ``tests/test_stranger8_jetstream8.py`` (a power grid's billing line)."""
