"""Wind-farm telemetry messages for tests/test_stranger3_bounds3.py and its peer processes.

Type ids 9301..9303. ``turbine`` says which turbine (one per publisher), ``seq`` counts that
turbine's readings from 1, so loss, repeats and reordering are countable per publisher.
"""

from __future__ import annotations

from mycelium_mono import F32, U16, U32, U64, message


@message(type_id=9301, topic="windfarm.readings")
class Reading:
    turbine: U32
    seq: U64
    power_kw: F32


@message(type_id=9302, topic="windfarm.alarms")
class Alarm:
    turbine: U32
    code: U16
    seq: U64


@message(type_id=9303, topic="windfarm.commands")
class Maintenance:
    turbine: U32
    action: U16
