"""A hospital pharmacy's messages against the README's "Messages" section (helper messages3).

Every field type is checked against a hand-written model of the README's table
(``messages3_reference``), by hypothesis over thousands of generated values with the
boundaries weighted in: construction accepts exactly what the table says and refuses the
rest with a MessageError naming the field; what is accepted round-trips through the bytes;
equality and hash are per type; replace() and pickling validate like construction; hostile
bytes, given to ``from_bytes`` and to the wire decoder, never crash and never build a message
holding a value its constructor would refuse.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import math
import pickle
import random
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Generic, Optional, Protocol, TypeVar

import messages3_reference as ref
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from messages3_reference import same_value

from mycelium_mono import (
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    U128,
    U256,
    Address,
    Bool,
    Bytes,
    Bytes32,
    Message,
    MessageError,
    Text,
    message,
)
from mycelium_mono.bus.transports.base import TransportStats
from mycelium_mono.bus.transports.wire import (
    HEADER,
    MAX_FRAME,
    Decoded,
    Dropped,
    DropReason,
    Inbound,
    Outbound,
    decode_body,
    decode_frame,
    wire_type,
)

# --- the pharmacy's messages ---------------------------------------------------------------


@message(type_id=47351, topic="pharmacy.dispense")
class Dispense(Message):
    patient_id: Bytes[16]              # a hospital patient id: 16 fixed bytes
    drug: Annotated[str, Text(24)]     # drug name
    code: Text[3]                      # a short ward code, capacity at a multibyte edge
    dose_mg: F32
    weight_kg: F64
    doses: U8
    ward: U16
    order_no: U32
    stock: U64
    lot: U128
    batch_hash: U256
    adjust8: I8
    adjust16: I16
    adjust32: I32
    adjust64: I64
    controlled: Bool
    pharmacist: Address
    label_digest: Bytes32
    flag_byte: Bytes[1]


# The same fields and values, another type: never equal to a Dispense.
@message(type_id=47352, topic="pharmacy.dispense")
class DispenseEcho(Message):
    patient_id: Bytes[16]
    drug: Annotated[str, Text(24)]
    code: Text[3]
    dose_mg: F32
    weight_kg: F64
    doses: U8
    ward: U16
    order_no: U32
    stock: U64
    lot: U128
    batch_hash: U256
    adjust8: I8
    adjust16: I16
    adjust32: I32
    adjust64: I64
    controlled: Bool
    pharmacist: Address
    label_digest: Bytes32
    flag_byte: Bytes[1]


MODEL: dict[str, ref.RefField] = {
    "patient_id": ref.bytes_of(16),
    "drug": ref.text_of(24),
    "code": ref.text_of(3),
    "dose_mg": ref.F32,
    "weight_kg": ref.F64,
    "doses": ref.U[8],
    "ward": ref.U[16],
    "order_no": ref.U[32],
    "stock": ref.U[64],
    "lot": ref.U[128],
    "batch_hash": ref.U[256],
    "adjust8": ref.I[8],
    "adjust16": ref.I[16],
    "adjust32": ref.I[32],
    "adjust64": ref.I[64],
    "controlled": ref.BOOL,
    "pharmacist": ref.bytes_of(20),
    "label_digest": ref.bytes_of(32),
    "flag_byte": ref.bytes_of(1),
}
NAMES = list(MODEL)


def test_the_model_describes_the_class_field_for_field() -> None:
    assert [n for n, _ in Dispense.FIELDS] == NAMES
    assert sum(f.size for f in MODEL.values()) == Dispense.SIZE


# --- values: every boundary of every table row, and everything a user might pass --------


class Ward(enum.IntEnum):
    ICU = 3


class Dose(float):
    pass


class PatientNo(int):
    pass


class DrugName(str):
    pass


class RawId(bytes):
    pass


_F32_MAX = float(2**128 - 2**104)
_F32_HALF = float(2**128 - 2**103)  # halfway to 2**128: rounds to inf (ties to even)


def _int_edges() -> list[int]:
    edges = {0, 1, -1}
    for bits in (8, 16, 32, 64, 128, 256):
        for signed in (False, True):
            lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed
                      else (0, (1 << bits) - 1))
            edges |= {lo - 1, lo, lo + 1, hi - 1, hi, hi + 1}
    # ints for the float fields: where float() overflows and where F32 rounding does
    edges |= {2**1024, 2**1024 - 1, -(2**1024), 2**1023, 2**128, 2**128 - 2**103,
              2**128 - 2**103 - 1, 2**128 - 2**104, 2**53 + 1}
    return sorted(edges)


_FLOAT_EDGES = [
    0.0, -0.0, 1.0, math.inf, -math.inf, math.nan, -math.nan, _F32_MAX, -_F32_MAX, _F32_HALF,
    -_F32_HALF, math.nextafter(_F32_HALF, 0), math.nextafter(_F32_HALF, math.inf), 3.4e38,
    3.41e38, 1.7976931348623157e308, 5e-324, 1.4e-45, 7e-46, 7.1e-46, -7e-46, 1.1754943508e-38,
    21.7, 0.1, 2.5,
]


def _text_edges() -> list[str]:
    out = ["", "\0", "a\0", "\0a", "\ud800", "a\udfff", "Ibuprofen", "Paracétamol", "\ufffd"]
    for n in (1, 2, 3, 4, 23, 24, 25):
        out += ["a" * n, "é" * n, "€" * n, "😀" * n, "a" * (n - 1) + "é"]
    return out


def _bytes_edges() -> list[bytes]:
    return [bytes(n) for n in (0, 1, 2, 15, 16, 17, 19, 20, 21, 31, 32, 33)] + [
        b"\xff" * 16, b"\0" * 20]


any_value = st.one_of(
    st.sampled_from(_int_edges()),
    st.integers(),
    st.booleans(),
    st.sampled_from(_FLOAT_EDGES),
    st.floats(),
    st.floats(width=32),
    st.sampled_from(_text_edges()),
    st.text(st.characters(blacklist_categories=()), max_size=30),
    st.sampled_from(_bytes_edges()),
    st.binary(max_size=40),
    st.binary(max_size=40).map(bytearray),
    st.binary(max_size=40).map(lambda b: memoryview(b)),
    st.sampled_from([Ward.ICU, PatientNo(5), Dose(1.5), DrugName("Aspirin"), RawId(bytes(16)),
                     RawId(bytes(20)), None, Fraction(1, 2), Decimal("1.5"), 1j, [1], (1,)]),
)


def valid_value(field: str) -> st.SearchStrategy[Any]:
    """Values the model accepts for ``field``, boundaries first."""
    model = MODEL[field]
    if model.kind in ("uint", "int"):
        edges = [v for v in _int_edges() if model.lo <= v <= model.hi]
        return st.one_of(st.sampled_from(edges), st.integers(model.lo, model.hi))
    if model.kind in ("f32", "f64"):
        return st.one_of(st.sampled_from(_FLOAT_EDGES), st.floats(),
                         st.sampled_from(_int_edges())).filter(model.would_accept)
    if model.kind == "bool":
        return st.booleans()
    if model.kind == "bytes":
        return st.binary(min_size=model.size, max_size=model.size)
    return st.one_of(st.sampled_from(_text_edges()),
                     st.text(st.characters(blacklist_categories=()), max_size=model.size)
                     ).filter(model.would_accept)


valid_fields = st.fixed_dictionaries({name: valid_value(name) for name in NAMES})


def held(values: dict[str, Any]) -> dict[str, Any]:
    return {name: MODEL[name].accept(values[name]) for name in NAMES}  # layout order


def model_bytes(values: dict[str, Any]) -> bytes:
    return b"".join(MODEL[n].encode(v) for n, v in held(values).items())


def fields_of(msg: Any) -> dict[str, Any]:
    return {name: getattr(msg, name) for name in NAMES}


def assert_holds(msg: Any, expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        got = getattr(msg, name)
        assert same_value(got, value), (name, got, value)


def first_refused(values: dict[str, Any]) -> str | None:
    for name in NAMES:
        if not MODEL[name].would_accept(values[name]):
            return name
    return None


SETTINGS = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def check_construction(values: dict[str, Any], build: Any) -> Any:
    """``build(values)`` against the model: refused naming the first bad field, or exact."""
    bad = first_refused(values)
    if bad is not None:
        with pytest.raises(MessageError) as caught:
            build(values)
        assert str(caught.value).startswith(f"Dispense.{bad} ("), (bad, str(caught.value))
        return None
    msg = build(values)
    assert type(msg) is Dispense
    assert_holds(msg, held(values))
    return msg


# --- construction, the bytes and equality, against the model -----------------------------


@SETTINGS
@given(valid_fields, st.sampled_from(NAMES), st.one_of(any_value, st.sampled_from([None])))
def test_one_field_of_any_value_is_accepted_or_refused_exactly_as_the_table_says(
    base: dict[str, Any], field: str, value: Any
) -> None:
    values = {**base, field: value}
    msg = check_construction(values, lambda v: Dispense(**v))
    if msg is None:
        return
    wire = msg.to_bytes()
    assert wire == model_bytes(values)
    back = Dispense.from_bytes(wire)
    assert_holds(back, held(values))
    if not any(type(v) is float and math.isnan(v) for v in fields_of(msg).values()):
        assert back == msg and hash(back) == hash(msg)


@SETTINGS
@given(st.fixed_dictionaries({name: st.one_of(valid_value(name), any_value) for name in NAMES}))
def test_many_bad_fields_at_once_name_the_first_in_declaration_order(
    values: dict[str, Any]
) -> None:
    check_construction(values, lambda v: Dispense(**v))
    check_construction(values, lambda v: Dispense(*(v[n] for n in NAMES)))  # positionally


@SETTINGS
@given(valid_fields)
def test_a_valid_prescription_round_trips_and_equality_is_per_type(values: dict[str, Any]) -> None:
    msg = Dispense(**values)
    wire = msg.to_bytes()
    assert len(wire) == Dispense.SIZE and wire == model_bytes(values)
    for buffer in (wire, bytearray(wire), memoryview(wire)):
        back = Dispense.from_bytes(buffer)
        assert type(back) is Dispense
        assert_holds(back, fields_of(msg))
    echo = DispenseEcho(**values)
    assert echo.to_bytes() == wire
    assert msg != echo and echo != msg  # same values, another type
    assert (msg == echo) is False  # __eq__ itself, not only __ne__
    has_nan = any(type(v) is float and math.isnan(v) for v in fields_of(msg).values())
    again = Dispense(**values)
    if has_nan:
        # README: NaN is the one value whose message is unequal to its own round trip
        assert Dispense.from_bytes(wire) != msg
    else:
        assert again == msg and hash(again) == hash(msg)
        assert Dispense.from_bytes(wire) == msg
        assert len({msg, again, echo}) == 2
    assert msg != fields_of(msg) and msg != tuple(fields_of(msg).values())


@SETTINGS
@given(valid_fields, st.sampled_from(NAMES), st.one_of(any_value, st.sampled_from([None])))
def test_replace_validates_exactly_like_construction_and_leaves_the_original(
    base: dict[str, Any], field: str, value: Any
) -> None:
    original = Dispense(**base)
    before = original.to_bytes()
    values = {**base, field: value}
    check_construction(values, lambda v: original.replace(**{field: v[field]}))
    assert original.to_bytes() == before


def test_replace_refuses_unknown_fields_and_a_positional_argument() -> None:
    rx = Dispense(**_sample())
    with pytest.raises(TypeError, match="unknown fields"):
        rx.replace(dose=5)
    with pytest.raises(TypeError):
        rx.replace({"doses": 2})  # type: ignore[call-arg]


@SETTINGS
@given(valid_fields)
def test_pickle_copy_and_deepcopy_as_documented(values: dict[str, Any]) -> None:
    msg = Dispense(**values)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(msg, protocol=protocol))
        assert type(back) is Dispense
        assert_holds(back, fields_of(msg))
    assert copy.copy(msg) is msg and copy.deepcopy(msg) is msg
    assert copy.deepcopy([msg])[0] is msg


class _ForgedPickle:
    """Pickles as a Dispense call with the given (hostile) values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __reduce__(self) -> tuple[Any, ...]:
        return (Dispense, tuple(self.values[n] for n in NAMES))


