"""Parcel-tracking messages for tests/test_stranger_flexible.py and its peer processes.

Type ids 47101..47109. ``hub`` says which depot scanned a parcel (one per publisher), ``seq``
counts that hub's scans from 1, so loss, repeats and reordering are countable per publisher.
"""

from __future__ import annotations

from mycelium_mono import U32, U64, message


@message(type_id=47101, topic="parcels.scans")
class Scan:
    hub: U32
    seq: U64
    parcel: U64


@message(type_id=47102, topic="parcels.alerts")
class Delayed:
    parcel: U64
    hours: U32
