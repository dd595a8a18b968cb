"""@message: immutable, slotted records with a fixed little-endian layout."""

from __future__ import annotations

import copy
import math
import pickle
import struct
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium_mono import (
    F32,
    F64,
    I64,
    U8,
    U16,
    U32,
    U64,
    U256,
    Address,
    Bool,
    Bytes,
    Message,
    MessageError,
    Text,
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


# --- issue 16: the faster build keeps the old semantics -----------------------------------


def test_a_message_never_equals_a_plain_tuple_with_the_same_values() -> None:
    swap = make_swap()
    values = tuple(getattr(swap, name) for name, _ in Swap.FIELDS)
    assert swap != values and values != swap
    assert not swap == values  # noqa: SIM201  # __eq__ itself, not only __ne__


def test_two_message_types_with_the_same_values_are_not_equal() -> None:
    @message(type_id=60010)
    class Left:
        x: U8

    @message(type_id=60011)
    class Right:
        x: U8

    assert Left(x=1) != Right(x=1)
    assert Left(x=1) == Left(x=1)


def test_a_message_is_a_record_not_a_sequence() -> None:
    swap = make_swap()
    assert not isinstance(swap, tuple)
    with pytest.raises(TypeError, match="not iterable"):
        iter(swap)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="has no len"):
        len(swap)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not subscriptable"):
        swap[0]  # type: ignore[index]


def test_messages_have_no_order() -> None:
    with pytest.raises(TypeError, match="not supported between instances"):
        make_swap() < make_swap()  # type: ignore[operator]  # noqa: B015


def test_a_built_message_is_exactly_its_class_and_frozen() -> None:
    swap, decoded = make_swap(), Swap.from_bytes(make_swap().to_bytes())
    assert type(swap) is Swap and type(decoded) is Swap
    for m in (swap, decoded):
        with pytest.raises(AttributeError, match="immutable"):
            m.delta = 1  # type: ignore[misc]
        with pytest.raises(AttributeError, match="immutable"):
            del m.delta  # type: ignore[misc]


def test_a_field_may_be_named_like_a_builtin_or_a_tuple_method() -> None:
    @message(type_id=60012)
    class Entry:
        type: U8
        count: U16
        index: U32
        len: Bool

    entry = Entry(type=1, count=2, index=3, len=True)
    assert (entry.type, entry.count, entry.index, entry.len) == (1, 2, 3, True)
    assert Entry.from_bytes(entry.to_bytes()) == entry
    with pytest.raises(MessageError, match=r"Entry.type \(U8\)"):
        Entry(type=256, count=2, index=3, len=True)


def test_decode_builds_the_same_message_as_construction() -> None:
    swap = make_swap()
    decoded = Swap.from_bytes(swap.to_bytes())
    assert type(decoded) is Swap and decoded == swap and hash(decoded) == hash(swap)
    assert Swap._decode(swap.to_bytes()) == swap  # type: ignore[attr-defined]  # wire.py's entry


def test_an_int_in_a_float_field_is_stored_as_a_float() -> None:
    swap = make_swap(price=3)
    assert swap.price == 3.0 and type(swap.price) is float


def test_unpickling_validates_the_values_again() -> None:
    forged = pickle.dumps(make_swap()).replace((7).to_bytes(1, "little") * 1, b"\x07", 1)
    assert pickle.loads(forged) == make_swap()
    reduced = make_swap().__reduce__()
    cls, values = reduced[0], reduced[1]
    with pytest.raises(MessageError, match=r"Swap.timestamp_ns \(U64\)"):
        cls(*values[:2], -1, *values[3:])


# --- issue 15 item 12: reserved field names -----------------------------------------------


@pytest.mark.parametrize("name", ["to_bytes", "from_bytes", "replace", "self", "cls", "SIZE",
                                  "TYPE_ID", "_setattr", "_cls", "__slots__"])