@pytest.mark.parametrize(("field", "value"), [
    ("doses", 256), ("adjust8", -129), ("controlled", 1), ("drug", "x" * 25),
    ("patient_id", bytes(15)), ("dose_mg", 1e39), ("code", "a\0"),
])
def test_unpickling_goes_through_the_constructor_checks(field: str, value: Any) -> None:
    data = pickle.dumps(_ForgedPickle({**_sample(), field: value}))
    with pytest.raises(MessageError, match=rf"^Dispense\.{field} \("):
        pickle.loads(data)


def _sample() -> dict[str, Any]:
    return dict(
        patient_id=b"P" * 16, drug="Amoxicillin", code="ICU", dose_mg=21.7, weight_kg=70.25,
        doses=3, ward=12, order_no=99, stock=1200, lot=2**100, batch_hash=2**255 + 1,
        adjust8=-1, adjust16=-300, adjust32=-70000, adjust64=-(2**40), controlled=True,
        pharmacist=b"\x11" * 20, label_digest=b"\x22" * 32, flag_byte=b"\x01",
    )


def test_f32_holds_the_float32_value_from_the_start() -> None:
    rx = Dispense(**_sample())
    assert rx.dose_mg == 21.700000762939453 == ref.round_to_float32(21.7)
    assert Dispense.from_bytes(rx.to_bytes()) == rx


