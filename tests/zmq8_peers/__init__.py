"""Peer processes for tests/test_stranger8_zmq8.py (run as ``python -m zmq8_peers.<name>``)."""
