"""An energy grid's messages against the README's "Messages" section (helper messages9).

Meter readings, price signals and dispatch orders, written by someone who read only the README:
every field type at its boundaries, a hypothesis round trip over every type at once, the
refusals (construction and replace() alike), what a message is (immutable, hashable per type,
a ``match`` class pattern), and the ordinary Python a user brings to a class body: an ABC or
Protocol mixin, zero-argument ``super()``, a dataclass-style ``__post_init__``. Frames from
other peers go through ``from_bytes``, the wire decoder and a live ZeroMQ subscriber.
"""

from __future__ import annotations

import abc
import asyncio
import copy
import enum
import functools
import math
import pickle
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, NewType, Protocol

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers.harness import until
from peers.inlet import ListInlet

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
from mycelium_mono.bus import MessageBus
from mycelium_mono.bus.transports.base import TransportStats
from mycelium_mono.bus.transports.wire import (
    HEADER,
    MAGIC,
    VERSION,
    Decoded,
    Dropped,
    DropReason,
    Inbound,
    Outbound,
    decode_frame,
    wire_type,
)
from mycelium_mono.bus.transports.zmq import ZmqTransport

# --- the grid's messages (type ids 39600-39699) ---------------------------------------------


@message(type_id=39600, topic="grid.meter")
class MeterReading(Message):
    meter: Address                   # the meter's 20-byte id
    feeder: U8
    substation: U16
    interval: U32
    energy_wh: U64
    lifetime_mwh: U128
    settlement_hash: U256
    tariff_adj: I8
    temp_dk: I16                     # decikelvin offset
    net_w: I32                       # negative: the house exports
    balance_mwh: I64
    voltage: F32
    frequency: F64
    tampered: Bool
    site: Annotated[str, Text(16)]
    digest: Bytes32
    phase: Bytes[3]


@message(type_id=39601, topic="grid.meter")
class MeterEcho(Message):
    """The same fields as MeterReading, another type id: never equal to a MeterReading."""

    meter: Address
    feeder: U8
    substation: U16
    interval: U32
    energy_wh: U64
    lifetime_mwh: U128
    settlement_hash: U256
    tariff_adj: I8
    temp_dk: I16
    net_w: I32
    balance_mwh: I64
    voltage: F32
    frequency: F64
    tampered: Bool
    site: Annotated[str, Text(16)]
    digest: Bytes32
    phase: Bytes[3]


@message(type_id=39602, topic="grid.dispatch")
class DispatchOrder(Message):
    unit: U16
    setpoint_kw: I32
    ramp: F32


INTS: dict[str, tuple[int, int]] = {
    "feeder": (0, 2**8 - 1),
    "substation": (0, 2**16 - 1),
    "interval": (0, 2**32 - 1),
    "energy_wh": (0, 2**64 - 1),
    "lifetime_mwh": (0, 2**128 - 1),
    "settlement_hash": (0, 2**256 - 1),
    "tariff_adj": (-(2**7), 2**7 - 1),
    "temp_dk": (-(2**15), 2**15 - 1),
    "net_w": (-(2**31), 2**31 - 1),
    "balance_mwh": (-(2**63), 2**63 - 1),
}
BYTES: dict[str, int] = {"meter": 20, "digest": 32, "phase": 3}


def reading(**changes: Any) -> MeterReading:
    values: dict[str, Any] = dict(
        meter=b"\x11" * 20, feeder=7, substation=300, interval=96, energy_wh=1_250,
        lifetime_mwh=10**30, settlement_hash=2**255 + 1, tariff_adj=-3, temp_dk=-120,
        net_w=-4_200, balance_mwh=-(10**15), voltage=230.25, frequency=49.98, tampered=False,
        site="Umspannwerk-Süd", digest=bytes(range(32)), phase=b"L1N",
    )
    values.update(changes)
    return MeterReading(**values)


def f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


# --- hypothesis: every valid value round-trips; replace and construction agree ---------------

