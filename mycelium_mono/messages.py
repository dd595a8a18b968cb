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
import keyword
import linecache
import math
import operator
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import FunctionType
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    NewType,
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
    "Text",
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
    ``"bytes"`` (exactly ``size`` bytes), ``"text"`` (a str of at most ``size`` UTF-8
    bytes), ``"float"`` or ``"bool"``.
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
"""A float carried in 4 bytes (IEEE binary32).

The value is rounded to float32 when the message is constructed, so the object holds what
the wire carries: ``M.from_bytes(m.to_bytes()) == m`` and the hash is kept (``F32`` field
``21.7`` reads ``21.700000762939453`` from the start, in every mode). Infinities and NaN
keep their class. A finite value whose rounding would overflow is refused.

NaN: as in any record type, equality compares the fields with ``==``, and ``nan != nan``
by IEEE 754, so a message holding NaN is unequal to its own round trip. Test with
:func:`math.isnan` where NaN can occur.
"""
F64 = Annotated[float, FieldSpec("float", "d", 8, label="F64")]
"""A float carried in 8 bytes (IEEE binary64, a Python float exactly).

NaN: as in any record type, equality compares the fields with ``==``, and ``nan != nan``
by IEEE 754, so a message holding NaN is unequal to its own round trip.
"""
Bool = Annotated[bool, FieldSpec("bool", "?", 1, label="Bool")]


class _Sized:
    """A field type with a size in its subscript: ``Bytes[N]``, ``Text[N]``."""

    _KIND: ClassVar[str]
    _PYTHON: ClassVar[type]
    _SIZE_IS: ClassVar[str]

    def __init__(self, size: int) -> None:
        name = type(self).__name__
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise MessageError(f"{name} {self._SIZE_IS} must be a positive int, got {size!r}")
        self.spec = FieldSpec(self._KIND, f"{size}s", size, label=f"{name}[{size}]")

    def __class_getitem__(cls, size: int) -> Any:
        return Annotated[cls._PYTHON, cls(size)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.size})"


class Bytes(_Sized):
    """Fixed-size bytes: ``Bytes[100]`` at run time, ``Annotated[bytes, Bytes(100)]`` for checkers.

    Type checkers do not accept an integer as a type argument, so annotate with the
    ``Annotated`` form (or a named alias such as :data:`Address`) where a checker reads
    the code; both forms give the same layout.
    """

    _KIND, _PYTHON, _SIZE_IS = "bytes", bytes, "size"


class Text(_Sized):
    """Fixed-capacity UTF-8 text: ``Text[12]`` is a ``str`` of at most 12 bytes once encoded.

    On the wire it always takes ``N`` bytes, NUL-padded; the padding never shows on the
    Python side. A longer string, or one containing NUL (which would be taken for
    padding), is refused at construction. As with :class:`Bytes`, a type checker reads
    ``Annotated[str, Text(12)]``.
    """

    _KIND, _PYTHON, _SIZE_IS = "text", str, "capacity (bytes in UTF-8)"


Address = Annotated[bytes, Bytes(20)]
Bytes32 = Annotated[bytes, Bytes(32)]



class Message:
    """Optional base of a ``@message`` class: declares the generated members for type checkers.

    ``@message`` generates ``to_bytes``, ``from_bytes``, ``replace`` and the class constants
    at run time, where a type checker cannot see them. Inherit this class to have them
    typed (``from_bytes`` and ``replace`` return the class itself)::

        @message(type_id=19, topic="market_data")
        class V2Swap(Message):
            pool_address: Address

    It adds nothing at run time: no fields, no slots (``__slots__ = ()``), no ``__init__``;
    the generated methods replace these declarations. ``@message`` works the same without it.
    """

    __slots__ = ()

    TYPE_ID: ClassVar[int]
    TOPIC: ClassVar[str]
    SIZE: ClassVar[int]
    FINGERPRINT: ClassVar[int]
    FIELDS: ClassVar[tuple[tuple[str, FieldSpec], ...]]

    def to_bytes(self) -> bytes:
        raise _not_a_message(type(self), "to_bytes")

    @classmethod
    def from_bytes(cls, buffer: bytes | bytearray | memoryview) -> Self:
        raise _not_a_message(cls, "from_bytes")

    def replace(self, /, **changes: Any) -> Self:
        raise _not_a_message(type(self), "replace")


def _not_a_message(cls: type[Any], member: str) -> MessageError:
    # Only reached for a class that inherits Message without being decorated.
    return MessageError(
        f"{cls.__qualname__}.{member}(): {cls.__qualname__} inherits Message but is not a "
        "@message class\nhelp: decorate it with @message(type_id=..., topic=...)"
    )


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
    if isinstance(type_id, bool) or not isinstance(type_id, int) or not 0 <= type_id <= 0xFFFF:
        raise MessageError(f"type_id must be an int in 0..65535, got {type_id!r}")
    type_id = int(type_id)  # an IntEnum of the app's type ids is welcome; TYPE_ID is an int
    if topic is not None:
        _check_topic(topic, f"@message(type_id={type_id})")

    # Annotations may name things local to the defining function (with postponed evaluation
    # they are strings), so resolve them where the class statement runs.
    caller_locals = dict(sys._getframe(1).f_locals)

    def wrap(cls: type[T]) -> type[T]:
        _check_class_body(cls)
        fields = _collect_fields(cls, caller_locals)
        chosen = topic or snake_case(cls.__name__)
        if topic is None:
            _check_topic(chosen, f"{cls.__qualname__} (its default topic)")
        _check_prefix(cls, type_id, chosen)
        _check_frame_size(cls, fields, type_id, chosen)
        new_cls = _build_class(cls, fields, type_id, chosen)
        _register(new_cls)
        return new_cls

    return wrap


