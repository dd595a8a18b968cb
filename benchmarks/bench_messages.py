"""What a message costs: construct, decode, encode, read a field, ``replace``; small and large.

Two messages: **small** is the emit benchmarks' ``BenchSwap`` (3 fields: ``Address``, ``U256``,
``U64``; 60 bytes on the wire); **large** is Bandit's ``V2Swap`` (11 fields, four of them
``U256``; 213 bytes), the message the example builds and decodes for every swap.

Each table is one operation on one size, a row per library holding the same fields; the
reference row is ``@message``:

- **@message**: validated (type, length and range of every field), immutable, fixed layout;
- **msgspec Struct** (``frozen=True``): construction does not validate, decode does; its codec
  here is JSON (msgpack integers stop at 64 bits, and four of V2Swap's fields are 256-bit);
- **pydantic BaseModel** (``frozen=True``): validated (types only, lax); its codec is JSON;
- **frozen slots dataclass**, **NamedTuple**, **attrs frozen**, **plain __slots__ class**: no
  validation. They have no codec; the encode/decode tables carry one of them as the floor of a
  fixed layout: "NamedTuple + struct", a hand-written precompiled ``struct.Struct``
  ``pack``/``unpack`` with ``int.to_bytes``/``from_bytes`` for the 256-bit fields.

Each benchmark call runs ``BATCH`` operations from a loop at the call site (as ``bench_emit``
does) and the table divides by ``BATCH``. Instruction counts, which noise cannot move: run this
file as a script (callgrind at two iteration counts, the difference per iteration; valgrind must
be installed); in a checkout of another commit it measures that commit's messages::

    python benchmarks/bench_messages.py --instructions

Run the tables: ``python benchmarks/report.py -k bench_messages``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import msgspec
import pydantic
import pytest

BATCH = 1_000

LARGE: dict[str, Any] = dict(
    pool_address=b"\x01" * 20, token0=b"\x02" * 20, token1=b"\x03" * 20, amount_in=10**20,
    amount_out=10**19, zero_for_one=True, reserve0=10**24, reserve1=10**23,
    timestamp_ns=1_700_000_000_000_000_000, block_number=19_000_000, seq=12_345,
)
SMALL: dict[str, Any] = dict(pool=b"\x01" * 20, amount_in=10**20, timestamp_ns=7)
VALUES = {"small": SMALL, "large": LARGE}
# Read and replaced in every row: both messages have these fields.
READ_FIELD, REPLACED_FIELD = "amount_in", "timestamp_ns"


def _ours(size: str) -> type[Any]:
    # Imported here: benchmarks/fixtures is on sys.path only once pytest_configure ran.
    if size == "small":
        from mycelium_bench.messages import BenchSwap

        return BenchSwap
    from bandit.protocol import V2Swap

    return V2Swap


def _python_types(size: str) -> list[tuple[str, type]]:
    return [(name, type(value)) for name, value in VALUES[size].items()]


def _slots_class(name: str, fields: list[tuple[str, type]]) -> type[Any]:
    names = [n for n, _ in fields]
    args = ", ".join(names)
    body = "".join(f"    self.{n} = {n}\n" for n in names) or "    pass\n"
    env: dict[str, Any] = {}
    exec(f"def __init__(self, {args}):\n{body}", env)
    return type(name, (), {"__slots__": tuple(names), "__init__": env["__init__"]})


def _anchors(size: str) -> dict[str, type[Any]]:
    """The same fields in every library (built from one list, so they cannot drift apart)."""
    fields = _python_types(size)
    name = f"{size.title()}Record"
    return {
        "msgspec Struct": msgspec.defstruct(name, fields, frozen=True),
        "pydantic BaseModel": pydantic.create_model(  # type: ignore[call-overload]
            name, __config__=pydantic.ConfigDict(frozen=True), **{n: (t, ...) for n, t in fields}
        ),
        "frozen slots dataclass": dataclasses.make_dataclass(
            name, fields, frozen=True, slots=True
        ),
        "NamedTuple": NamedTuple(name, fields),  # type: ignore[misc]
        "attrs frozen": attrs.make_class(
            name, {n: attrs.field(type=t) for n, t in fields}, frozen=True, slots=True
        ),
        "plain __slots__ class": _slots_class(name, fields),
    }


OURS = "@message"


def _classes(size: str) -> dict[str, type[Any]]:
    return {OURS: _ours(size), **_anchors(size)}


# --- codecs: each library's own; the fixed-layout floor for the ones that have none -----------

_U256 = frozenset({"amount_in", "amount_out", "reserve0", "reserve1"})


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]
"""(encode, decode)."""


def _struct_codec(size: str, cls: type[Any]) -> Codec:
    """Hand-written fixed layout for a NamedTuple: what @message's codec must not lose to."""
    ours = _ours(size)
    layout = struct.Struct("<" + "".join(spec.fmt for _, spec in ours.FIELDS))
    names = [n for n, _ in ours.FIELDS]
    packed = ", ".join(f"m.{n}.to_bytes(32, 'little')" if n in _U256 else f"m.{n}" for n in names)
    built = ", ".join(f"_from({n}, 'little')" if n in _U256 else n for n in names)
    env: dict[str, Any] = {"_pack": layout.pack, "_unpack": layout.unpack, "_cls": cls,
                           "_from": int.from_bytes, "_new": tuple.__new__}
    exec(f"def enc(m):\n    return _pack({packed})\n"
         f"def dec(b):\n    {', '.join(names)}, = _unpack(b)\n    return _new(_cls, ({built},))\n",
         env)
    return env["enc"], env["dec"]


