"""Typed, immutable messages with a fixed binary layout.

``@message(type_id=19, topic="market_data")`` turns an annotated class into a slotted,
immutable record whose wire form is one precompiled :class:`struct.Struct`. The same
bytes travel between processes in every transport; nothing is ever pickled.

Field types are ``typing.Annotated`` aliases, so a type checker sees ``int``, ``bytes``,
``float`` or ``bool`` while the decorator sees the wire width::

    @message(type_id=19, topic="market_data")
    class V2Swap:
        pool_address: Address        # bytes, exactly 20 on the wire
        amount_in: U256              # int, 32 bytes little-endian on the wire
        timestamp_ns: U64

Like ``attrs`` and ``dataclasses``, the methods are generated as source, compiled once,
and registered in :mod:`linecache` so a traceback shows the line that raised.
"""

from __future__ import annotations

import hashlib
import inspect
import linecache
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    ClassVar,
    Protocol,
    Self,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

from typing_extensions import dataclass_transform

__all__ = [
    "F32",
    "F64",
    "I8",
    "I16",
    "I32",
    "I64",
    "U8",
    "U16",
    "U32",
    "U64",
    "U128",
    "U256",
    "Address",
    "Bool",
    "Bytes",
    "Bytes32",
    "FieldSpec",
    "Message",
    "MessageError",
    "message",
    "message_class",
    "message_types",
    "snake_case",
]


class MessageError(TypeError):
    """A message class is malformed, or a value does not fit its field."""


@dataclass(frozen=True)
class FieldSpec:
    """How one field is laid out on the wire.

    ``fmt`` is the :mod:`struct` code; ``kind`` selects conversion and validation:
    ``"int"`` (range ``lo..hi``), ``"bigint"`` (an int carried in ``size`` bytes),
    ``"bytes"`` (exactly ``size`` bytes), ``"float"`` or ``"bool"``.
    """

    kind: str
    fmt: str
    size: int
    lo: int = 0
    hi: int = 0
    label: str = ""

    def describe(self) -> str:
        return self.label or self.fmt