def test_reserved_field_names_are_refused_at_definition(name: str) -> None:
    namespace = {"__annotations__": {name: U8}, "__module__": __name__}
    with pytest.raises(MessageError, match=rf"Reserved.{name}: '{name}' is reserved .*\nhelp: "):
        message(type_id=60020)(type("Reserved", (), namespace))


# --- issue 15 item 13: definitions that cannot cross the wire ------------------------------


def test_frame_limit_matches_the_wire_format() -> None:
    from mycelium_mono.bus.transports import wire
    from mycelium_mono.messages import FRAME_HEADER_SIZE, FRAME_LIMIT

    assert (wire.MAX_FRAME, wire.HEADER.size) == (FRAME_LIMIT, FRAME_HEADER_SIZE)


def test_a_field_larger_than_the_frame_limit_is_refused() -> None:
    with pytest.raises(MessageError, match=r"Blob: its frame would be 100,0\d\d bytes .*"
                                           r"largest data \(Bytes\[100000\]\).*\nhelp: "):

        @message(type_id=60021)
        class Blob:
            data: Annotated[bytes, Bytes(100000)]


def test_the_largest_message_that_fits_a_frame_is_accepted_and_framed() -> None:
    from mycelium_mono.bus.transports.wire import MAX_FRAME, Outbound, decode_frame

    payload = MAX_FRAME - len(b"big.60022\0") - 30  # prefix and header

    @message(type_id=60022, topic="big")
    class Big:
        data: Annotated[bytes, Bytes(payload)]

    frame = Outbound(publisher=1).frame(Big(data=b"x" * payload))
    assert len(frame) == MAX_FRAME
    assert decode_frame(frame).message == Big(data=b"x" * payload)  # type: ignore[union-attr]


@pytest.mark.parametrize("topic", ["has space", "nul\0", "", "a..b", ".a", "a.", "wild.*",
                                   "tail.>", "tab\t", "ünïcode"])
def test_a_topic_that_no_transport_can_carry_is_refused(topic: str) -> None:
    with pytest.raises(MessageError, match=r"cannot cross the wire.*\nhelp: use ASCII letters"):
        message(type_id=60023, topic=topic)


def test_a_class_whose_default_topic_is_not_wire_safe_is_refused() -> None:
    with pytest.raises(MessageError, match=r"Prix€ \(its default topic\): topic 'prix€'"):
        message(type_id=60024)(type("Prix€", (), {"__annotations__": {"x": U8}}))


def test_dotted_topics_stay_valid() -> None:
    @message(type_id=60025, topic="orders.eu-west_1")
    class Order:
        x: U8

    assert Order.TOPIC == "orders.eu-west_1"


@message(type_id=60026)
class Reading:
    small: F32
    big: F64


@pytest.mark.parametrize("value", [1e39, -1e39, 2**128])
def test_f32_out_of_range_is_refused_at_construction(value: float) -> None:
    with pytest.raises(MessageError, match=r"Reading.small \(F32\) must be a float within"):
        Reading(small=value, big=0.0)


@pytest.mark.parametrize("value", [3.4028234663852886e38, -3.4028234663852886e38,
                                   float("inf"), float("nan"), 2**127])
def test_f32_accepts_every_value_struct_can_pack(value: float) -> None:
    reading = Reading(small=value, big=0.0)
    struct.pack("<f", reading.small)  # the remote publish that used to fail
    assert Reading.from_bytes(reading.to_bytes()).big == 0.0


def test_f64_overflow_is_a_clear_error_not_a_raw_overflow() -> None:
    with pytest.raises(MessageError, match=r"Reading.big \(F64\) must be a float, or an int a "
                                           r"float can hold, got int 1797"):
        Reading(small=0.0, big=2**1024)


# --- issue 15 item 14: Text[N] --------------------------------------------------------------


@message(type_id=60027, topic="shipments")
class Shipment:
    sku: Text[12]  # type: ignore[valid-type]
    qty: U32