def _codec(label: str, size: str, cls: type[Any]) -> Codec:
    if label == OURS:
        return cls.to_bytes, cls.from_bytes
    if label == "msgspec Struct":
        # JSON, not msgpack: msgpack integers stop at 64 bits and four fields are 256-bit.
        return msgspec.json.Encoder().encode, msgspec.json.Decoder(cls).decode
    if label == "pydantic BaseModel":
        return cls.model_dump_json, cls.model_validate_json
    return _struct_codec(size, cls)


CODEC_ROWS = (OURS, "msgspec Struct", "pydantic BaseModel", "NamedTuple")
CODEC_LABEL = {"NamedTuple": "NamedTuple + struct (hand-written layout)",
               "msgspec Struct": "msgspec Struct (JSON)", "pydantic BaseModel":
               "pydantic BaseModel (JSON)"}


def _replacer(label: str) -> Callable[[Any], Any]:
    change = {REPLACED_FIELD: 9}
    replacers: dict[str, Callable[[Any], Any]] = {
        OURS: lambda m: m.replace(**change),
        "msgspec Struct": lambda m: msgspec.structs.replace(m, **change),
        "pydantic BaseModel": lambda m: m.model_copy(update=change),
        "frozen slots dataclass": lambda m: dataclasses.replace(m, **change),
        "NamedTuple": lambda m: m._replace(**change),
        "attrs frozen": lambda m: attrs.evolve(m, **change),
    }
    return replacers[label]


LABELS = (OURS, "msgspec Struct", "pydantic BaseModel", "frozen slots dataclass", "NamedTuple",
          "attrs frozen", "plain __slots__ class")
SIZES = ("small", "large")


def _record(benchmark: Any, op: str, size: str, label: str, loop: Callable[[], Any]) -> None:
    benchmark.group = f"messages: {op}, {size}"
    benchmark(loop)
    benchmark.extra_info.update(label=CODEC_LABEL.get(label, label) if op in ("encode", "decode")
                                else label, ops=BATCH, reference=label == OURS)


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("size", SIZES)
def test_construct(benchmark: Any, size: str, label: str) -> None:
    cls, values, batch = _classes(size)[label], VALUES[size], range(BATCH)

    def loop() -> Any:
        for _ in batch:
            m = cls(**values)
        return m

    _record(benchmark, "construct", size, label, loop)
    assert getattr(loop(), READ_FIELD) == values[READ_FIELD]


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("size", SIZES)
def test_read_a_field(benchmark: Any, size: str, label: str) -> None:
    m, batch = _classes(size)[label](**VALUES[size]), range(BATCH)

    def loop() -> Any:
        for _ in batch:
            value = m.amount_in
        return value

    _record(benchmark, "read a field", size, label, loop)
    assert loop() == VALUES[size][READ_FIELD]


@pytest.mark.parametrize("label", LABELS[:-1])  # a plain __slots__ class has no replace
@pytest.mark.parametrize("size", SIZES)
def test_replace(benchmark: Any, size: str, label: str) -> None:
    m, replace, batch = _classes(size)[label](**VALUES[size]), _replacer(label), range(BATCH)

    def loop() -> Any:
        for _ in batch:
            new = replace(m)
        return new

    _record(benchmark, "replace", size, label, loop)
    assert getattr(loop(), REPLACED_FIELD) == 9 and getattr(m, REPLACED_FIELD) != 9