def _int(bits: int, *, signed: bool) -> FieldSpec:
    codes = {8: "b", 16: "h", 32: "i", 64: "q"}
    fmt = codes[bits] if signed else codes[bits].upper()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return FieldSpec("int", fmt, bits // 8, lo, hi, f"{'I' if signed else 'U'}{bits}")


def _bigint(bits: int) -> FieldSpec:
    return FieldSpec("bigint", f"{bits // 8}s", bits // 8, 0, (1 << bits) - 1, f"U{bits}")


U8 = Annotated[int, _int(8, signed=False)]
U16 = Annotated[int, _int(16, signed=False)]
U32 = Annotated[int, _int(32, signed=False)]
U64 = Annotated[int, _int(64, signed=False)]
I8 = Annotated[int, _int(8, signed=True)]
I16 = Annotated[int, _int(16, signed=True)]
I32 = Annotated[int, _int(32, signed=True)]
I64 = Annotated[int, _int(64, signed=True)]
U128 = Annotated[int, _bigint(128)]
U256 = Annotated[int, _bigint(256)]
F32 = Annotated[float, FieldSpec("float", "f", 4, label="F32")]
F64 = Annotated[float, FieldSpec("float", "d", 8, label="F64")]
Bool = Annotated[bool, FieldSpec("bool", "?", 1, label="Bool")]


class Bytes:
    """Fixed-size bytes: ``Bytes[100]`` at run time, ``Annotated[bytes, Bytes(100)]`` for checkers.

    Type checkers do not accept an integer as a type argument, so annotate with the
    ``Annotated`` form (or a named alias such as :data:`Address`) where a checker reads
    the code; both forms give the same layout.
    """

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size <= 0:
            raise MessageError(f"Bytes size must be a positive int, got {size!r}")
        self.spec = FieldSpec("bytes", f"{size}s", size, label=f"Bytes[{size}]")

    def __class_getitem__(cls, size: int) -> Any:
        return Annotated[bytes, cls(size)]

    def __repr__(self) -> str:
        return f"Bytes({self.spec.size})"


Address = Annotated[bytes, Bytes(20)]
Bytes32 = Annotated[bytes, Bytes(32)]

# Python-side types each field kind accepts without conversion.
_PLAIN_TYPES = {int: "int", float: "float", bool: "bool", bytes: "bytes"}


class Message(Protocol):
    """What every ``@message`` class provides (for annotations and ``isinstance``-free typing)."""

    TYPE_ID: ClassVar[int]
    TOPIC: ClassVar[str]
    SIZE: ClassVar[int]
    FINGERPRINT: ClassVar[int]
    FIELDS: ClassVar[tuple[tuple[str, FieldSpec], ...]]

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, buffer: bytes | bytearray | memoryview) -> Self: ...


_REGISTRY: dict[int, type[Any]] = {}

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``V2Swap`` → ``v2_swap``, ``HTTPServer`` → ``http_server``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def message_class(type_id: int) -> type[Any] | None:
    """The registered ``@message`` class with this ``type_id``, or ``None``."""
    return _REGISTRY.get(type_id)


def message_types() -> dict[int, type[Any]]:
    """A snapshot of every registered message class by ``type_id``."""
    return dict(_REGISTRY)


def is_message_class(obj: object) -> bool:
    """True for classes made by :func:`message`."""
    return isinstance(obj, type) and "__mycelium_message__" in obj.__dict__


T = TypeVar("T")


@dataclass_transform(frozen_default=True, eq_default=True)
def message(*, type_id: int, topic: str | None = None) -> Callable[[type[T]], type[T]]:
    """Make ``cls`` an immutable, slotted message with a fixed little-endian wire layout.

    ``type_id`` identifies the type on the wire (0..65535, unique per process);
    ``topic`` groups types for transports with prefix filtering (default: snake_case name).
    """
    if not isinstance(type_id, int) or not 0 <= type_id <= 0xFFFF:
        raise MessageError(f"type_id must be an int in 0..65535, got {type_id!r}")

    # Annotations may name things local to the defining function (with postponed evaluation
    # they are strings), so resolve them where the class statement runs.
    caller_locals = dict(sys._getframe(1).f_locals)

    def wrap(cls: type[T]) -> type[T]:
        fields = _collect_fields(cls, caller_locals)
        new_cls = _build_class(cls, fields, type_id, topic or snake_case(cls.__name__))
        _register(new_cls)
        return new_cls

    return wrap


def _collect_fields(
    cls: type[Any], localns: dict[str, Any]
) -> tuple[tuple[str, FieldSpec], ...]:
    module = sys.modules.get(cls.__module__)
    try:
        hints = get_type_hints(
            cls, globalns=vars(module) if module else None, localns=localns, include_extras=True
        )
    except Exception as exc:  # NameError and friends from a bad annotation
        raise MessageError(f"{cls.__qualname__}: cannot resolve field annotations: {exc}") from exc
    own = inspect.get_annotations(cls)
    fields: list[tuple[str, FieldSpec]] = []
    for name in own:
        hint = hints[name]
        if get_origin(hint) is ClassVar:
            continue
        fields.append((name, _field_spec(cls, name, hint)))
        if name in cls.__dict__:
            raise MessageError(
                f"{cls.__qualname__}.{name}: message fields cannot have defaults "
                "(the wire layout has no 'missing' value)"
            )
    if not fields:
        raise MessageError(f"{cls.__qualname__}: a message needs at least one annotated field")
    return tuple(fields)


def _field_spec(cls: type[Any], name: str, hint: Any) -> FieldSpec:
    if get_origin(hint) is Annotated:
        for meta in get_args(hint)[1:]:
            if isinstance(meta, FieldSpec):
                return meta
            if isinstance(meta, Bytes):
                return meta.spec
    hint_name = getattr(hint, "__name__", repr(hint))
    raise MessageError(
        f"{cls.__qualname__}.{name}: {hint_name} has no wire layout\n"
        "help: use a field type from mycelium_mono (U8..U256, I8..I64, F32, F64, Bool, "
        "Address, Bytes[N])"
    )


def _fingerprint(name: str, fields: tuple[tuple[str, FieldSpec], ...]) -> int:
    # Two peers agree on a type id only if they agree on every field's name and layout.
    text = name + ";" + ";".join(f"{n}:{s.fmt}:{s.kind}" for n, s in fields)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _register(cls: type[Any]) -> None:
    previous = _REGISTRY.get(cls.TYPE_ID)
    if previous is not None and (previous.__module__, previous.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise MessageError(
            f"type_id {cls.TYPE_ID} is used by both {previous.__module__}.{previous.__qualname__} "
            f"and {cls.__module__}.{cls.__qualname__}\n"
            "help: give each message class its own type_id"
        )
    # Re-running the same class statement (a reload, or the import hook's rewrite) replaces it.
    _REGISTRY[cls.TYPE_ID] = cls


def _build_class(
    cls: type[Any], fields: tuple[tuple[str, FieldSpec], ...], type_id: int, topic: str
) -> type[Any]:
    names = tuple(n for n, _ in fields)
    namespace = {
        k: v
        for k, v in cls.__dict__.items()
        if k not in ("__dict__", "__weakref__") and k not in names
    }
    namespace["__slots__"] = names
    layout = struct.Struct("<" + "".join(spec.fmt for _, spec in fields))
    namespace.update(
        __mycelium_message__=True,
        TYPE_ID=type_id,
        TOPIC=topic,
        SIZE=layout.size,
        FIELDS=fields,
        FINGERPRINT=_fingerprint(cls.__name__, fields),
        _STRUCT=layout,
    )
    metaclass: Any = type(cls)
    new_cls: type[Any] = metaclass(cls.__name__, cls.__bases__, namespace)
    new_cls.__qualname__ = cls.__qualname__
    for method_name, method in _generate_methods(new_cls, fields, layout).items():
        setattr(new_cls, method_name, method)
    return new_cls


def _generate_methods(
    cls: type[Any], fields: tuple[tuple[str, FieldSpec], ...], layout: struct.Struct
) -> dict[str, Any]:
    source = _methods_source(cls.__name__, fields)
    filename = f"<mycelium-mono message {cls.__module__}.{cls.__qualname__}>"
    # Registering the text is what lets tracebacks and debuggers show generated lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    env: dict[str, Any] = {
        "_cls": cls,
        "_setattr": object.__setattr__,
        "_pack": layout.pack,
        "_unpack": layout.unpack,
        "_size": layout.size,
        "_value_error": _value_error,
        "_buffer_error": _buffer_error,
        "_frozen": _frozen,
    }
    exec(compile(source, filename, "exec"), env)
    methods = {
        name: env[name]
        for name in (
            "__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__",
            "__reduce__", "__copy__", "__deepcopy__", "replace", "to_bytes",
        )
    }
    methods["_decode"] = staticmethod(env["_decode"])
    methods["from_bytes"] = classmethod(env["from_bytes"])
    for fn in methods.values():
        target = getattr(fn, "__func__", fn)
        target.__qualname__ = f"{cls.__qualname__}.{target.__name__}"
    return methods


def _check_line(name: str, spec: FieldSpec) -> str:
    label = spec.describe()
    if spec.kind in ("int", "bigint"):
        cond = f"type({name}) is not int or not {spec.lo} <= {name} <= {spec.hi}"
    elif spec.kind == "bytes":
        cond = f"type({name}) is not bytes or len({name}) != {spec.size}"
    elif spec.kind == "float":
        cond = f"type({name}) is not float and type({name}) is not int"
    else:
        cond = f"type({name}) is not bool"
    return f"    if {cond}:\n        raise _value_error(_cls, {name!r}, {label!r}, {name})\n"


def _methods_source(class_name: str, fields: tuple[tuple[str, FieldSpec], ...]) -> str:
    names = [n for n, _ in fields]
    args = ", ".join(names)
    self_values = ", ".join(f"self.{n}" for n in names)
    lines = [f"def __init__(self, {args}):\n"]
    for name, spec in fields:
        lines.append(_check_line(name, spec))
        value = f"float({name})" if spec.kind == "float" else name
        lines.append(f"    _setattr(self, {name!r}, {value})\n")
    reprs = ", ".join(f"{n}={{self.{n}!r}}" for n in names)
    lines.append(f"\ndef __repr__(self):\n    return f'{class_name}({reprs})'\n")
    lines.append(
        "\ndef __eq__(self, other):\n"
        "    if type(other) is not type(self):\n        return NotImplemented\n"
        f"    return ({self_values},) == ({', '.join(f'other.{n}' for n in names)},)\n"
    )
    lines.append(f"\ndef __hash__(self):\n    return hash(({self_values},))\n")
    lines.append("\ndef __setattr__(self, name, value):\n    raise _frozen(self, name)\n")
    lines.append("\ndef __delattr__(self, name):\n    raise _frozen(self, name)\n")
    lines.append(f"\ndef __reduce__(self):\n    return (type(self), ({self_values},))\n")
    # Immutable: a copy is the object itself, as for tuples and frozen dataclasses.
    lines.append("\ndef __copy__(self):\n    return self\n")
    lines.append("\ndef __deepcopy__(self, memo):\n    return self\n")
    kwargs = ", ".join(f"{n}=changes.pop({n!r}, self.{n})" for n in names)
    lines.append(
        "\ndef replace(self, **changes):\n"
        f"    new = type(self)({kwargs})\n"
        "    if changes:\n"
        "        raise TypeError(f'{type(self).__name__}.replace() got unknown fields: '\n"
        "                        f'{sorted(changes)}')\n"
        "    return new\n"
    )
    packed = ", ".join(
        f"self.{n}.to_bytes({s.size}, 'little')" if s.kind == "bigint" else f"self.{n}"
        for n, s in fields
    )
    lines.append(f"\ndef to_bytes(self):\n    return _pack({packed})\n")
    lines.append(_decode_source(fields))
    lines.append(
        "\ndef from_bytes(cls, buffer):\n"
        "    if len(buffer) != _size:\n"
        "        raise _buffer_error(cls, buffer)\n"
        "    return cls._decode(buffer)\n"
    )
    return "".join(lines)


def _decode_source(fields: tuple[tuple[str, FieldSpec], ...]) -> str:
    # Decoding trusts the layout (the length is checked by the caller) and skips __init__'s
    # checks: every value struct produces already fits its field. Big ints are the exception.
    names = [n for n, _ in fields]
    lines = [
        "\ndef _decode(buffer):\n",
        f"    {', '.join(names)}, = _unpack(buffer)\n",
        "    self = object.__new__(_cls)\n",
    ]
    for name, spec in fields:
        value = f"int.from_bytes({name}, 'little')" if spec.kind == "bigint" else name
        lines.append(f"    _setattr(self, {name!r}, {value})\n")
    lines.append("    return self\n")
    return "".join(lines)


def _value_error(cls: type[Any], field: str, label: str, value: object) -> MessageError:
    spec = dict(cls.FIELDS)[field]
    if spec.kind in ("int", "bigint"):
        expected = f"an int in {spec.lo}..{spec.hi}"
    elif spec.kind == "bytes":
        expected = f"exactly {spec.size} bytes"
    else:
        expected = f"a {spec.kind}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return MessageError(
        f"{cls.__qualname__}.{field} ({label}) must be {expected}, "
        f"got {type(value).__name__} {shown}"
    )


def _buffer_error(cls: type[Any], buffer: Any) -> MessageError:
    return MessageError(
        f"{cls.__qualname__}.from_bytes() needs exactly {cls.SIZE} bytes, got {len(buffer)}"
    )


def _frozen(obj: object, name: str) -> AttributeError:
    return AttributeError(
        f"{type(obj).__qualname__} is immutable: cannot set or delete {name!r}; "
        "use .replace(...) to make a changed copy"
    )