def test_instances_are_immutable_in_every_ordinary_way() -> None:
    rx = Dispense(**_sample())
    for name in [*NAMES, "extra", "__class__"]:
        with pytest.raises(AttributeError):
            setattr(rx, name, 1)
        with pytest.raises(AttributeError):
            delattr(rx, name)
    with pytest.raises(AttributeError):
        object.__setattr__(rx, "extra", 1)  # slotted: no __dict__ to put it in
    assert not hasattr(rx, "__dict__")
    assert Dispense(**_sample()) == rx


# --- hostile bytes ---------------------------------------------------------------------


def assert_constructible(msg: Any) -> None:
    """What a decoder built holds only values its constructor accepts, and rebuilds alike."""
    values = fields_of(msg)
    for name, value in values.items():
        assert MODEL[name].would_accept(value), (name, value)
    rebuilt = type(msg)(**values)
    assert_holds(rebuilt, values)
    assert_holds(msg.replace(), values)
    assert_holds(pickle.loads(pickle.dumps(msg)), values)
    # a decoded message's bytes decode to the same message (the first decode normalises)
    assert_holds(type(msg).from_bytes(msg.to_bytes()), values)


@SETTINGS
@given(st.binary(min_size=Dispense.SIZE, max_size=Dispense.SIZE))
@example(b"\xff" * Dispense.SIZE)
@example(b"\x00" * Dispense.SIZE)
@example(b"\x80" * Dispense.SIZE)
def test_random_bytes_of_the_right_size_decode_to_a_message_its_constructor_accepts(
    raw: bytes,
) -> None:
    msg = Dispense.from_bytes(raw)
    assert type(msg) is Dispense
    assert_constructible(msg)
    assert_holds(Dispense.from_bytes(bytearray(raw)), fields_of(msg))
    assert_holds(Dispense.from_bytes(memoryview(raw)), fields_of(msg))


