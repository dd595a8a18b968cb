"""A *different* definition of type id 4001, for the fingerprint-mismatch test (child only)."""

from __future__ import annotations

from mycelium_mono import I64, U32, Bytes32, message


@message(type_id=4001, topic="dist_test")
class Tick:
    """Same id, topic and size as ``peers.messages.Tick``; ``seq`` is split differently."""

    seq: U32
    spare: U32
    value: I64
    blob: Bytes32
