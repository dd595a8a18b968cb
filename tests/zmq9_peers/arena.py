"""A multiplayer game server's messages (type ids 39301..39309, topic ``arena``).

Viewers check every stream per (sim, run): ``sim`` names the publishing server, ``run`` its
incarnation (1, 2, ... across restarts), ``seq`` counts from 1 per incarnation.
"""

from __future__ import annotations

from mycelium_mono import F32, I64, U64, message


@message(type_id=39301, topic="arena")
class Snapshot:
    """The simulation's state after one tick, sent to every viewer."""

    seq: U64
    sim: I64
    run: I64
    x: F32
    y: F32


@message(type_id=39302, topic="arena")
class Relayed:
    """A relay's copy of a Snapshot: its own ``seq``/``run``, and the origin's."""

    seq: U64
    sim: I64
    run: I64
    origin_seq: U64
    origin_run: I64


@message(type_id=39303, topic="arena")
class PlayerInput:
    """A player's input (same size as nothing else here; used for the late-subscribe ready)."""

    seq: U64
    player: I64
