"""Transports carry messages between processes; in-process delivery is the bus's own job."""