def _check_class_body(cls: type[Any]) -> None:
    """Refuse, at the class statement, what @message would otherwise break or drop unseen."""
    if Generic in cls.__bases__:
        # type() cannot rebuild a class on a bare Generic base: this used to surface as a bare
        # TypeError ("Cannot inherit from plain Generic") naming neither the class nor a fix.
        # Only a direct base: a Protocol or Box[int] mixin (Generic further up) works.
        raise MessageError(
            f"{cls.__qualname__}: a message class cannot be generic (Generic[...] among its "
            "bases): every field has one fixed wire layout, which a type parameter cannot give\n"
            "help: remove Generic[...] from the bases and give each field a concrete field type "
            "(U32, Text[N], Bytes[N], ...); define one message class per payload"
        )
    if is_message_class(cls):
        raise MessageError(f"{cls.__qualname__} is already a @message class\n"
                           "help: decorate it once")
    own = cls.__dict__
    if "__dataclass_fields__" in own:
        raise MessageError(
            f"{cls.__qualname__}: @message cannot be combined with @dataclass (the dataclass's "
            "__init__ would set the frozen fields, its __eq__ would be replaced)\n"
            "help: remove @dataclass: @message generates the constructor, equality, hash, "
            "repr and replace()"
        )
    # These used to be replaced without a word: a class's own __eq__, to_bytes() or
    # TYPE_ID = 9 was dropped. A __repr__ of its own is kept (as a dataclass keeps it).
    for member in _GENERATED_MEMBERS:
        if member in own:
            raise MessageError(
                f"{cls.__qualname__}.{member}: @message generates {member} for every message "
                "(the wire layout, equality and immutability depend on it), so this one would "
                "be silently replaced\n"
                f"help: remove {member} from the class body (or give the method another name)"
            )
    slots = own.get("__slots__", ())
    if isinstance(slots, str):
        slots = (slots,)
    if slots:
        # A field listed in __slots__ read as "message fields cannot have defaults" (its
        # slot descriptor sits in the class body); any other slot, __weakref__ included,
        # was dropped without a word, since the message's slots are its fields.
        raise MessageError(
            f"{cls.__qualname__}: __slots__ = {slots!r} in a message class: @message makes "
            "the class slotted itself, with exactly its fields as slots\n"
            "help: remove __slots__ (every field is a slot; a message holds nothing else)"
        )
    for owner in cls.__mro__[:-1]:
        if "__post_init__" in owner.__dict__:
            # @message reads like @dataclass (dataclass_transform), so a dataclass habit
            # validated in __post_init__, which nothing calls: every value it meant to
            # refuse was built, sent and delivered without a word.
            raise MessageError(
                f"{cls.__qualname__}: {owner.__qualname__}.__post_init__ would never run "
                "(@message is not @dataclass and does not call it)\n"
                "help: rename it __init__(self, <the fields, in order>): it runs at each "
                "construction, replace() and unpickling (decoding runs no user code)"
            )
    for base in cls.__mro__[1:-1]:
        if "__new__" in base.__dict__:
            # The generated __new__ builds the object without calling a base's __new__ (and
            # decoding must run no user code), so this one never ran: refused, not skipped.
            raise MessageError(
                f"{cls.__qualname__}: its base {base.__qualname__} defines __new__, which a "
                f"message never calls ({base.__qualname__}.__new__ would be skipped at every "
                "construction and decode)\n"
                f"help: move what {base.__qualname__}.__new__ does into __init__ (it runs once "
                "per construction, with the field values) or out of the mixin"
            )


def _collect_fields(
    cls: type[Any], localns: dict[str, Any]
) -> tuple[tuple[str, FieldSpec], ...]:
    module = sys.modules.get(cls.__module__)
    own = inspect.get_annotations(cls)
    # Only the class's own annotations are fields, so only they are resolved: a base's
    # (Message's, a mixin's) are strings meant for the base's module, not the user's.
    holder = type(cls.__name__, (), {"__annotations__": own, "__module__": cls.__module__})
    try:
        hints = get_type_hints(
            holder, globalns=vars(module) if module else None, localns=localns,
            include_extras=True,
        )
    except Exception as exc:  # NameError and friends from a bad annotation
        raise MessageError(f"{cls.__qualname__}: cannot resolve field annotations: {exc}") from exc
    fields: list[tuple[str, FieldSpec]] = []
    for name in own:
        hint = hints[name]
        if get_origin(hint) is ClassVar:
            continue
        _check_field_name(cls, name)
        fields.append((name, _field_spec(cls, name, hint)))
        if name in cls.__dict__:
            raise MessageError(
                f"{cls.__qualname__}.{name}: message fields cannot have defaults "
                "(the wire layout has no 'missing' value)"
            )
    if not fields:
        raise MessageError(f"{cls.__qualname__}: a message needs at least one annotated field")
    return tuple(fields)