def _offset_of(field: str) -> int:
    return sum(MODEL[n].size for n in NAMES[:NAMES.index(field)])


def _text_slots() -> list[tuple[int, int]]:
    """(offset, capacity) of each Text field in Dispense's layout."""
    out, offset = [], 0
    for name in NAMES:
        if MODEL[name].kind == "text":
            out.append((offset, MODEL[name].size))
        offset += MODEL[name].size
    return out


@SETTINGS
@given(valid_fields, st.data())
def test_text_bytes_a_peer_got_wrong_still_decode_to_acceptable_text(
    values: dict[str, Any], data: st.DataObject
) -> None:
    raw = bytearray(Dispense(**values).to_bytes())
    for offset, capacity in _text_slots():
        junk = data.draw(st.one_of(
            st.binary(min_size=capacity, max_size=capacity),
            st.sampled_from([b"\xe2\x82" * capacity, b"\xed\xa0\x80" * capacity,
                             "é".encode() * capacity, b"\xf0\x9f\x98" * capacity]),
        ).map(lambda b, c=capacity: b[:c].ljust(c, b"\0")))
        raw[offset:offset + capacity] = junk
    msg = Dispense.from_bytes(bytes(raw))
    assert_constructible(msg)


@SETTINGS
@given(st.binary(max_size=3 * Dispense.SIZE).filter(lambda b: len(b) != Dispense.SIZE))
def test_bytes_of_any_other_length_are_a_message_error(raw: bytes) -> None:
    for buffer in (raw, bytearray(raw), memoryview(raw)):
        with pytest.raises(MessageError, match=rf"needs exactly {Dispense.SIZE} bytes, got "
                                               rf"{len(raw)}$"):
            Dispense.from_bytes(buffer)


# --- the wire decoder on hostile frames ------------------------------------------------


def _check_outcome(result: Decoded | Dropped) -> None:
    assert isinstance(result, Decoded | Dropped)
    if isinstance(result, Decoded) and result.message is not None:
        assert type(result.message) is Dispense
        assert_constructible(result.message)


