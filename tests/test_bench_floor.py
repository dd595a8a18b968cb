"""The records issue 16's construction bar is measured against (benchmarks/fixtures/
mycelium_bench/construct_floor.py) hold the same fields and, for the validated one, refuse
exactly what ``@message`` refuses: otherwise their instruction counts would compare unlike work.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from bandit.protocol import V2Swap
from helpers_modules import ROOT, load_file

from mycelium_mono import MessageError

GOOD: dict[str, Any] = dict(
    pool_address=b"\x01" * 20, token0=b"\x02" * 20, token1=b"\x03" * 20, amount_in=10**20,
    amount_out=10**19, zero_for_one=True, reserve0=10**24, reserve1=10**23,
    timestamp_ns=1_700_000_000_000_000_000, block_number=19_000_000, seq=12_345,
)
# One wrong value per kind of check: exact type, length, each end of a range.
BAD: list[tuple[str, object]] = [
    ("pool_address", b"\x01" * 19), ("pool_address", bytearray(20)), ("token1", "x" * 20),
    ("amount_in", 2**256), ("amount_in", -1), ("amount_out", True), ("reserve0", 1.0),
    ("zero_for_one", 1), ("timestamp_ns", 2**64), ("block_number", -1), ("seq", None),
]


@pytest.fixture(scope="module")
def floor() -> Iterator[ModuleType]:
    path = ROOT / "benchmarks" / "fixtures" / "mycelium_bench" / "construct_floor.py"
    yield from load_file("construct_floor_under_test", path)


def test_both_records_hold_every_field(floor: ModuleType) -> None:
    for make in (floor.plain_slots_class, floor.validated_tuple_class):
        record = make(V2Swap)(**GOOD)
        assert {name: getattr(record, name) for name in GOOD} == GOOD


@pytest.mark.parametrize(("field", "value"), BAD)
def test_the_validated_record_refuses_what_message_refuses(floor: ModuleType, field: str,
                                                           value: object) -> None:
    values = {**GOOD, field: value}
    with pytest.raises(MessageError):
        V2Swap(**values)
    with pytest.raises(TypeError):
        floor.validated_tuple_class(V2Swap)(**values)
    assert floor.plain_slots_class(V2Swap)(**values) is not None  # it checks nothing