@pytest.mark.parametrize("label", CODEC_ROWS)
@pytest.mark.parametrize("size", SIZES)
def test_encode(benchmark: Any, size: str, label: str) -> None:
    cls = _classes(size)[label]
    m, (encode, decode), batch = cls(**VALUES[size]), _codec(label, size, cls), range(BATCH)

    def loop() -> Any:
        for _ in batch:
            data = encode(m)
        return data

    _record(benchmark, "encode", size, label, loop)
    assert decode(loop()) == m


@pytest.mark.parametrize("label", CODEC_ROWS)
@pytest.mark.parametrize("size", SIZES)
def test_decode(benchmark: Any, size: str, label: str) -> None:
    cls = _classes(size)[label]
    m, (encode, decode), batch = cls(**VALUES[size]), _codec(label, size, cls), range(BATCH)
    data = encode(m)

    def loop() -> Any:
        for _ in batch:
            back = decode(data)
        return back

    _record(benchmark, "decode", size, label, loop)
    assert loop() == m


# --- instruction counts (run as a script) -----------------------------------------------------

# Imports only the message classes: pydantic, attrs and pytest under valgrind take minutes.
_PROBE = """
import sys
sys.path[:0] = {path!r}
size, op, n, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if size == "small":
    from mycelium_bench.messages import BenchSwap as cls
else:
    from bandit.protocol import V2Swap as cls
if record != "@message":
    from mycelium_bench import construct_floor
    cls = getattr(construct_floor, record)(cls)
values = {values!r}[size]
m = cls(**values)
if record == "@message":
    data, decode, encode = m.to_bytes(), cls.from_bytes, m.to_bytes
if op == "construct":
    for _ in range(n): cls(**values)
elif op == "decode":
    for _ in range(n): decode(data)
elif op == "encode":
    for _ in range(n): encode()
elif op == "read a field":
    for _ in range(n): m.amount_in
elif op == "replace":
    for _ in range(n): m.replace(timestamp_ns=9)
"""
INSTRUCTION_OPS = ("construct", "decode", "encode", "read a field", "replace")


def _collected(size: str, op: str, n: int, record: str = OURS) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    path = [here, os.path.join(here, "fixtures"), *sys.path]
    # The interpreter binary itself, not a venv's symlink or a wrapper script.
    python = os.path.realpath(sys.executable)
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, "-c",
         _PROBE.format(path=path, values=VALUES), size, op, str(n), record],
        capture_output=True, text=True, check=True,
        # A fixed hash seed: the probe's module-level names live in a dict whose probing, and
        # so its count, would otherwise move by a few dozen instructions between runs.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise SystemExit(f"valgrind printed no instruction count:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def _per_operation(size: str, op: str, record: str, few: int, many: int) -> int:
    """Instructions per operation: (count at ``many`` - count at ``few``) / (many - few)."""
    return (_collected(size, op, many, record) - _collected(size, op, few, record)) // (many - few)


def instruction_counts(few: int = 2_000, many: int = 22_000) -> dict[tuple[str, str], int]:
    """@message's instructions per operation, for both sizes."""
    return {(size, op): _per_operation(size, op, OURS, few, many)
            for size in SIZES for op in INSTRUCTION_OPS}


# The records of benchmarks/fixtures/mycelium_bench/construct_floor.py, and what they show.
FLOOR_RECORDS = {
    "plain_slots_class": "plain `__slots__` class, validates nothing (the keyword-call floor)",
    "validated_tuple_class": "validated tuple subclass (issue 16's proposed design, same checks)",
}


def floor_counts(few: int = 2_000, many: int = 22_000) -> dict[str, int]:
    """Instructions per ``V2Swap(**fields)`` for each floor record and for @message."""
    return {record: _per_operation("large", "construct", record, few, many)
            for record in (*FLOOR_RECORDS, OURS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", action="store_true", required=True,
                        help="count @message's instructions per operation with callgrind")
    parser.parse_args(argv)
    print(f"@message, instructions per operation ({sys.implementation.cache_tag}, callgrind)")
    print("| operation | small (3 fields) | large (V2Swap, 11 fields) |\n|---|---:|---:|")
    counts = instruction_counts()
    for op in INSTRUCTION_OPS:
        print(f"| {op} | {counts['small', op]:,} | {counts['large', op]:,} |")
    print("\nV2Swap(**fields), instructions per call, beside the records that bracket it")
    print("| record | instructions |\n|---|---:|")
    floors = floor_counts()
    for record, label in FLOOR_RECORDS.items():
        print(f"| {label} | {floors[record]:,} |")
    print(f"| @message | {floors[OURS]:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