def _mutations(frame: bytes, rng: random.Random) -> list[bytes]:
    out = [frame[:cut] for cut in range(0, len(frame), 7)]  # every truncation, sampled
    for _ in range(20):
        data = bytearray(frame)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        out.append(bytes(data))
    out += [frame + b"\0", frame + rng.randbytes(rng.randrange(1, 50)),
            frame[:40] + frame[41:], rng.randbytes(len(frame)),
            frame + bytes(MAX_FRAME), b"", b"\0", HEADER.pack(b"MY", 1, 0, 0, 0, 0, 0)]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_fields, st.integers(0, 2**32))
def test_mutated_frames_decode_or_drop_and_every_drop_is_counted(
    values: dict[str, Any], seed: int
) -> None:
    msg = Dispense(**values)
    out = Outbound()
    frame, body = out.frame(msg), out.body(msg)
    subject = wire_type(Dispense).subject
    good = decode_frame(frame)
    assert isinstance(good, Decoded)
    assert_holds(good.message, fields_of(msg))
    good_body = decode_body(body, subject)
    assert isinstance(good_body, Decoded)
    assert_holds(good_body.message, fields_of(msg))
    rng = random.Random(seed)
    stats = TransportStats()
    inbound = Inbound(stats)
    drops = 0
    for bad in _mutations(frame, rng):
        result = decode_frame(bad)
        _check_outcome(result)
        if isinstance(result, Dropped):
            inbound.drop(result)
            drops += 1
    for bad in _mutations(body, rng):
        for result in (decode_body(bad, subject), decode_body(bad)):
            _check_outcome(result)
            if isinstance(result, Dropped):
                inbound.drop(result)
                drops += 1
    counted = sum(v for k, v in stats.extra.items() if k.startswith("drop_"))
    assert counted == drops
    malformed = sum(stats.extra.get(f"drop_{r.value}", 0) for r in DropReason
                    if r not in (DropReason.UNKNOWN_TYPE, DropReason.FINGERPRINT_MISMATCH))
    assert stats.dropped_malformed == malformed
    assert stats.dropped_unknown_type == stats.extra.get("drop_unknown_type", 0)
    assert decode_frame(frame + b"\0").reason is DropReason.WRONG_LENGTH  # type: ignore[union-attr]
    assert decode_frame(frame[:-1]).reason is DropReason.WRONG_LENGTH  # type: ignore[union-attr]


# --- class definitions: refused where they are written --------------------------------

_TOPIC_PART = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
                      min_size=1, max_size=70)


def _stock_alert(topic: str) -> type[Any]:
    @message(type_id=47361, topic=topic)
    class StockAlert:
        level: U32

    return StockAlert


@settings(max_examples=200, deadline=None)
@given(st.lists(_TOPIC_PART, min_size=1, max_size=7).map(".".join))
@example("pharmacy." + "x" * 240)
@example("x" * 248)
@example("x" * 249)
@example("x" * 250)
@example("ward." * 60 + "icu")
def test_every_topic_message_accepts_can_be_framed_and_decoded(topic: str) -> None:
    # README: "A definition that could not cross the wire is refused at @message". The
    # ZeroMQ frame's prefix is "<topic>.<type_id>\0", and the decoder reads at most
    # MAX_PREFIX bytes of it: a longer topic was accepted here and every one of its frames
    # was dropped as bad_prefix by every receiving peer.
    try:
        cls = _stock_alert(topic)
    except MessageError as exc:
        assert len(f"{topic}.47361\0") > 256, str(exc)
        assert "topic" in str(exc) and "help:" in str(exc)
        return
    out = Outbound()
    sent = cls(level=7)
    got = decode_frame(out.frame(sent))
    assert isinstance(got, Decoded), (len(topic), got)
    assert got.message == sent
    body = decode_body(out.body(sent), wire_type(cls).subject)
    assert isinstance(body, Decoded) and body.message == sent


def test_a_topic_whose_prefix_fits_exactly_is_accepted_and_one_byte_more_is_refused() -> None:
    from mycelium_mono.bus.transports.wire import MAX_PREFIX
    from mycelium_mono.messages import FRAME_PREFIX_LIMIT

    assert FRAME_PREFIX_LIMIT == MAX_PREFIX  # messages.py mirrors it (no import of bus/)

    fits = "t" * (MAX_PREFIX - len(".47361\0"))
    assert isinstance(decode_frame(Outbound().frame(_stock_alert(fits)(level=1))), Decoded)
    with pytest.raises(MessageError, match=r"topic .* bytes"):
        _stock_alert(fits + "t")