finite_f32 = st.floats(width=32, allow_nan=False)
readings = st.builds(
    MeterReading,
    meter=st.binary(min_size=20, max_size=20),
    feeder=st.integers(*INTS["feeder"]),
    substation=st.integers(*INTS["substation"]),
    interval=st.integers(*INTS["interval"]),
    energy_wh=st.integers(*INTS["energy_wh"]),
    lifetime_mwh=st.integers(*INTS["lifetime_mwh"]),
    settlement_hash=st.integers(*INTS["settlement_hash"]),
    tariff_adj=st.integers(*INTS["tariff_adj"]),
    temp_dk=st.integers(*INTS["temp_dk"]),
    net_w=st.integers(*INTS["net_w"]),
    balance_mwh=st.integers(*INTS["balance_mwh"]),
    voltage=finite_f32,
    frequency=st.floats(allow_nan=False),
    tampered=st.booleans(),
    site=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                 max_size=5).filter(lambda s: len(s.encode()) <= 16),
    digest=st.binary(min_size=32, max_size=32),
    phase=st.binary(min_size=3, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(readings)
def test_every_valid_reading_round_trips_through_bytes_pickle_and_copies(m: MeterReading) -> None:
    raw = m.to_bytes()
    assert len(raw) == MeterReading.SIZE
    back = MeterReading.from_bytes(raw)
    assert back == m and hash(back) == hash(m) and back.to_bytes() == raw
    assert MeterReading.from_bytes(bytearray(raw)) == m
    assert MeterReading.from_bytes(memoryview(raw)) == m
    assert pickle.loads(pickle.dumps(m)) == m
    assert copy.copy(m) is m and copy.deepcopy({"r": [m]})["r"][0] is m
    assert m.replace() == m and m.replace() is not m
    # The same values under another type are another message.
    echo = MeterEcho.from_bytes(raw)
    assert echo != m and m != echo and echo.to_bytes() == raw
    assert len({m, echo, back}) == 2


class MeterId(enum.IntEnum):
    MAIN = 1


class NumpyLikeInt:
    """What numpy.int64 looks like to a field: an __index__, not an int."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __index__(self) -> int:
        return self.v


class FloatSub(float):
    pass


def bad_values(field: str) -> list[Any]:
    if field in INTS:
        lo, hi = INTS[field]
        return [lo - 1, hi + 1, True, False, MeterId.MAIN, NumpyLikeInt(1), 1.0, "1", None,
                -(2**300), 2**300]
    if field in BYTES:
        n = BYTES[field]
        return [b"\0" * (n - 1), b"\0" * (n + 1), bytearray(n), memoryview(bytes(n)),
                "x" * n, None, n]
    if field == "voltage":
        return [3.5e38, -3.5e38, 2**200, "1.0", None, True, FloatSub(1.0)]
    if field == "frequency":
        return [2**1024, "1.0", None, True, FloatSub(1.0)]
    if field == "tampered":
        return [1, 0, None, "True"]
    assert field == "site"
    return ["x" * 17, "€" * 6, "a\0b", "\ud800", b"site", None, 5]


BAD = [(f, v) for f in [n for n, _ in MeterReading.FIELDS] for v in bad_values(f)]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_a_bad_value_is_refused_alike_by_construction_replace_and_unpickling(
    field: str, value: Any,
) -> None:
    good = reading()
    with pytest.raises(MessageError) as built:
        reading(**{field: value})
    with pytest.raises(MessageError) as replaced:
        good.replace(**{field: value})
    assert str(built.value) == str(replaced.value)
    assert str(built.value).startswith(f"MeterReading.{field} (")
    # What pickle.loads calls with the recorded values: the class itself.
    rebuild, values = good.__reduce__()
    forged = list(values)
    forged[[n for n, _ in MeterReading.FIELDS].index(field)] = value
    with pytest.raises(MessageError) as unpickled:
        rebuild(*forged)
    assert str(unpickled.value) == str(built.value)
    assert good == reading()                                       # left as it was


def test_each_integer_width_takes_its_exact_bounds_and_stores_plain_ints() -> None:
    for field, (lo, hi) in INTS.items():
        for v in (lo, hi, 0):
            m = reading(**{field: v})
            back = MeterReading.from_bytes(m.to_bytes())
            assert getattr(back, field) == v and type(getattr(back, field)) is int
    # Each conversion hint names the cure when the plain value would fit.
    with pytest.raises(MessageError, match=r"pass int\(value\)"):
        reading(feeder=MeterId.MAIN)
    with pytest.raises(MessageError, match=r"pass int\(value\)"):
        reading(feeder=NumpyLikeInt(3))
    with pytest.raises(MessageError, match=r"pass bytes\(value\)"):
        reading(phase=bytearray(b"L2N"))


def test_floats_hold_what_the_wire_carries() -> None:
    m = reading(voltage=230.1, frequency=50)
    assert m.voltage == f32(230.1) != 230.1 and type(m.frequency) is float
    negative_zero = reading(voltage=-0.0).voltage
    assert negative_zero == 0.0 and math.copysign(1, negative_zero) < 0
    inf = reading(voltage=math.inf, frequency=-math.inf)
    assert MeterReading.from_bytes(inf.to_bytes()) == inf
    nan = reading(frequency=math.nan)
    assert math.isnan(MeterReading.from_bytes(nan.to_bytes()).frequency)


# --- what a message is ------------------------------------------------------------------------


def test_a_reading_is_immutable_hashable_and_matches_class_patterns() -> None:
    m = reading()
    for attempt in (lambda: setattr(m, "feeder", 1), lambda: delattr(m, "feeder"),
                    lambda: setattr(m, "extra", 1), lambda: setattr(m, "__class__", MeterEcho)):
        with pytest.raises(AttributeError, match=r"immutable.*replace"):
            attempt()
    assert not hasattr(m, "__dict__")
    assert m.feeder == 7 and type(m) is MeterReading
    assert {m: "x"}[reading()] == "x"
    assert m != tuple(getattr(m, n) for n, _ in MeterReading.FIELDS)
    order = DispatchOrder(unit=4, setpoint_kw=-250, ramp=0.5)
    match order:
        case MeterReading():
            raise AssertionError("a dispatch order is no meter reading")
        case DispatchOrder(unit, setpoint, ramp=r) if setpoint < 0:
            assert (unit, setpoint, r) == (4, -250, 0.5)
        case _:
            raise AssertionError("the class pattern did not match")
    assert eval(repr(order)) == order


# --- class bodies a user writes (fixed here) --------------------------------------------------


class Priced(abc.ABC):
    @abc.abstractmethod
    def cost_eur(self) -> float: ...

    @property
    @abc.abstractmethod
    def zone(self) -> int: ...


@message(type_id=39610, topic="grid.price")
class PriceSignal(Priced, Message):
    zone: U8                       # a field implements the abstract property
    eur_mwh: F64
    mwh: U32

    def cost_eur(self) -> float:
        return self.eur_mwh * self.mwh


class Dispatchable(Protocol):
    @abc.abstractmethod
    def target_kw(self) -> int: ...


@message(type_id=39611, topic="grid.dispatch")
class BatteryDispatch(Dispatchable):
    unit: U16
    kw: I32

    def target_kw(self) -> int:
        return self.kw


def test_an_abc_mixin_whose_abstract_methods_the_message_implements_can_be_built() -> None:
    # Before the fix: "Can't instantiate abstract class PriceSignalFields with abstract
    # method cost_eur, zone" at every construction, decode and unpickling.
    p = PriceSignal(zone=3, eur_mwh=81.5, mwh=2)
    assert p.cost_eur() == 163.0 and isinstance(p, Priced)
    assert PriceSignal.from_bytes(p.to_bytes()) == p == pickle.loads(pickle.dumps(p))
    assert p.replace(mwh=4).cost_eur() == 326.0
    b = BatteryDispatch(unit=9, kw=-500)
    assert b.target_kw() == -500 and BatteryDispatch.from_bytes(b.to_bytes()) == b


def test_a_message_that_leaves_an_abstract_method_unimplemented_is_refused_where_written() -> None:
    with pytest.raises(MessageError, match=r"Unpriced does not implement .*cost_eur[\s\S]*help:"):
        @message(type_id=39612, topic="grid.price")
        class Unpriced(Priced):
            zone: U8
    from mycelium_mono.messages import message_class
    assert message_class(39612) is None


def test_the_wire_decoder_never_raises_on_a_frame_for_an_abc_mixin_message() -> None:
    # A peer's frame, built by hand as a peer without the mixin would (the fingerprint is the
    # class name and the fields): before the fix decode_frame raised TypeError, which the
    # docstring says it never does on any input.
    wt = wire_type(PriceSignal)
    payload = struct.pack("<BdI", 3, 81.5, 2)                       # zone, eur_mwh, mwh
    frame = wt.prefix + HEADER.pack(MAGIC, VERSION, 0, wt.type_id, wt.fingerprint, 7, 1) + payload
    result = decode_frame(frame)
    assert isinstance(result, Decoded), result
    assert result.message == PriceSignal(3, 81.5, 2)


async def test_an_abc_mixin_message_crosses_a_live_zeromq_pair() -> None:
    pub, sub = ZmqTransport("127.0.0.1:0"), ZmqTransport("127.0.0.1:0")
    got: list[Any] = []
    await pub.start(ListInlet())
    await sub.start(ListInlet(got))
    try:
        sub.subscribe(PriceSignal)
        await sub.connect_to(pub.address)
        await asyncio.wait_for(sub.ready(), 10)
        sent = [PriceSignal(zone=z % 256, eur_mwh=z / 4, mwh=z) for z in range(200)]
        for p in sent:
            await pub.publish(p)
        await until(lambda: len(got) == len(sent))
        assert got == sent and sub.stats.dropped_malformed == 0
    finally:
        await pub.close()
        await sub.close()


class Labelled:
    def label(self) -> str:
        return "reading"


def logged(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        return fn(*args)
    return wrapper


@message(type_id=39613, topic="grid.meter")
class SubMeter(Labelled):
    meter: Address
    wh: U64

    def __init__(self, meter: bytes, wh: int) -> None:
        super().__init__()                                 # zero-argument super() in __init__

    def label(self) -> str:
        return super().label() + f" of {self.wh} Wh"      # ... and in a method

    @logged
    def shout(self) -> str:
        return super().label().upper()                     # ... under a decorator

    @property
    def kind(self) -> type[Any]:
        return __class__                                   # the class cell itself

    @classmethod
    def zero(cls) -> SubMeter:
        assert __class__ is cls                            # ... in a classmethod
        return cls(bytes(20), 0)


def test_zero_argument_super_and_the_class_cell_name_the_message_class() -> None:
    # Before the fix: "super(type, obj): obj must be an instance or subtype of type", and
    # __class__ was the undecorated class no message is an instance of.
    s = SubMeter(meter=b"\x01" * 20, wh=12)
    assert s.label() == "reading of 12 Wh"
    assert s.shout() == "READING"
    assert s.kind is SubMeter
    assert SubMeter.zero() == SubMeter(bytes(20), 0)
    assert SubMeter.from_bytes(s.to_bytes()).label() == "reading of 12 Wh"
    assert s.replace(wh=13).label() == "reading of 13 Wh"


def test_a_dataclass_style_post_init_is_refused_since_nothing_would_call_it() -> None:
    with pytest.raises(MessageError, match=r"__post_init__ would never run[\s\S]*help: .*__init__"):
        @message(type_id=39614, topic="grid.meter")
        class Checked:
            wh: U64

            def __post_init__(self) -> None:
                if self.wh > 10**9:
                    raise ValueError("implausible reading")

    class Validating:
        def __post_init__(self) -> None: ...

    with pytest.raises(MessageError, match=r"Validating.__post_init__ would never run"):
        @message(type_id=39615, topic="grid.meter")
        class CheckedByMixin(Validating):
            wh: U64


@message(type_id=39616, topic="grid.meter")
class Plausible:
    wh: U64

    def __init__(self, wh: int) -> None:
        if wh > 10**9:
            raise ValueError("implausible reading")


def test_an_init_validates_construction_replace_and_unpickling() -> None:
    # What the __post_init__ refusal's help says to do instead: it works as it says.
    ok = Plausible(5)
    rebuild, _ = ok.__reduce__()                       # what unpickling calls
    for attempt in (lambda: Plausible(10**10), lambda: ok.replace(wh=10**10),
                    lambda: rebuild(10**10)):
        with pytest.raises(ValueError, match="implausible"):
            attempt()
    assert pickle.loads(pickle.dumps(ok)) == ok


def test_optional_and_nested_fields_are_refused_with_the_field_named() -> None:
    for tid, hint in ((39618, U8 | None), (39619, DispatchOrder), (39620, list[U8])):
        with pytest.raises(MessageError, match=rf"Holder{tid}\.x: .* has no wire layout"):
            message(type_id=tid, topic="grid.x")(type(f"Holder{tid}", (), {
                "__annotations__": {"x": hint}, "__module__": __name__}))


# --- foreign bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize("buffer", [
    "x" * DispatchOrder.SIZE, None, 5, [0] * DispatchOrder.SIZE,
    memoryview(bytes(2 * DispatchOrder.SIZE))[::2],
    b"", bytes(DispatchOrder.SIZE - 1), bytes(DispatchOrder.SIZE + 1),
], ids=["str", "None", "int", "list", "strided-view", "empty", "short", "long"])
def test_from_bytes_raises_only_message_error_whatever_it_is_given(buffer: Any) -> None:
    # Before the fix a str, None or a list escaped as a bare TypeError and a strided
    # memoryview as a BufferError: past `except MessageError`, which the README's errors use.
    with pytest.raises(MessageError, match=r"DispatchOrder\.from_bytes\(\) needs exactly 10 bytes"):
        DispatchOrder.from_bytes(buffer)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3 * MeterReading.SIZE))
def test_a_forged_frame_of_any_length_is_decoded_or_dropped_and_counted(payload: bytes) -> None:
    wt = wire_type(MeterReading)
    frame = wt.prefix + HEADER.pack(MAGIC, VERSION, 0, wt.type_id, wt.fingerprint, 5, 1) + payload
    stats = TransportStats()
    inbound = Inbound(stats)
    result = decode_frame(frame)
    if len(payload) == MeterReading.SIZE:
        assert isinstance(result, Decoded)
        m = result.message
        assert MeterReading(*(getattr(m, n) for n, _ in MeterReading.FIELDS)) == m
    else:
        assert isinstance(result, Dropped) and result.reason is DropReason.WRONG_LENGTH
        inbound.drop(result)
        assert stats.dropped_malformed == 1


def test_a_wrong_type_id_for_the_prefix_is_dropped_not_decoded_as_another_type() -> None:
    wt, other = wire_type(MeterReading), wire_type(MeterEcho)
    body = reading().to_bytes()
    forged = wt.prefix + HEADER.pack(MAGIC, VERSION, 0, other.type_id, other.fingerprint, 5, 1)
    assert decode_frame(forged + body) == Dropped(DropReason.BAD_PREFIX, other.type_id, 5,
                                                  other.fingerprint)
    assert isinstance(decode_frame(Outbound().frame(reading())), Decoded)


def test_text_and_bytes_capacity_and_bytes_n_take_their_sizes_exactly() -> None:
    with pytest.raises(MessageError):
        Bytes(0)
    with pytest.raises(MessageError):
        Text(-1)
    assert reading(site="€" * 5).site == "€" * 5                 # 15 bytes
    assert reading(site="x" * 16).to_bytes() == reading(site="x" * 16).to_bytes()


@pytest.mark.parametrize("slots", [("wh",), "wh", ("__weakref__",), ("wh", "cache")])
def test_slots_written_in_the_class_body_are_refused_with_what_message_does_instead(
    slots: Any,
) -> None:
    # Before: ("wh",) read "message fields cannot have defaults", and ("__weakref__",) or an
    # extra slot was dropped without a word (weakref.ref(msg) then raised at run time).
    with pytest.raises(MessageError, match=r"__slots__ = .* @message makes the class slotted"
                                           r"[\s\S]*help: remove __slots__"):
        message(type_id=39621, topic="grid.s")(type("Slotty", (), {
            "__annotations__": {"wh": U64}, "__slots__": slots, "__module__": __name__}))


class PlainMixin:
    def kwh(self) -> float:
        return float(getattr(self, "wh", 0)) / 1000


class SlottedMixin:
    __slots__ = ()

    def kwh(self) -> float:
        return float(getattr(self, "wh", 0)) / 1000


@message(type_id=39622, topic="grid.meter")
class PlainMixed(PlainMixin):
    wh: U64


@message(type_id=39623, topic="grid.meter")
class SlottedMixed(SlottedMixin):
    __slots__ = ()                     # empty: allowed, changes nothing
    wh: U64


def test_a_mixin_never_makes_a_field_writable_a_slotted_one_keeps_no_dict() -> None:
    plain, slotted = PlainMixed(1500), SlottedMixed(1500)
    assert plain.kwh() == slotted.kwh() == 1.5
    # A mixin without __slots__ brings a __dict__ (Python's rule), but the fields are slots,
    # which a __dict__ entry cannot shadow: the message still reads what it was built with.
    plain.__dict__["wh"] = 7
    assert plain.wh == 1500 and PlainMixed.from_bytes(plain.to_bytes()) == PlainMixed(1500)
    assert not hasattr(slotted, "__dict__")
    with pytest.raises(AttributeError, match="immutable"):
        slotted.wh = 7  # type: ignore[misc]


class CountsInstances(type):
    """A metrics mixin's metaclass: counts the instances a class's callers build."""

    built: dict[str, int] = {}

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        CountsInstances.built[cls.__name__] = CountsInstances.built.get(cls.__name__, 0) + 1
        return super().__call__(*args, **kwargs)


class Metered(metaclass=CountsInstances):
    pass


@message(type_id=39624, topic="grid.meter")
class CountedReading(Metered):
    meter: Address
    wh: U64


def test_a_metaclass_call_runs_once_per_construction_and_never_for_a_decode() -> None:
    # Before: each construction ran CountsInstances.__call__ twice (the message class, then
    # the private CountedReadingFields base the object is made from), and each decode ran it
    # once: user code on the decoding path, under a class name nobody wrote.
    CountsInstances.built.clear()
    sent = [CountedReading(meter=bytes([i]) * 20, wh=i) for i in range(10)]
    assert CountsInstances.built == {"CountedReading": 10}
    frames = [Outbound().frame(m) for m in sent]
    got = [r.message for r in map(decode_frame, frames) if isinstance(r, Decoded)]
    assert got == sent and CountsInstances.built == {"CountedReading": 10}
    assert [CountedReading.from_bytes(m.to_bytes()) for m in sent] == sent
    assert CountsInstances.built == {"CountedReading": 10}


Substation = NewType("Substation", str)
MeterNo = NewType("MeterNo", bytes)

NEWTYPE_PROGRAM = '''\
from typing import Annotated, NewType, assert_type
from mycelium_mono import Bytes, Message, Text, U32, message

Substation = NewType("Substation", str)

@message(type_id=39626, topic="grid.meter")
class Tagged(Message):
    substation: Annotated[Substation, Text(12)]
    wh: U32

t = Tagged(substation=Substation("Nord-3"), wh=1)
assert_type(Tagged.from_bytes(t.to_bytes()).substation, Substation)
Tagged(substation="Nord-3", wh=1)
'''


def test_a_newtype_of_the_fields_type_is_a_valid_annotated_declaration(tmp_path: Path) -> None:
    # Before: "TaggedReading.substation: Annotated[Substation, Text(12)] declares Substation,
    # but the field holds str", though a NewType is its base type at run time.
    @message(type_id=39625, topic="grid.meter")
    class TaggedReading(Message):
        substation: Annotated[Substation, Text(12)]
        meter: Annotated[MeterNo, Bytes(20)]
        wh: U64

    t = TaggedReading(substation=Substation("Nord-3"), meter=MeterNo(b"\x07" * 20), wh=5)
    assert TaggedReading.from_bytes(t.to_bytes()) == t
    with pytest.raises(MessageError, match=r"declares Wrong, but the field holds str"):
        message(type_id=39627, topic="grid.x")(type("WrongBase", (), {
            "__annotations__": {"x": Annotated[NewType("Wrong", int), Text(4)]},
            "__module__": __name__}))
    # And the checker reads it as the user meant: a Substation in, a Substation out.
    path = tmp_path / "tagged.py"
    path.write_text(NEWTYPE_PROGRAM)
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy"),
         str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    errors = [line for line in mypy.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and 'incompatible type "str"; expected "Substation"' in errors[0], (
        mypy.stdout)


def _require_nats() -> None:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"NATS is not reachable at 127.0.0.1:4222 ({exc})\n"
                    "help: start it with `nats-server -js -a 127.0.0.1 -p 4222 &`")


async def test_a_bus_over_nats_drops_and_counts_each_forged_reading_and_delivers_the_rest() -> None:
    # A meter gateway with a bug (or a hostile one) on the readings subject: every bad body is
    # dropped under its reason, counted in bus.transport.stats, and the good ones arrive in
    # order; none of it is unpickled.
    _require_nats()
    wt, echo = wire_type(MeterReading), wire_type(MeterEcho)
    out = Outbound()
    good = [out.body(reading(interval=i)) for i in range(1, 31)]

    def header(type_id: int = wt.type_id, fp: int = wt.fingerprint, magic: bytes = MAGIC,
               version: int = VERSION) -> bytes:
        return HEADER.pack(magic, version, 0, type_id, fp, 4242, 1)

    payload = reading().to_bytes()
    forged = {
        "truncated": header()[:11],
        "bad_magic": header(magic=b"PK") + payload,
        "bad_version": header(version=9) + payload,
        "wrong_length": header() + payload[:-1],
        "too_long": header() + payload + b"\0",
        "bad_prefix": Outbound().body(MeterEcho.from_bytes(payload)),   # another type's body
        "unknown_type": header(type_id=39699) + payload,
        "fingerprint_mismatch": header(fp=echo.fingerprint ^ 1) + payload,
        "pickle": pickle.dumps(reading()),
    }
    bus = MessageBus.with_nats("nats://127.0.0.1:4222")
    raw = await nats.connect("nats://127.0.0.1:4222")
    try:
        sub = bus.subscribe(MeterReading)
        await asyncio.wait_for(bus.ready(), 10)
        bodies = list(good)
        for i, body in enumerate(forged.values()):
            bodies.insert(3 * i + 1, body)
        for body in bodies:
            await raw.publish(wt.subject, body)
        await raw.flush()
        got = [(await asyncio.wait_for(sub.recv(), 10)).interval for _ in good]
        stats = bus.transport.stats
        await until(lambda: sum(v for k, v in stats.extra.items() if k.startswith("drop_"))
                    == len(forged))
    finally:
        await raw.close()
        await bus.close()
    assert got == list(range(1, 31))
    assert stats.received == len(good)
    malformed = {"truncated", "bad_magic", "bad_version", "wrong_length", "too_long",
                 "bad_prefix", "pickle"}
    assert stats.dropped_malformed == len(malformed), stats
    assert stats.dropped_unknown_type == 1, stats
    by_reason = {k.removeprefix("drop_"): v for k, v in stats.extra.items()
                 if k.startswith("drop_")}
    # The pickle is a body like any other: its first bytes are no "MY" magic.
    assert by_reason == {"truncated": 1, "bad_magic": 2, "bad_version": 1, "wrong_length": 2,
                         "bad_prefix": 1, "unknown_type": 1, "fingerprint_mismatch": 1}, by_reason
