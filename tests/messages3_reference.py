"""A hand-written reference model of the README's field-type table (helper `messages3`).

Written from the README's "Messages" section, not from mycelium_mono/messages.py:

| field type | Python | on the wire |
|---|---|---|
| U8 U16 U32 U64, I8 … I64 | int (range checked) | 1-8 bytes |
| U128, U256 | int (range checked) | 16, 32 bytes |
| F32, F64 | float (an int is converted; F32 is rounded to float32 when built) | 4, 8 bytes |
| Bool | bool | 1 byte |
| Address, Bytes32, Bytes[N] | bytes, exactly 20, 32, N | N bytes |
| Text[N] | str, at most N bytes in UTF-8 | N bytes, NUL-padded |

plus: one fixed little-endian layout; "a field takes exactly the type it decodes to" (no
bool for an int, no IntEnum, int/float/str subclass, bytearray or memoryview); F32 beyond
±3.4e38 and F64 = 2**1024 refused; a Text holding NUL is refused; bytes from a peer that
are not UTF-8 decode with U+FFFD and decoding never raises.

F32 rounding is done here with exact rational arithmetic (round half to even at 24
significant bits, subnormals at 2**-149), so the model does not share the library's use of
``struct`` for it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


class Refused(Exception):
    """The model says the constructor must refuse this value."""


def round_to_float32(x: float) -> float:
    """``x`` rounded to the nearest binary32 value (ties to even); Refused if it overflows."""
    if not math.isfinite(x) or x == 0.0:
        return x
    a = abs(Fraction(x))
    # e such that 2**e <= a < 2**(e+1)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    elif Fraction(2) ** (e + 1) <= a:
        e += 1
    e = max(e, -126)  # below the normal range the spacing stays 2**-149
    quantum = Fraction(2) ** (e - 23)
    n = round(a / quantum)  # Fraction.__round__ rounds half to even
    r = n * quantum
    if r >= Fraction(2) ** 128:
        raise Refused("rounds beyond the largest float32")
    return math.copysign(float(r), x)


@dataclass(frozen=True)
class RefField:
    kind: str  # "uint", "int", "f32", "f64", "bool", "bytes", "text"
    size: int  # bytes on the wire

    @property
    def lo(self) -> int:
        return -(1 << (self.size * 8 - 1)) if self.kind == "int" else 0

    @property
    def hi(self) -> int:
        bits = self.size * 8
        return (1 << (bits - 1)) - 1 if self.kind == "int" else (1 << bits) - 1

    def accept(self, value: Any) -> Any:
        """The value the message must hold for ``value``, or raise Refused."""
        t = type(value)
        if self.kind in ("uint", "int"):
            if t is not int or not self.lo <= value <= self.hi:
                raise Refused
            return value
        if self.kind in ("f32", "f64"):
            if t is int:
                try:
                    value = float(value)
                except OverflowError:
                    raise Refused from None
            elif t is not float:
                raise Refused
            return round_to_float32(value) if self.kind == "f32" else value
        if self.kind == "bool":
            if t is not bool:
                raise Refused
            return value
        if self.kind == "bytes":
            if t is not bytes or len(value) != self.size:
                raise Refused
            return value
        assert self.kind == "text"
        if t is not str or "\0" in value:
            raise Refused
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise Refused from None
        if len(encoded) > self.size:
            raise Refused
        return value

    def encode(self, held: Any) -> bytes:
        if self.kind in ("uint", "int"):
            return int(held).to_bytes(self.size, "little", signed=self.kind == "int")
        if self.kind == "f32":
            return struct.pack("<f", held)
        if self.kind == "f64":
            return struct.pack("<d", held)
        if self.kind == "bool":
            return b"\x01" if held else b"\x00"
        if self.kind == "bytes":
            return bytes(held)
        raw = held.encode("utf-8")
        return raw + b"\0" * (self.size - len(raw))

    def decode_valid(self, raw: bytes) -> Any:
        """The value a well-formed field's bytes stand for."""
        if self.kind in ("uint", "int"):
            return int.from_bytes(raw, "little", signed=self.kind == "int")
        if self.kind == "f32":
            return struct.unpack("<f", raw)[0]
        if self.kind == "f64":
            return struct.unpack("<d", raw)[0]
        if self.kind == "bool":
            assert raw in (b"\x00", b"\x01")
            return raw == b"\x01"
        if self.kind == "bytes":
            return raw
        return raw.rstrip(b"\0").decode("utf-8")

    def would_accept(self, value: Any) -> bool:
        try:
            self.accept(value)
        except Refused:
            return False
        return True


def same_value(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN, and the sign of a zero float compared too."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


U = {n: RefField("uint", n // 8) for n in (8, 16, 32, 64, 128, 256)}
I = {n: RefField("int", n // 8) for n in (8, 16, 32, 64)}  # noqa: E741
F32 = RefField("f32", 4)
F64 = RefField("f64", 8)
BOOL = RefField("bool", 1)


def bytes_of(n: int) -> RefField:
    return RefField("bytes", n)


def text_of(n: int) -> RefField:
    return RefField("text", n)