T = TypeVar("T")


def test_a_generic_message_is_refused_with_a_message_error_naming_the_class() -> None:
    # It used to fail deep inside @message with a bare TypeError ("Cannot inherit from plain
    # Generic") that named neither the class nor what to do.
    with pytest.raises(MessageError, match=r"Batch.*generic(.|\n)*help:"):
        @message(type_id=47362, topic="pharmacy.batch")
        class Batch(Generic[T]):
            count: U32

    with pytest.raises(MessageError, match=r"Batch.*generic"):
        @message(type_id=47362, topic="pharmacy.batch")
        class Batch(Message, Generic[T]):  # type: ignore[no-redef]
            count: U32


class _Describable(Protocol):
    def describe(self) -> str:
        return f"{type(self).__name__} x{self.doses}"  # type: ignore[attr-defined]


class _Box(Generic[T]):
    def unit(self) -> str:
        return "mg"


def test_a_protocol_or_parametrised_generic_mixin_still_works() -> None:
    @message(type_id=47369, topic="pharmacy.mixins")
    class Refill(_Describable, _Box[int]):
        doses: U8

    refill = Refill(doses=2)
    assert refill.describe() == "Refill x2" and refill.unit() == "mg"
    assert Refill.from_bytes(refill.to_bytes()) == refill


def _method(self: Any, *args: Any, **kwargs: Any) -> Any:
    return NotImplemented


@pytest.mark.parametrize("member", [
    "__eq__", "__hash__", "__setattr__", "__delattr__", "__new__", "__reduce__", "__copy__",
    "__deepcopy__", "replace", "to_bytes", "from_bytes", "TYPE_ID", "TOPIC", "SIZE", "FIELDS",
    "FINGERPRINT", "__match_args__",
])
def test_a_member_message_generates_written_in_the_class_body_is_refused(member: str) -> None:
    # These were silently replaced by the generated ones: a pharmacist's own __eq__ (say, one
    # that ignores the stock count), a to_bytes() or a TYPE_ID = 9 were dropped without a word.
    namespace = {"__annotations__": {"count": U32, "drug": Text[24]}, member: _method}
    cls = type("StockCount", (), namespace)
    with pytest.raises(MessageError, match=rf"StockCount\.{member}(.|\n)*help:"):
        message(type_id=47363, topic="pharmacy.stock")(cls)


def test_a_dataclass_under_message_is_refused_at_the_class_statement() -> None:
    import dataclasses

    with pytest.raises(MessageError, match="dataclass"):
        @message(type_id=47364, topic="pharmacy.stock")
        @dataclasses.dataclass(frozen=True)
        class Restock:
            count: U32


def test_a_custom_repr_that_hides_the_patient_id_is_kept() -> None:
    # Like a dataclass, a __repr__ the class writes itself wins (it used to be replaced by
    # the generated one, printing the patient id into every log line the author had masked).
    @message(type_id=47365, topic="pharmacy.admission")
    class Admission:
        patient_id: Bytes[16]
        ward: U16

        def __repr__(self) -> str:
            return f"Admission(patient_id=<redacted>, ward={self.ward})"

    seen = Admission(patient_id=b"MRN-000123456789", ward=4)
    assert repr(seen) == "Admission(patient_id=<redacted>, ward=4)"
    assert Admission.from_bytes(seen.to_bytes()) == seen


def test_a_mixin_with_its_own_new_is_refused_since_it_would_never_run() -> None:
    class Audited:
        created: ClassVar[list[object]] = []

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            obj = super().__new__(cls)
            Audited.created.append(obj)
            return obj

    with pytest.raises(MessageError, match=r"Audited\.__new__(.|\n)*help:"):
        @message(type_id=47366, topic="pharmacy.audit")
        class Issue(Audited):
            count: U32