# Members every message class has, and the parameter names its generated methods use.
# Names starting with "_" are reserved as a whole: the generated code's helpers live there.
RESERVED_FIELD_NAMES = frozenset(
    {"self", "cls", "to_bytes", "from_bytes", "replace", "TYPE_ID", "TOPIC", "SIZE", "FIELDS",
     "FINGERPRINT"}
)


def _check_field_name(cls: type[Any], name: str) -> None:
    if name in RESERVED_FIELD_NAMES or name.startswith("_"):
        raise MessageError(
            f"{cls.__qualname__}.{name}: {name!r} is reserved for what @message generates "
            "(names starting with '_', self, cls, "
            "to_bytes, from_bytes, replace, TYPE_ID, TOPIC, SIZE, FIELDS, FINGERPRINT)\n"
            f"help: rename the field, e.g. {name.strip('_') or 'value'}_"
        )
    if not name.isidentifier() or keyword.iskeyword(name):
        raise MessageError(f"{cls.__qualname__}: {name!r} is not a valid field name")


# The transports' frame limit and header (bus/transports/wire.py: MAX_FRAME, HEADER).
# Kept here because messages depend on nothing of ours; tests/test_messages.py checks
# that both stay equal to wire.py's.
FRAME_LIMIT = 1 << 16
FRAME_HEADER_SIZE = 30
# wire.py's MAX_PREFIX: a ZeroMQ frame's "<topic>.<type_id>\0" is looked for in its first
# 256 bytes only, so a longer topic was accepted here and then every frame of the type was
# dropped as bad_prefix by every receiving peer.
FRAME_PREFIX_LIMIT = 256

# Dot-separated parts of letters, digits, "_" and "-": what a NATS subject token and a
# ZeroMQ prefix both carry (no NUL, whitespace, wildcards or empty parts).
_TOPIC = re.compile(r"[\w-]+(?:\.[\w-]+)*", re.ASCII)


def _check_topic(topic: object, where: str) -> None:
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise MessageError(
            f"{where}: topic {topic!r} cannot cross the wire (a NATS subject and a ZeroMQ "
            "prefix are built from it)\n"
            "help: use ASCII letters, digits, '_' and '-', in parts separated by single dots, "
            "e.g. 'market_data' or 'orders.eu'"
        )


def _check_prefix(cls: type[Any], type_id: int, topic: str) -> None:
    prefix = len(topic) + len(str(type_id)) + 2  # "<topic>.<type_id>\0", topic ASCII
    if prefix > FRAME_PREFIX_LIMIT:
        raise MessageError(
            f"{cls.__qualname__}: topic {topic[:40]!r}... is {len(topic)} characters, so its "
            f"frame prefix '<topic>.{type_id}\\0' would be {prefix} bytes; a transport reads "
            f"at most {FRAME_PREFIX_LIMIT} and drops the frame as a bad prefix\n"
            f"help: shorten the topic to at most {FRAME_PREFIX_LIMIT - prefix + len(topic)} "
            "characters"
        )


def _check_frame_size(
    cls: type[Any], fields: tuple[tuple[str, FieldSpec], ...], type_id: int, topic: str
) -> None:
    size = struct.calcsize("<" + "".join(spec.fmt for _, spec in fields))
    # ZeroMQ frames carry the longest extra part: the prefix "<topic>.<type_id>\0".
    frame = len(topic) + len(str(type_id)) + 2 + FRAME_HEADER_SIZE + size
    if frame > FRAME_LIMIT:
        largest = max(fields, key=lambda f: f[1].size)
        raise MessageError(
            f"{cls.__qualname__}: its frame would be {frame:,} bytes ({size:,} of fields, "
            f"the largest {largest[0]} ({largest[1].describe()})); a transport carries at "
            f"most {FRAME_LIMIT:,} bytes per frame and drops the rest as oversize\n"
            "help: shrink the field, or split the payload over several messages"
        )


def _field_spec(cls: type[Any], name: str, hint: Any) -> FieldSpec:
    if get_origin(hint) is Annotated:
        declared, *metadata = get_args(hint)
        for meta in metadata:
            if isinstance(meta, FieldSpec):
                return _checked_python_type(cls, name, declared, meta, meta)
            if isinstance(meta, _Sized):
                return _checked_python_type(cls, name, declared, meta.spec, meta)
    hint_name = getattr(hint, "__name__", repr(hint))
    raise MessageError(
        f"{cls.__qualname__}.{name}: {hint_name} has no wire layout\n"
        "help: use a field type from mycelium_mono (U8..U256, I8..I64, F32, F64, Bool, "
        "Address, Bytes[N], Text[N])"
    )


