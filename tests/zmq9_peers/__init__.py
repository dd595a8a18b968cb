"""Peer processes for tests/test_stranger9_zmq9.py (``python -m zmq9_peers.<name>``)."""