def test_text_round_trips_as_str_with_the_padding_invisible() -> None:
    shipment = Shipment(sku="AB-12", qty=3)
    data = shipment.to_bytes()
    assert data[:12] == b"AB-12" + b"\0" * 7 and Shipment.SIZE == 16
    back = Shipment.from_bytes(data)
    assert back == shipment and back.sku == "AB-12" and type(back.sku) is str


def test_text_capacity_counts_utf8_bytes_not_characters() -> None:
    four = "€€€€"  # 4 characters, 12 bytes
    assert Shipment.from_bytes(Shipment(sku=four, qty=1).to_bytes()).sku == four
    with pytest.raises(MessageError, match=r"at most 12 bytes in UTF-8.*got str 'ééééééé' "
                                           r"\(14 bytes in UTF-8\)"):
        Shipment(sku="é" * 7, qty=1)


def test_text_exactly_at_capacity_and_empty_both_fit() -> None:
    for sku in ("x" * 12, ""):
        assert Shipment.from_bytes(Shipment(sku=sku, qty=1).to_bytes()).sku == sku


def test_text_too_long_is_a_clear_error() -> None:
    with pytest.raises(MessageError, match=r"Shipment.sku \(Text\[12\]\) must be a str of at "
                                           r"most 12 bytes"):
        Shipment(sku="x" * 13, qty=1)


@pytest.mark.parametrize("sku", ["A\0B", "AB\0", "\ud800", b"AB"])
def test_text_refuses_nul_lone_surrogates_and_bytes(sku: object) -> None:
    with pytest.raises(MessageError, match=r"Shipment.sku \(Text\[12\]\)"):
        Shipment(sku=sku, qty=1)  # type: ignore[arg-type]


def test_text_that_is_not_utf8_on_the_wire_decodes_without_raising() -> None:
    data = b"\xff\xfeAB" + b"\0" * 8 + (1).to_bytes(4, "little")
    assert Shipment.from_bytes(data).sku == "\ufffd\ufffdAB"


def test_text_and_bytes_of_one_size_have_different_fingerprints() -> None:
    @message(type_id=60028)
    class Coded:
        code: Text[4]  # type: ignore[valid-type]

    text_print = Coded.FINGERPRINT

    @message(type_id=60028)
    class Coded:  # type: ignore[no-redef]
        code: Annotated[bytes, Bytes(4)]

    assert text_print != Coded.FINGERPRINT


def test_text_is_exported_and_refuses_a_bad_capacity() -> None:
    import mycelium_mono

    assert mycelium_mono.Text is Text
    with pytest.raises(MessageError, match=r"Text capacity \(bytes in UTF-8\) must be a positive"):
        Text[0]


class _Describe:
    """A plain mixin: methods only, nothing that runs at construction."""

    def describe(self) -> str:
        return f"{type(self).__name__} of {self.qty}"  # type: ignore[attr-defined]


class _CountsInit:
    """A base whose own __init__ runs once per construction, as for any class."""

    calls: list[dict[str, object]] = []

    def __init__(self, **fields: object) -> None:
        _CountsInit.calls.append(fields)


def test_a_mixin_base_keeps_its_methods_and_the_message_semantics() -> None:
    @message(type_id=60090, topic="t")
    class Order(_Describe):
        qty: U64

    order = Order(qty=3)
    assert order.describe() == "Order of 3"
    assert Order.from_bytes(order.to_bytes()) == order
    with pytest.raises(AttributeError, match="immutable"):
        order.qty = 4  # type: ignore[misc]
    with pytest.raises(MessageError, match=r"Order\.qty"):
        Order(qty=-1)


def test_a_base_init_runs_once_per_construction_and_never_for_the_blank_object() -> None:
    # The generated __new__ makes its blank object by calling the slots base when that runs
    # no user code; a base with its own __init__ must not be called with no arguments there.
    @message(type_id=60091, topic="t")
    class Fill(_CountsInit):
        qty: U64

    _CountsInit.calls.clear()
    assert Fill(qty=5).qty == 5
    assert _CountsInit.calls == [{"qty": 5}]
    assert Fill.from_bytes(Fill(qty=6).to_bytes()).qty == 6
    assert _CountsInit.calls == [{"qty": 5}, {"qty": 6}]  # decoding calls no __init__