def _checked_python_type(cls: type[Any], name: str, declared: Any, spec: FieldSpec,
                         meta: object) -> FieldSpec:
    """``Annotated[int, Text(12)]`` made a type checker see an int where the field holds a
    str: refused at the class statement, since every read of the field would be mistyped."""
    python = _EXACT_TYPES.get(spec.kind)
    # A NewType of the field's type (Sku = NewType("Sku", str)) is that type at run time, so
    # a checker reading Annotated[Sku, Text(12)] is right about every read: it was refused.
    underlying = declared
    while isinstance(underlying, NewType):
        underlying = underlying.__supertype__
    if python is None or underlying is python:
        return spec
    shown = getattr(declared, "__name__", repr(declared))
    raise MessageError(
        f"{cls.__qualname__}.{name}: Annotated[{shown}, {meta!r}] declares {shown}, but the "
        f"field holds {python.__name__}\n"
        f"help: write Annotated[{python.__name__}, {meta!r}]"
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


# How a message is built (issue 16; callgrind, CPython 3.11, Bandit's 11-field V2Swap,
# instructions per call, before -> now): the frozen class used to set each slot through
# object.__setattr__, 21,846 per construction and 23,784 per decode. Now the values go into
# a plain slotted base class (`_fields`, no __setattr__ of its own, so each `self.x = x` is
# CPython's specialised slot store) and the finished object then becomes the frozen class
# (`__class__` assignment: same layout, ~500 instructions). A tuple subclass built by one
# tuple.__new__ call measured 10,748 / 9,027 against this design's 11,089 / ~9,500, but read
# each field 2.6x slower (43 vs 17 ns: a tuplegetter is not specialised, a slot is) and made
# messages sequences; reads happen far more often than construction, so slots won.
#
# The empty instance comes from calling the slots base itself: type.__call__ reaches
# object.__new__ without the argument checks of calling object.__new__ as a function (about
# 300 instructions fewer per message; 10,841 / 9,177 now). Measured and dearer for the range
# checks of the fast path: chained compares, bit_length, OR-ing same-width fields, one
# struct.pack of the U64s, min/max; per-field `type(x) is T` tests instead of one tuple.
# Only when a user's base class brings its own __new__ or __init__ (or its metaclass its own
# __call__) would calling the base run user code, so then the object is made by
# object.__new__ directly.
def _blank_maker(fields_base: type[Any]) -> Any:
    own_new: object = fields_base.__new__
    own_init: object = fields_base.__init__
    # A mixin's metaclass with its own __call__ ran too: at every decode (which runs no user
    # code), and a singleton metaclass handed every message the same object.
    own_call: object = type(fields_base).__call__
    if own_new is object.__new__ and own_init is object.__init__ and own_call is type.__call__:
        return fields_base
    return partial(object.__new__, fields_base)


def _build_class(
    cls: type[Any], fields: tuple[tuple[str, FieldSpec], ...], type_id: int, topic: str
) -> type[Any]:
    names = tuple(n for n, _ in fields)
    namespace = {
        k: v
        for k, v in cls.__dict__.items()
        if k not in ("__dict__", "__weakref__") and k not in names
    }
    layout = struct.Struct("<" + "".join(spec.fmt for _, spec in fields))
    namespace.update(
        __slots__=(),
        __match_args__=names,
        __mycelium_message__=True,
        TYPE_ID=type_id,
        TOPIC=topic,
        SIZE=layout.size,
        FIELDS=fields,
        FINGERPRINT=_fingerprint(cls.__name__, fields),
        _STRUCT=layout,
        __init_subclass__=classmethod(_refuse_subclass),
    )
    # The slots live on a private base; only it is ever written to (see above).
    slots_base = type(f"{cls.__name__}Fields", cls.__bases__,
                      {"__slots__": names, "__module__": cls.__module__})
    slots_base.__qualname__ = f"{cls.__qualname__}.Fields"
    metaclass: Any = type(cls)
    new_cls: type[Any] = metaclass(cls.__name__, (slots_base,), namespace)
    new_cls.__qualname__ = cls.__qualname__
    _check_abstract(new_cls, slots_base)
    _retarget_class_cells(cls, new_cls)
    for method_name, method in _generate_methods(new_cls, fields, layout).items():
        if method_name == "__repr__" and "__repr__" in cls.__dict__:
            continue  # the class's own repr wins (it may mask a field, e.g. an id)
        setattr(new_cls, method_name, method)
    return new_cls


def _retarget_class_cells(old: type[Any], new: type[Any]) -> None:
    """Point the class body's ``__class__`` cells at the class @message returns.

    Python gives every method that says ``super()`` or ``__class__`` a cell holding the class
    the statement created; @message returns another class, so zero-argument ``super()`` in a
    message's method raised "super(type, obj): obj must be an instance or subtype of type"
    and ``__class__`` named a class no message is an instance of (as dataclasses' slots=True
    did before Python 3.14, which fixes it the same way). Runs once per class statement.
    """
    for value in new.__dict__.values():
        candidates = [value]
        if isinstance(value, classmethod | staticmethod):
            candidates = [value.__func__]
        elif isinstance(value, property):
            candidates = [value.fget, value.fset, value.fdel]
        for func in candidates:
            # Down a decorator chain (functools.wraps sets __wrapped__), boundedly.
            for _ in range(64):
                if not isinstance(func, FunctionType):
                    break
                _retarget_cell(func, old, new)
                func = getattr(func, "__wrapped__", None)


def _retarget_cell(func: FunctionType, old: type[Any], new: type[Any]) -> None:
    code, closure = func.__code__, func.__closure__
    if not closure or "__class__" not in code.co_freevars:
        return
    cell = closure[code.co_freevars.index("__class__")]
    try:
        if cell.cell_contents is old:
            cell.cell_contents = new
    except ValueError:  # an empty cell: nothing to retarget
        pass


def _check_abstract(new_cls: type[Any], slots_base: type[Any]) -> None:
    """An ABC or Protocol mixin's abstract methods: the message must implement them all.

    Every message is built as an instance of the private slots base (see ``_blank_maker``),
    which inherits the mixin's abstract methods but none of the message's own methods, so
    ``abc`` refused every construction and decode of a message that implemented them all
    ("Can't instantiate abstract class ReadingFields"). The base is never used on its own:
    it is made concrete, and the message class, which is final and so can never gain the
    missing methods, is refused at the class statement if any remain abstract.
    """
    missing = sorted(getattr(new_cls, "__abstractmethods__", ()))
    if missing:
        raise MessageError(
            f"{new_cls.__qualname__} does not implement the abstract method(s) "
            f"{', '.join(missing)} of its bases; a message class is final, so no subclass "
            "could ever implement them and it could never be built\n"
            f"help: define {', '.join(missing)} in the class body of {new_cls.__qualname__}"
        )
    if getattr(slots_base, "__abstractmethods__", None):
        slots_base.__abstractmethods__ = frozenset()


def _refuse_subclass(cls: type[Any], /, **kwargs: Any) -> None:
    """Message classes are final: raised by the class statement of any subclass.

    The wire has one fixed layout per type id. A subclass either keeps the parent's layout
    under its type id (two classes, one id) or would extend it, changing layouts silently
    whenever a base gains a field; neither is what a reader of the class statement expects.
    """
    parent = next(base for base in cls.__mro__[1:] if is_message_class(base))
    raise MessageError(
        f"{cls.__qualname__} cannot subclass the message class {parent.__qualname__}: "
        "message classes are final (each type id has one fixed wire layout)\n"
        "help: compose instead: a new @message class that lists the fields it needs "
        f"({parent.__qualname__}'s included); share methods through a plain mixin class "
        "that both inherit"
    )


# What @message sets on every message class, besides __repr__ (a class's own one is kept):
# written in the class body, each is refused rather than silently replaced. __eq__ comes
# before __hash__: a class body that defines __eq__ gets __hash__ = None from Python too.
_GENERATED_MEMBERS = (
    "__eq__", "__hash__", "__new__", "__setattr__", "__delattr__", "__reduce__", "__copy__",
    "__deepcopy__", "__replace__", "__match_args__", "__init_subclass__", "replace",
    "to_bytes", "from_bytes", "TYPE_ID", "TOPIC", "SIZE", "FIELDS", "FINGERPRINT",
)

_METHOD_NAMES = (
    "__new__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__", "__reduce__",
    "__copy__", "__deepcopy__", "replace", "to_bytes",
)


def _generate_methods(
    cls: type[Any], fields: tuple[tuple[str, FieldSpec], ...], layout: struct.Struct
) -> dict[str, Any]:
    source = _methods_source(fields)
    filename = f"<mycelium-mono message {cls.__module__}.{cls.__qualname__}>"
    # Registering the text is what lets tracebacks and debuggers show generated lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    env: dict[str, Any] = {
        # Builtins under private names: a field may be called `type`, `int` or `len`.
        "_type": type, "_int": int, "_float": float, "_bytes": bytes, "_bool": bool,
        "_str": str, "_len": len, "_hash": hash, "_NotImplemented": NotImplemented,
        "_from_int": int.from_bytes, "_isfinite": math.isfinite, "_TypeError": TypeError,
        "_sorted": sorted,
        "_cls": cls,
        "_class_name": cls.__name__,
        "_fields": cls.__bases__[0],
        "_blank": _blank_maker(cls.__bases__[0]),
        "_types": tuple(_EXACT_TYPES[spec.kind] for _, spec in fields),
        "_pack": layout.pack,
        "_unpack": layout.unpack,
        "_bad_buffer": (struct.error, TypeError, BufferError),
        "_F32_LIMIT": _F32_LIMIT,
        "_pack_f32": _F32_STRUCT.pack,
        "_unpack_f32": _F32_STRUCT.unpack,
        "_value_error": _value_error,
        "_as_float": _as_float,
        "_text_fits": _text_fits,
        "_text_from_wire": _text_from_wire,
        "_buffer_error": _buffer_error,
        "_frozen": _frozen,
    }
    exec(compile(source, filename, "exec"), env)
    env["_checked_new"].__qualname__ = f"{cls.__qualname__}.__new__"
    methods = {name: env[name] for name in _METHOD_NAMES}
    methods["__new__"] = staticmethod(env["__new__"])
    methods["__replace__"] = env["replace"]  # copy.replace() (Python 3.13) uses this name
    # Static, not class methods: one call and no bound method per decode (the class is
    # `_cls` either way, and wire.py calls `_decode` on exactly that class).
    methods["_decode"] = staticmethod(env["_decode"])
    methods["from_bytes"] = staticmethod(env["from_bytes"])
    for fn in methods.values():
        target = getattr(fn, "__func__", fn)
        target.__qualname__ = f"{cls.__qualname__}.{target.__name__}"
    return methods


