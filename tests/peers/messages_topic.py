"""Type id 4001 with ``peers.messages.Tick``'s exact layout but another topic (child only)."""

from __future__ import annotations

from mycelium_mono import I64, U64, Bytes32, message


@message(type_id=4001, topic="dist_other")
class Tick:
    """Same id, class name, fields and size as ``peers.messages.Tick``; only the topic differs."""

    seq: U64
    value: I64
    blob: Bytes32