def test_definition_mistakes_each_name_the_class_and_the_field() -> None:
    with pytest.raises(MessageError, match=r"Bad\.dose: int has no wire layout"):
        @message(type_id=47367, topic="pharmacy.bad")
        class Bad:
            dose: int
    with pytest.raises(MessageError, match=r"Bad\.dose: Optional has no wire layout"):
        @message(type_id=47367, topic="pharmacy.bad")
        class Bad:  # type: ignore[no-redef]
            dose: Optional[U32]  # noqa: UP045
    with pytest.raises(MessageError, match=r"Bad: cannot resolve .*Dosage"):
        @message(type_id=47367, topic="pharmacy.bad")
        class Bad:  # type: ignore[no-redef]
            dose: Dosage  # type: ignore[name-defined]  # noqa: F821
    with pytest.raises(MessageError, match=r"Bad\.doses: message fields cannot have defaults"):
        @message(type_id=47367, topic="pharmacy.bad")
        class Bad:  # type: ignore[no-redef]
            doses: U8 = 1
    with pytest.raises(MessageError, match=r"Bad\._doses: '_doses' is reserved"):
        @message(type_id=47367, topic="pharmacy.bad")
        class Bad:  # type: ignore[no-redef]
            _doses: U8
    with pytest.raises(MessageError, match=r"type_id 47351 is used by both .*Dispense"):
        @message(type_id=47351, topic="pharmacy.bad")
        class Bad:  # type: ignore[no-redef]
            doses: U8
    with pytest.raises(MessageError, match=r"cannot subclass the message class Dispense"):
        class Urgent(Dispense):  # type: ignore[misc]
            pass

    @message(type_id=47368, topic="pharmacy.ok")
    class WithClassVar:
        doses: U8
        MAX_DOSES: ClassVar[int] = 8  # a ClassVar is no field

    assert [n for n, _ in WithClassVar.FIELDS] == ["doses"]
    assert WithClassVar.MAX_DOSES == 8 and WithClassVar.SIZE == 1


# --- a live ZeroMQ subscriber fed hostile frames by a raw socket -----------------------


@pytest.mark.network
async def test_a_live_zeromq_subscriber_delivers_only_constructible_prescriptions() -> None:
    import zmq
    import zmq.asyncio
    from helpers_fuzz import accounted, mutate
    from peers.harness import until
    from peers.inlet import ListInlet

    from mycelium_mono.bus.transports.zmq import ZmqTransport

    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.XPUB)  # the hostile peer
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind("tcp://127.0.0.1:0")
    got: list[Any] = []
    transport = ZmqTransport("127.0.0.1:0")
    await transport.start(ListInlet(got))
    try:
        transport.subscribe(Dispense)
        await transport.connect_to(raw.getsockopt_string(zmq.LAST_ENDPOINT))
        prefix = wire_type(Dispense).prefix
        assert await asyncio.wait_for(raw.recv(), 10) == b"\x01" + prefix
        rng = random.Random(47351)
        out = Outbound()
        sample = Dispense(**_sample())
        frames: list[bytes] = []
        junk_payloads = 0
        for _ in range(300):
            frame = bytearray(out.frame(sample))
            payload_at = len(frame) - Dispense.SIZE
            for offset, capacity in _text_slots():  # a peer's text that is not UTF-8
                start = payload_at + offset
                frame[start:start + capacity] = rng.randbytes(capacity)
            frame[payload_at + _offset_of("controlled")] = rng.randrange(256)  # Bool: any byte
            frames.append(bytes(frame))
            junk_payloads += 1
            frames.append(prefix + mutate(out.frame(sample)[len(prefix):], rng))
        before = accounted(transport.stats)
        for frame in frames:
            await raw.send(frame)
        await until(lambda: accounted(transport.stats) == before + len(frames), timeout=20)
        assert len(got) >= junk_payloads  # each of these had a valid header and length
        for msg in got:
            assert type(msg) is Dispense
            assert_constructible(msg)
        # still alive: a clean prescription from a new publisher arrives as sent
        got.clear()
        await raw.send(Outbound().frame(sample))
        await until(lambda: len(got) == 1)
        assert got == [sample]
    finally:
        await transport.close()
        raw.close()
        ctx.term()


# --- classes made with type(), and buffers that are not bytes ---------------------------


@pytest.mark.parametrize(("type_id", "name"), list(enumerate(
    ["Dose'Check", "Dose{doses}", "Dose}", 'Dose"', "Dose\\", "Dose'''"], start=47370)))
def test_a_class_made_by_type_with_any_name_becomes_a_working_message(
    type_id: int, name: str
) -> None:
    # A formulary loader that names classes from its table (type(name, (), ns)): a quote or
    # a brace in the name used to end up inside the generated source, a SyntaxError at
    # @message ("unterminated string literal") or a NameError at the first repr().
    cls = message(type_id=type_id, topic="pharmacy.formulary")(
        type(name, (), {"__annotations__": {"doses": U8}}))
    made = cls(doses=2)
    assert repr(made) == f"{name}(doses=2)"
    assert cls.from_bytes(made.to_bytes()) == made


