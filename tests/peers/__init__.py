"""Peer processes for the distributed tests: run as ``python -m peers.<name>`` with ``tests/`` on the path."""