# --- an F32 field holds what the wire carries (stranger r04) -----------------------------


_F32_MAX = 3.4028234663852886e38  # the largest finite float32, 2**128 - 2**104


def _as_float32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def test_an_f32_value_is_rounded_at_construction_so_both_modes_read_the_same() -> None:
    reading = Reading(small=21.7, big=21.7)
    back = Reading.from_bytes(reading.to_bytes())
    assert reading.small == back.small == 21.700000762939453
    assert reading.big == 21.7  # F64 is a Python float exactly: nothing to round
    assert back == reading and hash(back) == hash(reading)
    # What a handler comparing with the literal decides, in process and after the wire.
    assert (reading.small > 21.7) is (back.small > 21.7) is True


def test_f32_rounding_holds_through_replace_pickle_and_an_int() -> None:
    reading = Reading(small=0.0, big=0.0)
    assert reading.replace(small=0.1).small == _as_float32(0.1)
    assert pickle.loads(pickle.dumps(Reading(small=0.1, big=0.0))).small == _as_float32(0.1)
    converted = Reading(small=2**100 + 1, big=0.0)  # the per-field path converts the int
    assert type(converted.small) is float and converted.small == float(2**100)


def test_f32_keeps_the_sign_of_zero_and_the_class_of_inf_and_nan() -> None:
    negative_zero = Reading(small=-0.0, big=0.0)
    assert math.copysign(1.0, negative_zero.small) == -1.0
    assert math.copysign(1.0, Reading.from_bytes(negative_zero.to_bytes()).small) == -1.0
    for value in (math.inf, -math.inf):
        assert Reading(small=value, big=0.0).small == value
    assert math.isnan(Reading(small=math.nan, big=0.0).small)


def test_the_largest_value_that_rounds_to_a_finite_float32_is_its_maximum() -> None:
    # Below the overflow threshold everything rounds to at most the float32 maximum.
    assert Reading(small=3.4028235e38, big=0.0).small == _F32_MAX
    just_below_overflow = math.nextafter(-float(2**128 - 2**103), 0.0)
    assert Reading(small=just_below_overflow, big=0.0).small == -_F32_MAX


def _assert_f32_round_trip(value: float | int) -> None:
    reading = Reading(small=value, big=1.0)
    back = Reading.from_bytes(reading.to_bytes())
    if math.isnan(float(value)):
        # nan != nan by IEEE; the class survives (see the F32 docstring).
        assert math.isnan(reading.small) and math.isnan(back.small)
        return
    assert reading.small == _as_float32(float(value))
    assert back == reading
    assert hash(back) == hash(reading)
    assert back.to_bytes() == reading.to_bytes()


@given(st.floats(width=32))
def test_every_float32_survives_the_round_trip_unchanged(value: float) -> None:
    _assert_f32_round_trip(value)


@given(st.floats(min_value=-_F32_MAX, max_value=_F32_MAX))
def test_every_float_in_range_is_equal_to_its_round_trip(value: float) -> None:
    _assert_f32_round_trip(value)


@given(st.integers(min_value=-(2**128 - 2**104), max_value=2**128 - 2**104))
def test_every_int_in_range_is_equal_to_its_round_trip(value: int) -> None:
    _assert_f32_round_trip(value)


def test_f64_nan_is_unequal_to_its_round_trip_as_in_any_record_type() -> None:
    # Documented, not changed: equality compares the fields with ==.
    reading = Reading(small=0.0, big=math.nan)
    assert Reading.from_bytes(reading.to_bytes()) != reading


# --- message classes are final (stranger r14) ---------------------------------------------


@message(type_id=60101, topic="final.reading")
class Counted:
    n: U32