def _check_lines(name: str, spec: FieldSpec) -> str:
    error = f"        raise _value_error(_cls, {name!r}, {spec.describe()!r}, {name})\n"
    if spec.kind in ("int", "bigint"):
        cond = f"_type({name}) is not _int or not {spec.lo} <= {name} <= {spec.hi}"
    elif spec.kind == "bytes":
        cond = f"_type({name}) is not _bytes or _len({name}) != {spec.size}"
    elif spec.kind == "text":
        cond = f"_type({name}) is not _str or not _text_fits({name}, {spec.size})"
    elif spec.kind == "float":
        # An int is accepted and converted, as float() would; a huge one is a clear error.
        # F32 passes its limit, so an int too big for it is reported as the int it was.
        limit = "_F32_LIMIT" if spec.fmt == "f" else "None"
        lines = (
            f"    if _type({name}) is not _float:\n"
            f"        if _type({name}) is not _int:\n    {error}"
            f"        {name} = _as_float(_cls, {name!r}, {spec.describe()!r}, {name}, {limit})\n"
        )
        if spec.fmt == "f":
            # struct.pack('f') raises OverflowError only at a remote publish (issue 15.13).
            lines += (
                f"    if not -_F32_LIMIT < {name} < _F32_LIMIT and _isfinite({name}):\n{error}"
            )
        return lines
    else:
        cond = f"_type({name}) is not _bool"
    return f"    if {cond}:\n{error}"