@message(type_id=47380, topic="pharmacy.window")
class DoseWindow(Message):
    first_minute: U16
    last_minute: U16
    max_doses: U32


def test_a_wrong_length_memoryview_of_wide_items_reports_its_bytes() -> None:
    # The error used to report len() of the view (items, here 4 bytes each), not its bytes.
    window = DoseWindow(first_minute=480, last_minute=1200, max_doses=4)
    raw = window.to_bytes()
    assert DoseWindow.from_bytes(memoryview(raw).cast("I")) == window
    for wrong in (raw[:4], raw + bytes(4)):
        with pytest.raises(MessageError, match=rf"needs exactly 8 bytes, got {len(wrong)}$"):
            DoseWindow.from_bytes(memoryview(wrong).cast("I"))


@pytest.mark.parametrize("dose", [2**200, 2**128, -(2**128 - 2**103)])
def test_an_int_too_big_for_f32_is_reported_as_the_int_that_was_passed(dose: int) -> None:
    # The error used to show the float it had converted the int to ("got float 1.6e+60")
    # beside "or an int in that range", a value the caller never wrote.
    with pytest.raises(MessageError) as caught:
        Dispense(**{**_sample(), "dose_mg": dose})
    text = str(caught.value)
    assert text.startswith("Dispense.dose_mg (F32) must be")
    assert f"got int {dose!r}"[:60] in text, text


# --- a hostile peer's text must not stall the decoder ----------------------------------


@message(type_id=47390, topic="pharmacy.notes")
class ClinicalNote(Message):
    mrn: Bytes[16]
    body: Annotated[str, Text(65_000)]  # free-text dispensing instructions


def _reference_wire_text(raw: bytes, capacity: int) -> str:
    """README: non-UTF-8 decodes with U+FFFD; the result must fit the field (the model)."""
    text = raw.partition(b"\0")[0].decode("utf-8", "replace")
    while len(text.encode()) > capacity:  # the longest prefix that fits, char by char
        text = text[:-1]
    return text


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=24, max_size=24))
def test_text_a_peer_got_wrong_is_cut_to_the_longest_prefix_that_fits(raw: bytes) -> None:
    values = {**_sample(), "drug": "x"}
    wire = bytearray(Dispense(**values).to_bytes())
    at = _offset_of("drug")
    wire[at:at + 24] = raw
    assert Dispense.from_bytes(bytes(wire)).drug == _reference_wire_text(raw, 24)


def _best_of(fn: Any, runs: int = 3) -> float:
    import time

    best = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_a_frame_of_invalid_utf8_text_decodes_in_time_linear_in_its_size() -> None:
    # 65,000 bytes of 0xFF decode to 65,000 U+FFFD (195,000 bytes in UTF-8), which must be
    # cut to 65,000 bytes. Cut one character at a time, re-encoding the whole text each time,
    # that took 11 s for one frame here, on the event loop of the subscriber receiving it.
    # Compared with one plain decode of the same bytes (so machine load cancels out): the
    # char-by-char cut was ~20,000x that; a linear one is a few times it.
    hostile = b"\0" * 16 + b"\xff" * 65_000
    frame = Outbound().frame(ClinicalNote(mrn=bytes(16), body=""))[:-ClinicalNote.SIZE] + hostile
    result = decode_frame(frame)
    assert isinstance(result, Decoded)
    note = result.message
    assert len(note.body.encode()) <= 65_000 and set(note.body) == {"\ufffd"}
    assert_holds(note.replace(), {"body": note.body})
    baseline = _best_of(lambda: hostile.decode("utf-8", "replace"))
    decode = _best_of(lambda: ClinicalNote.from_bytes(hostile))
    assert decode < max(200 * baseline, 0.05), (decode, baseline)


@pytest.mark.parametrize("field", ["doses", "batch_hash", "adjust64", "weight_kg", "dose_mg"])
@pytest.mark.parametrize("value", [10**5000, -(10**5000)], ids=["big", "negative"])
def test_an_int_too_long_to_print_is_still_a_message_error_naming_the_field(
    field: str, value: int
) -> None:
    # Python refuses str() of an int past 4,300 digits (ValueError): building the error text
    # for such a value raised that ValueError instead of the field's MessageError.
    with pytest.raises(MessageError, match=rf"^Dispense\.{field} \(.*got int .*bits"):
        Dispense(**{**_sample(), field: value})