def test_a_decorated_subclass_is_refused_at_the_class_statement() -> None:
    with pytest.raises(MessageError, match=r"Calibrated cannot subclass the message class "
                                           r"Counted: message classes are final") as info:
        @message(type_id=60102, topic="final.calibrated")
        class Calibrated(Counted):
            offset: U32
    assert "help: compose instead" in str(info.value)
    assert message_class(60102) is None


def test_an_undecorated_subclass_is_refused_too_even_behind_a_mixin() -> None:
    with pytest.raises(MessageError, match=r"WithHelpers cannot subclass .*Counted"):
        class WithHelpers(Counted):
            def doubled(self) -> int:
                return self.n * 2
    with pytest.raises(MessageError, match=r"Mixed cannot subclass .*Counted"):
        class Mixed(_Describe, Counted):
            pass
    assert isinstance(MessageError("x"), TypeError)  # what a caller may catch


def test_the_refusal_leaves_the_message_class_working() -> None:
    with pytest.raises(MessageError):
        class Sub(Counted):
            pass
    assert Counted.from_bytes(Counted(n=4).to_bytes()) == Counted(n=4)
    assert type(Counted(n=4)) is Counted


# --- the optional Message base (stranger r03) -----------------------------------------------


@message(type_id=60103, topic="based.order")
class BasedOrder(Message):
    sku: Annotated[str, Text(8)]
    qty: U32


@message(type_id=60104, topic="based.order")
class BasedOrder2:  # the same fields without the base, for comparison
    sku: Annotated[str, Text(8)]
    qty: U32


def test_the_message_base_changes_no_byte_and_no_member() -> None:
    order = BasedOrder(sku="AB", qty=3)
    plain = BasedOrder2(sku="AB", qty=3)
    assert order.to_bytes() == plain.to_bytes()
    assert BasedOrder.SIZE == BasedOrder2.SIZE and BasedOrder.FIELDS == BasedOrder2.FIELDS
    assert BasedOrder.from_bytes(order.to_bytes()) == order
    assert order.replace(qty=4) == BasedOrder(sku="AB", qty=4)
    assert not hasattr(order, "__dict__")
    assert isinstance(order, Message) and not isinstance(plain, Message)
    # The generated methods, not the base's declarations, are what runs.
    assert BasedOrder.to_bytes is not Message.to_bytes
    assert BasedOrder.__dict__["from_bytes"] is not Message.__dict__["from_bytes"]


def test_the_base_alone_says_it_needs_the_decorator() -> None:
    class Undecorated(Message):
        pass

    for call in (lambda: Undecorated().to_bytes(), lambda: Undecorated.from_bytes(b""),
                 lambda: Undecorated().replace()):
        with pytest.raises(MessageError, match=r"inherits Message but is not a @message class"):
            call()


def test_a_fingerprint_is_the_same_with_or_without_the_base() -> None:
    @message(type_id=60105, topic="based.x")
    class Probe(Message):
        n: U32

    with_base = Probe.FINGERPRINT

    @message(type_id=60105, topic="based.x")
    class Probe:  # type: ignore[no-redef]
        n: U32

    assert with_base == Probe.FINGERPRINT


def test_a_nul_inside_text_on_the_wire_ends_the_text() -> None:
    # A corrupt or foreign peer's frame: kept, it would be a value the constructor refuses.
    data = b"AB\0CD" + b"\0" * 7 + (1).to_bytes(4, "little")
    decoded = Shipment.from_bytes(data)
    assert decoded.sku == "AB"
    assert decoded.replace(qty=2) == Shipment(sku="AB", qty=2)
    assert Shipment.from_bytes(decoded.to_bytes()) == decoded


def test_invalid_utf8_that_outgrows_the_capacity_is_cut_to_fit() -> None:
    data = b"\xff" * 12 + (1).to_bytes(4, "little")  # 12 U+FFFD are 36 bytes in UTF-8
    decoded = Shipment.from_bytes(data)
    assert decoded.sku == "\ufffd" * 4
    assert decoded.replace(qty=2).sku == decoded.sku  # the constructor accepts what decode made
    assert Shipment.from_bytes(decoded.to_bytes()) == decoded