_EXACT_TYPES = {"int": int, "bigint": int, "bytes": bytes, "text": str, "float": float,
                "bool": bool}


def _fast_condition(name: str, spec: FieldSpec) -> str | None:
    """What must hold, besides the exact type, for ``name`` to need no check and no conversion."""
    if spec.kind in ("int", "bigint") and spec.lo == 0:
        return f"not {name} >> {spec.size * 8}"  # also false for negatives: one operation
    if spec.kind in ("int", "bigint"):
        return f"{spec.lo} <= {name} <= {spec.hi}"
    if spec.kind == "bytes":
        return f"_len({name}) == {spec.size}"
    if spec.kind == "text":
        return f"_text_fits({name}, {spec.size})"
    if spec.kind == "float" and spec.fmt == "f":
        return f"-_F32_LIMIT < {name} < _F32_LIMIT"
    return None


def _new_source(fields: tuple[tuple[str, FieldSpec], ...]) -> str:
    # Two paths, one meaning. The fast one asks, in one tuple comparison, whether every value
    # has exactly its field's type, then checks the ranges (an unsigned range is one shift):
    # about 7 % fewer instructions for V2Swap than the per-field checks (callgrind, 3.11).
    # Anything else takes the per-field path, which converts (an int into a float field) or
    # raises the first failing field's error, exactly as before.
    names = ", ".join(n for n, _ in fields)
    stored = [(n, _stored_value(n, s)) for n, s in fields]
    types = "".join(f"_type({n}), " for n, _ in fields)
    conditions = [f"({types}) == _types"]
    conditions.extend(c for n, s in fields if (c := _fast_condition(n, s)) is not None)
    joined = "\n            and ".join(conditions)
    lines = [
        f"def __new__(cls, {names}):\n",
        f"    if ({joined}):\n",
        _build_lines(stored, "cls", indent=8),
        f"    return _checked_new(cls, {names})\n",
        f"\ndef _checked_new(cls, {names}):\n",
    ]
    lines.extend(_check_lines(name, spec) for name, spec in fields)
    lines.append(_build_lines(stored, "cls", indent=4))
    return "".join(lines)


def _stored_value(name: str, spec: FieldSpec) -> str:
    """What __new__ stores for a checked value: F32 rounded as the wire will carry it."""
    if spec.kind == "float" and spec.fmt == "f":
        # Packing and unpacking is the rounding struct does on the way out; doing it here
        # makes the object equal to its own round trip. Only F32 fields pay for it.
        return f"_unpack_f32(_pack_f32({name}))[0]"
    return name


def _build_lines(values: list[tuple[str, str]], cls: str, *, indent: int) -> str:
    """Fill the slots on the writable base, then make the object the frozen class."""
    pad = " " * indent
    stores = "".join(f"{pad}self.{name} = {value}\n" for name, value in values)
    return f"{pad}self = _blank()\n{stores}{pad}self.__class__ = {cls}\n{pad}return self\n"


