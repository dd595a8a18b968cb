"""Peer processes for the distributed tests.

Run as ``python -m peers.<name>`` with ``tests/`` on ``PYTHONPATH``.
"""
