"""@message: immutable, slotted records with a fixed little-endian layout."""

from __future__ import annotations

import copy
import pickle
import struct
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium_mono import (
    F64,
    I64,
    U8,
    U64,
    U256,
    Address,
    Bool,
    Bytes,
    MessageError,
    message,
)
from mycelium_mono.messages import message_class, snake_case


@message(type_id=60001, topic="market_data")
class Swap:
    pool: Address
    amount_in: U256
    timestamp_ns: U64
    price: F64
    buy: Bool
    delta: I64
    tag: Annotated[bytes, Bytes(4)]


def make_swap(**changes: object) -> Swap:
    values: dict[str, object] = dict(
        pool=b"\x01" * 20, amount_in=10**30, timestamp_ns=7, price=1.5, buy=True, delta=-3,
        tag=b"abcd",
    )
    values.update(changes)
    return Swap(**values)  # type: ignore[arg-type]


def test_class_constants_describe_the_layout() -> None:
    assert Swap.TYPE_ID == 60001
    assert Swap.TOPIC == "market_data"
    assert Swap.SIZE == 20 + 32 + 8 + 8 + 1 + 8 + 4
    assert message_class(60001) is Swap


def test_round_trip_through_bytes_and_memoryview() -> None:
    swap = make_swap()
    data = swap.to_bytes()
    assert len(data) == Swap.SIZE
    assert Swap.from_bytes(data) == swap
    assert Swap.from_bytes(memoryview(bytearray(data))) == swap


def test_u256_is_little_endian_32_bytes_on_the_wire() -> None:
    data = make_swap(amount_in=1).to_bytes()
    assert data[20:52] == (1).to_bytes(32, "little")


def test_messages_are_immutable_and_slotted() -> None:
    swap = make_swap()
    with pytest.raises(AttributeError, match="immutable"):
        swap.timestamp_ns = 8  # type: ignore[misc]
    assert not hasattr(swap, "__dict__")
    assert copy.copy(swap) is swap


def test_replace_makes_a_changed_copy_and_rejects_unknown_fields() -> None:
    swap = make_swap()
    changed = swap.replace(timestamp_ns=9)
    assert changed.timestamp_ns == 9 and swap.timestamp_ns == 7
    with pytest.raises(TypeError, match="unknown fields"):
        swap.replace(nope=1)


def test_equality_hash_repr_and_pickle() -> None:
    assert make_swap() == make_swap()
    assert hash(make_swap()) == hash(make_swap())
    assert make_swap() != make_swap(delta=4)
    assert repr(make_swap()).startswith("Swap(pool=b'\\x01")
    assert pickle.loads(pickle.dumps(make_swap())) == make_swap()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("amount_in", -1, r"Swap.amount_in \(U256\) must be an int in 0\.\."),
        ("amount_in", 1 << 256, r"Swap.amount_in \(U256\)"),
        ("timestamp_ns", 1 << 64, r"Swap.timestamp_ns \(U64\)"),
        ("delta", 1 << 63, r"Swap.delta \(I64\)"),
        ("pool", b"short", r"Swap.pool \(Bytes\[20\]\) must be exactly 20 bytes"),
        ("buy", 1, r"Swap.buy \(Bool\) must be a bool"),
        ("timestamp_ns", "7", r"got str '7'"),
    ],
)
def test_out_of_range_values_name_the_field(field: str, value: object, expected: str) -> None:
    with pytest.raises(MessageError, match=expected):
        make_swap(**{field: value})


def test_wrong_buffer_size_is_a_clear_error() -> None:
    with pytest.raises(MessageError, match=f"needs exactly {Swap.SIZE} bytes, got 3"):
        Swap.from_bytes(b"abc")


def test_duplicate_type_id_names_both_classes() -> None:
    with pytest.raises(MessageError, match=r"type_id 60001 is used by both .*Swap and .*Other"):

        @message(type_id=60001)
        class Other:
            x: U8


def test_fields_need_a_wire_layout() -> None:
    with pytest.raises(MessageError, match=r"Bad.x: int has no wire layout"):

        @message(type_id=60002)
        class Bad:
            x: int


def test_fingerprint_changes_with_the_layout() -> None:
    @message(type_id=60003)
    class A:
        x: U8

    first = A.FINGERPRINT

    @message(type_id=60003)
    class A:  # type: ignore[no-redef]  # same qualified name: a redefinition is allowed
        x: U64

    assert first != A.FINGERPRINT


def test_snake_case() -> None:
    assert snake_case("V2Swap") == "v2_swap"
    assert snake_case("ArbitrageSignal") == "arbitrage_signal"
    assert snake_case("HTTPServer") == "http_server"


@given(
    amount=st.integers(0, (1 << 256) - 1),
    ts=st.integers(0, (1 << 64) - 1),
    delta=st.integers(-(1 << 63), (1 << 63) - 1),
    price=st.floats(allow_nan=False),
    buy=st.booleans(),
    pool=st.binary(min_size=20, max_size=20),
)
def test_round_trip_property(
    amount: int, ts: int, delta: int, price: float, buy: bool, pool: bytes
) -> None:
    swap = make_swap(amount_in=amount, timestamp_ns=ts, delta=delta, price=price, buy=buy,
                     pool=pool)
    assert Swap.from_bytes(swap.to_bytes()) == swap


def test_struct_is_precompiled_once_per_class() -> None:
    assert isinstance(Swap._STRUCT, struct.Struct)  # type: ignore[attr-defined]
    assert Swap._STRUCT.size == Swap.SIZE  # type: ignore[attr-defined]