def _methods_source(fields: tuple[tuple[str, FieldSpec], ...]) -> str:
    names = [n for n, _ in fields]
    self_values = "".join(f"self.{n}, " for n in names)
    lines = [_new_source(fields)]
    reprs = ", ".join(f"{n}={{self.{n}!r}}" for n in names)
    # The name comes from the class, not the source: type("Dose'Check", ...) is a valid class
    # whose name used to be pasted into this f-string (a SyntaxError, or braces evaluated).
    lines.append(f"\ndef __repr__(self):\n    return _class_name + f'({reprs})'\n")
    lines.append(
        "\ndef __eq__(self, other):\n"
        "    if _type(other) is not _type(self):\n        return _NotImplemented\n"
        f"    return ({self_values}) == ({''.join(f'other.{n}, ' for n in names)})\n"
    )
    lines.append(f"\ndef __hash__(self):\n    return _hash(({self_values}))\n")
    lines.append("\ndef __setattr__(self, name, value):\n    raise _frozen(self, name)\n")
    lines.append("\ndef __delattr__(self, name):\n    raise _frozen(self, name)\n")
    # Unpickling calls the class, so every value is validated again (nothing is trusted).
    lines.append(f"\ndef __reduce__(self):\n    return (_type(self), ({self_values}))\n")
    # Immutable: a copy is the object itself, as for tuples and frozen dataclasses.
    lines.append("\ndef __copy__(self):\n    return self\n")
    lines.append("\ndef __deepcopy__(self, memo):\n    return self\n")
    kwargs = ", ".join(f"changes.pop({n!r}, self.{n})" for n in names)
    lines.append(
        "\ndef replace(self, /, **changes):\n"
        f"    new = _type(self)({kwargs})\n"
        "    if changes:\n"
        "        raise _TypeError(f'{_type(self).__name__}.replace() got unknown fields: '\n"
        "                         f'{_sorted(changes)}')\n"
        "    return new\n"
    )
    lines.append(f"\ndef to_bytes(self):\n    return _pack({_encoded(fields)})\n")
    lines.append(_decode_source(fields))
    return "".join(lines)


def _encoded(fields: tuple[tuple[str, FieldSpec], ...]) -> str:
    parts = []
    for name, spec in fields:
        if spec.kind == "bigint":
            parts.append(f"self.{name}.to_bytes({spec.size}, 'little')")
        elif spec.kind == "text":
            parts.append(f"self.{name}.encode()")  # struct's `Ns` pads it with NULs
        else:
            parts.append(f"self.{name}")
    return ", ".join(parts)


def _decode_source(fields: tuple[tuple[str, FieldSpec], ...]) -> str:
    # Decoding runs none of __new__'s checks: every value struct produces already fits its
    # field (32 bytes cannot hold an out-of-range U256), and the length is struct's own
    # check. Only big ints and text need converting.
    names = ", ".join(n for n, _ in fields)
    converted = []
    for name, spec in fields:
        if spec.kind == "bigint":
            converted.append(f"_from_int({name}, 'little')")
        elif spec.kind == "text":
            converted.append(f"_text_from_wire({name}, {spec.size})")
        else:
            converted.append(name)
    build = _build_lines(list(zip((n for n, _ in fields), converted, strict=True)), "_cls",
                         indent=4)
    return (
        f"\ndef _decode(buffer):\n    {names}, = _unpack(buffer)\n{build}"
        "\ndef from_bytes(buffer):\n"
        f"    try:\n        {names}, = _unpack(buffer)\n"
        # Not only struct.error: a str or None (TypeError) and a non-contiguous memoryview
        # (BufferError) escaped as themselves, past an `except MessageError`. The tuple is
        # looked at only once something has raised: decoding a good buffer costs the same.
        "    except _bad_buffer:\n        raise _buffer_error(_cls, buffer) from None\n"
        f"{build}"
    )


# The smallest magnitude struct's "f" rounds to infinity and refuses with OverflowError:
# halfway between the largest float32, 2**128 - 2**104, and 2**128 (ties go to even).
_F32_LIMIT = float(2**128 - 2**103)
_F32_STRUCT = struct.Struct("<f")


def _as_float(cls: type[Any], field: str, label: str, value: int, limit: float | None) -> float:
    try:
        converted = float(value)
    except OverflowError:
        raise _value_error(cls, field, label, value) from None
    if limit is not None and not -limit < converted < limit:
        # Checked here, not after: the error used to show the converted float instead.
        raise _value_error(cls, field, label, value)
    return converted


def _text_from_wire(raw: bytes, capacity: int) -> str:
    """A ``Text`` field's bytes as the str the constructor would have accepted.

    NUL is refused at construction, so the first NUL ends the text and the rest is padding;
    a corrupt or foreign peer's NUL inside the text ends it too (not kept: the message would
    hold a value its own ``replace()`` refuses). Bytes that are not UTF-8 become U+FFFD, so
    decoding never raises; since each U+FFFD is 3 bytes in UTF-8, a text that then outgrows
    its capacity loses characters from its end until it fits, as the constructor requires.
    """
    text = raw.partition(b"\0")[0].decode("utf-8", "replace")
    if "\ufffd" in text:  # valid UTF-8 of at most `capacity` bytes always fits
        encoded = text.encode()  # valid UTF-8 now: "replace" leaves no surrogate
        if len(encoded) > capacity:
            # Cut the bytes and drop the character the cut split: the longest prefix that
            # fits, in one pass. Cutting one character at a time and re-encoding the rest
            # each time was quadratic: one 65,000-byte Text of 0xFF took 11 s to decode.
            text = encoded[:capacity].decode("utf-8", "ignore")
    return text


def _text_fits(value: str, capacity: int) -> bool:
    if "\0" in value:
        return False  # NUL is the padding: it would vanish on the way back
    try:
        return len(value.encode()) <= capacity
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
        return False


def _expected(spec: FieldSpec) -> str:
    if spec.kind in ("int", "bigint"):
        return f"an int in {spec.lo}..{spec.hi}"
    if spec.kind == "bytes":
        return f"exactly {spec.size} bytes"
    if spec.kind == "text":
        return f"a str of at most {spec.size} bytes in UTF-8, without NUL characters"
    if spec.kind == "float" and spec.fmt == "f":
        return f"a float within ±{_F32_LIMIT:.9g} (or inf/nan), or an int in that range"
    if spec.kind == "float":
        return "a float, or an int a float can hold"
    return f"a {spec.kind}"


def _got(value: object) -> str:
    try:
        shown = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits() has no str (Python 3.11+)
        if not isinstance(value, int):
            raise
        shown = f"of {value.bit_length()} bits" if value >= 0 else (
            f"below zero, of {value.bit_length()} bits")
    if len(shown) > 80:
        shown = shown[:77] + "..."
    got = f"{type(value).__name__} {shown}"
    if isinstance(value, str):
        try:
            got += f" ({len(value.encode())} bytes in UTF-8)"
        except UnicodeEncodeError:
            got += " (a lone surrogate, which has no UTF-8 form)"
    return got


def _value_error(cls: type[Any], field: str, label: str, value: object) -> MessageError:
    spec = dict(cls.FIELDS)[field]
    return MessageError(
        f"{cls.__qualname__}.{field} ({label}) must be {_expected(spec)}, got {_got(value)}"
        f"{_conversion_hint(spec, value)}"
    )


def _conversion_hint(spec: FieldSpec, value: object) -> str:
    """What to pass instead of a subclass or bytes-like value the plain type would accept.

    A field takes exactly ``int``, ``float``, ``str`` or ``bytes`` (what the wire decodes to,
    so a message equals its round trip). "must be an int in 0..255, got Acuity
    <Acuity.CRITICAL: 1>" read as a contradiction (an IntEnum is an int), so the error says
    which conversion makes the value acceptable, only when it would.
    """
    if isinstance(value, bool):
        return ""  # a bool is refused for every field but Bool, converted or not
    kind, name = spec.kind, type(value).__name__
    if kind in ("int", "bigint") and not isinstance(value, str | bytes | float) and hasattr(
            type(value), "__index__") and type(value) is not int:
        # An int subclass (IntEnum), or an integer of another library (numpy.int64).
        try:
            plain = operator.index(value)  # type: ignore[arg-type]
        except Exception:
            return ""
        if spec.lo <= plain <= spec.hi:
            return f" ({name} is not a plain int: pass int(value))"
    elif kind == "float" and not isinstance(value, str | bytes) and hasattr(
            type(value), "__float__") and type(value) not in (int, float):
        # A float subclass (numpy.float64), or a float of another library (numpy.float32).
        try:
            plain_float = float(value)  # type: ignore[arg-type]
        except Exception:
            return ""
        if spec.fmt != "f" or not math.isfinite(plain_float) or abs(plain_float) < _F32_LIMIT:
            return f" ({name} is not a plain float: pass float(value))"
    elif kind == "bytes" and isinstance(value, bytes | bytearray | memoryview) and (
            type(value) is not bytes):
        if memoryview(value).nbytes == spec.size:
            return f" ({name} is not bytes: pass bytes(value))"
    elif kind == "text" and isinstance(value, str) and type(value) is not str and _text_fits(
            str(value), spec.size):
        return f" ({name} is a str subclass; the field holds a plain str: pass str(value))"
    return ""


def _buffer_error(cls: type[Any], buffer: Any) -> MessageError:
    needs = f"{cls.__qualname__}.from_bytes() needs exactly {cls.SIZE} bytes"
    try:
        view = memoryview(buffer)
    except TypeError:
        return MessageError(
            f"{needs} (bytes, bytearray or memoryview), got {type(buffer).__name__}\n"
            "help: pass the bytes that to_bytes() returned, as received"
        )
    # Bytes, not len(): a memoryview of one 4-byte item has len() 1 (struct reads bytes).
    if not view.c_contiguous:
        return MessageError(
            f"{needs} in one contiguous buffer, got a non-contiguous memoryview of "
            f"{view.nbytes} bytes\nhelp: pass bytes(view)"
        )
    return MessageError(f"{needs}, got {view.nbytes}")


def _frozen(obj: object, name: str) -> AttributeError:
    return AttributeError(
        f"{type(obj).__qualname__} is immutable: cannot set or delete {name!r}; "
        "use .replace(...) to make a changed copy"
    )
