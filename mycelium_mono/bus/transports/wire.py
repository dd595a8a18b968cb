"""The frame every distributed transport sends: prefix, fixed header, the message's layout.

A ZeroMQ frame is one message part::

    b"market_data.19\\x00"  +  header (30 bytes)  +  msg.to_bytes()
     └ prefix: topic, type id, NUL ┘

- The **prefix** is what ZeroMQ's prefix filtering matches. It is the NATS subject of the
  type (``<topic>.<type_id>``) plus a NUL, so a subscription to one type can never match
  another (``x.1\\0`` is not a prefix of ``x.19\\0``), and ``b"market_data."`` subscribes a
  whole topic. NATS carries the subject itself, so its payload is the *body* (header +
  layout) without the prefix.
- The **header** is one :class:`struct.Struct` (little-endian): magic ``b"MY"``, version,
  flags, type id, the wire fingerprint of the sender's class (its layout
  :attr:`FINGERPRINT` *and its topic*, so a topic mismatch is refused like a layout one),
  the publisher's incarnation id (63 random bits per transport instance: a restarted peer
  is a new incarnation, never mistaken for the old one) and a sequence number per
  (incarnation, type id) starting at 1. Per type, not per publisher, because a subscriber
  filters by type and must not see the types it skipped as gaps.
- The **payload** is ``msg.to_bytes()``; its length must equal the class's ``SIZE``.

Decoding never raises on bad input: :func:`decode_frame` / :func:`decode_body` return a
:class:`Decoded` or a :class:`Dropped` with a :class:`DropReason`. :class:`Inbound` counts
every drop in :class:`TransportStats`, logs a fingerprint mismatch (two peers define a type
id differently) once per publisher and type, and tracks sequence numbers. Nothing is ever
unpickled: the only decoder is the message class's own fixed-layout ``_decode``.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from mycelium_mono.bus.transports.base import TransportStats
from mycelium_mono.messages import is_message_class, message_class

__all__ = [
    "FLAG_ACK",
    "HEADER",
    "MAGIC",
    "MAX_FRAME",
    "MAX_MISMATCHES",
    "MAX_PREFIX",
    "MAX_TRACKED",
    "VERSION",
    "Decoded",
    "DropReason",
    "Dropped",
    "FingerprintMismatch",
    "Inbound",
    "Outbound",
    "SequenceTracker",
    "WireMismatchError",
    "WireType",
    "decode_body",
    "decode_frame",
    "describe_mismatch",
    "endpoint_token",
    "parse_prefix",
    "wire_type",
]

log = logging.getLogger("mycelium_mono.transport")

MAGIC = b"MY"
VERSION = 1
HEADER = struct.Struct("<2sBBHQQQ")
"""magic, version, flags, type id, fingerprint, publisher id, sequence number."""

FLAG_ACK = 0x01
"""A subscription acknowledgement: no payload; the sender's fingerprint for the type, or 0."""

MAX_PREFIX = 256
"""Longest accepted prefix (topic, dot, type id, NUL)."""

MAX_FRAME = 1 << 16
"""Frames longer than this are dropped as oversize before anything else is looked at."""

MAX_SEQUENCE_JUMP = 1 << 20
"""A sequence number further than this past the last one seen is not trusted at once.

Issue 12: one frame with ``seq=10**12`` from a live publisher made every later valid frame
a "duplicate". A jump this large is dropped and counted (``sequence_out_of_range``); two
consecutive frames beyond it (``S``, ``S + 1``) are a real jump and resynchronise."""


MAX_TRACKED = 4096
"""Most (incarnation, type id) pairs a :class:`SequenceTracker` remembers, and most
incarnation ids it counts as seen. Every restart of a peer is a new incarnation, and a hostile
peer can forge a new one per frame: unbounded, the tracker grew by one entry per forged frame
(30,000 forged frames, 10,000 entries and 30 MB). Past the bound the pair seen least recently
is forgotten (``stats.extra["sequences_forgotten"]``): its next frame starts afresh."""

MAX_MISMATCHES = 64
"""Most (publisher, type id) fingerprint mismatches kept and logged; the rest are counted in
``stats.extra["mismatches_not_logged"]`` (each frame is still counted as a drop)."""


class WireMismatchError(RuntimeError):
    """A peer's definition (layout or topic) of a subscribed type differs from this process's."""


class DropReason(enum.StrEnum):
    """Why a frame was not delivered."""

    TRUNCATED = "truncated"
    OVERSIZE = "oversize"
    BAD_PREFIX = "bad_prefix"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    WRONG_LENGTH = "wrong_length"


_MALFORMED = frozenset(
    {
        DropReason.TRUNCATED,
        DropReason.OVERSIZE,
        DropReason.BAD_PREFIX,
        DropReason.BAD_MAGIC,
        DropReason.BAD_VERSION,
        DropReason.WRONG_LENGTH,
    }
)


class Decoded(NamedTuple):
    """A frame that passed every check (a NamedTuple: this is the per-message hot path)."""

    message: Any
    """The decoded message, or ``None`` for a subscription acknowledgement."""
    type_id: int
    publisher: int
    sequence: int
    fingerprint: int


@dataclass(frozen=True)
class Dropped:
    """A frame that was not delivered, and why. Fields after ``reason`` are 0 when unknown."""

    reason: DropReason
    type_id: int = 0
    publisher: int = 0
    fingerprint: int = 0


@dataclass(frozen=True)
class WireType:
    """How one message class appears on the wire."""

    cls: type[Any]
    type_id: int
    subject: str
    prefix: bytes
    fingerprint: int
    size: int


_WIRE_TYPES: dict[type[Any], WireType] = {}


def wire_type(cls: type[Any]) -> WireType:
    """The wire description of a ``@message`` class (cached per class object)."""
    found = _WIRE_TYPES.get(cls)
    if found is None:
        if not is_message_class(cls):
            raise TypeError(
                f"{getattr(cls, '__qualname__', cls)!r} is not a @message class, so it has no "
                "wire layout to send or subscribe to\n"
                "help: decorate it with @message(type_id=..., topic=...) from mycelium_mono"
            )
        subject = f"{cls.TOPIC}.{cls.TYPE_ID}"
        found = WireType(
            cls, cls.TYPE_ID, subject, subject.encode() + b"\0", _wire_fingerprint(cls), cls.SIZE
        )
        _WIRE_TYPES[cls] = found
    return found


def _wire_fingerprint(cls: type[Any]) -> int:
    """The layout fingerprint mixed with the topic: both sides must agree on both."""
    data = cls.FINGERPRINT.to_bytes(8, "little") + cls.TOPIC.encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def parse_prefix(prefix: bytes) -> tuple[str, int] | None:
    """``b"market_data.19\\0"`` → ``("market_data", 19)``; ``None`` if it names no one type."""
    if not prefix.endswith(b"\0"):
        return None
    topic, dot, digits = prefix[:-1].rpartition(b".")
    if not dot or not digits.isdigit() or len(digits) > 5:
        return None
    type_id = int(digits)
    if type_id > 0xFFFF:
        return None
    try:
        return topic.decode(), type_id
    except UnicodeDecodeError:
        return None


def decode_frame(frame: bytes, max_frame: int = MAX_FRAME) -> Decoded | Dropped:
    """Decode a ZeroMQ frame (prefix + body). Never raises on bad input."""
    if len(frame) > max_frame:
        return Dropped(DropReason.OVERSIZE)
    end = frame.find(b"\0", 0, MAX_PREFIX)
    if end < 0:
        return Dropped(DropReason.BAD_PREFIX)
    return _decode(frame, end + 1, frame[: end + 1])


def decode_body(
    body: bytes, subject: str | None = None, max_frame: int = MAX_FRAME
) -> Decoded | Dropped:
    """Decode a NATS payload (header + layout); ``subject`` is checked when given."""
    if len(body) > max_frame:
        return Dropped(DropReason.OVERSIZE)
    expected = None if subject is None else subject.encode() + b"\0"
    return _decode(body, 0, expected)


def _decode(buf: bytes, offset: int, prefix: bytes | None) -> Decoded | Dropped:
    start = offset + HEADER.size
    if len(buf) < start:
        return Dropped(DropReason.TRUNCATED)
    magic, version, flags, type_id, fingerprint, publisher, seq = HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        return Dropped(DropReason.BAD_MAGIC)
    if version != VERSION:
        return Dropped(DropReason.BAD_VERSION)
    cls = message_class(type_id)
    if cls is None:
        return Dropped(DropReason.UNKNOWN_TYPE, type_id, publisher, fingerprint)
    wt = _WIRE_TYPES.get(cls) or wire_type(cls)
    if prefix is not None and prefix != wt.prefix:
        return Dropped(DropReason.BAD_PREFIX, type_id, publisher, fingerprint)
    if flags & FLAG_ACK:
        # An acknowledgement from a peer that does not define the type carries 0: no conflict.
        if fingerprint not in (0, wt.fingerprint):
            return Dropped(DropReason.FINGERPRINT_MISMATCH, type_id, publisher, fingerprint)
        if len(buf) != start:
            return Dropped(DropReason.WRONG_LENGTH, type_id, publisher, fingerprint)
        return Decoded(None, type_id, publisher, seq, fingerprint)
    if fingerprint != wt.fingerprint:
        return Dropped(DropReason.FINGERPRINT_MISMATCH, type_id, publisher, fingerprint)
    if len(buf) - start != wt.size:
        return Dropped(DropReason.WRONG_LENGTH, type_id, publisher, fingerprint)
    return Decoded(cls._decode(buf[start:]), type_id, publisher, seq, fingerprint)


class Outbound:
    """Encodes this process's messages: one publisher id, a sequence number per type."""

    def __init__(self, publisher: int | None = None) -> None:
        # 63 random bits: a restarted process is a new publisher to every peer.
        self.publisher = publisher if publisher is not None else secrets.randbits(63) | 1
        self._sequences: dict[int, int] = {}

    def _next(self, type_id: int) -> int:
        seq = self._sequences.get(type_id, 0) + 1
        self._sequences[type_id] = seq
        return seq

    def body(self, msg: Any) -> bytes:
        """Header + layout (NATS payload)."""
        wt = _WIRE_TYPES.get(type(msg)) or wire_type(type(msg))
        header = HEADER.pack(
            MAGIC, VERSION, 0, wt.type_id, wt.fingerprint, self.publisher, self._next(wt.type_id)
        )
        payload: bytes = msg.to_bytes()
        return header + payload

    def frame(self, msg: Any) -> bytes:
        """Prefix + header + layout (ZeroMQ frame)."""
        wt = _WIRE_TYPES.get(type(msg)) or wire_type(type(msg))
        header = HEADER.pack(
            MAGIC, VERSION, 0, wt.type_id, wt.fingerprint, self.publisher, self._next(wt.type_id)
        )
        payload: bytes = msg.to_bytes()
        return wt.prefix + header + payload

    def ack(self, prefix: bytes, type_id: int, endpoint: int = 0) -> bytes:
        """Acknowledge a subscription to ``prefix``, with this side's fingerprint for the type.

        ``endpoint`` (:func:`endpoint_token` of the sender's bound address) travels in the
        sequence field, unused by acknowledgements (0 from senders that predate it): with
        it a subscriber tells a restarted peer (same endpoint, new incarnation id) from a
        second peer.
        """
        cls = message_class(type_id)
        fingerprint = 0 if cls is None else wire_type(cls).fingerprint
        return prefix + HEADER.pack(
            MAGIC, VERSION, FLAG_ACK, type_id, fingerprint, self.publisher, endpoint
        )


def endpoint_token(endpoint: str) -> int:
    """A nonzero 64-bit digest of an endpoint string (``tcp://127.0.0.1:9000``); 0 for ``""``."""
    if not endpoint:
        return 0
    digest = hashlib.blake2b(endpoint.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") | 1


class SequenceTracker:
    """Per (incarnation, type id) sequence numbers: counts gaps, duplicates, wild numbers.

    A new incarnation id is a new peer or a restarted one (ids are random per transport
    instance); that is the only way a sequence starts afresh. A number at or below the last
    one seen is a duplicate (a replayed frame, even ``seq == 1``) and is rejected. A number
    more than :data:`MAX_SEQUENCE_JUMP` ahead is rejected and counted as out of range until
    the next frame confirms it.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, int], int] = {}
        self._suspect: dict[tuple[int, int], int] = {}
        self._publishers: dict[int, None] = {}  # insertion order: the oldest go first
        self.publishers_seen = 0
        self.forgotten = 0
        self.gaps = 0
        self.missed = 0
        self.duplicates = 0
        self.out_of_range = 0

    @property
    def publishers(self) -> set[int]:
        """The incarnation ids seen (the latest :data:`MAX_TRACKED` of them)."""
        return set(self._publishers)

    def observe(self, publisher: int, type_id: int, seq: int) -> bool:
        """Record ``seq``; False means a duplicate the caller must not deliver."""
        key = (publisher, type_id)
        # pop and put back: the dict stays in least-recently-seen order, so the bound
        # (MAX_TRACKED) forgets an incarnation gone quiet, never a live one.
        last = self._last.pop(key, None)
        if last is not None and seq == last + 1:
            self._last[key] = seq
            return True
        return self._unusual(key, last, seq)

    def _unusual(self, key: tuple[int, int], last: int | None, seq: int) -> bool:
        if last is None:
            # A new incarnation (or we joined mid-stream: what came before was never ours).
            self._remember(key)
        elif seq <= last:
            self._last[key] = last
            self.duplicates += 1
            return False
        elif seq - last > MAX_SEQUENCE_JUMP and self._suspect.get(key) != seq - 1:
            self._last[key] = last
            self._suspect[key] = seq
            self.out_of_range += 1
            return False
        else:
            self.gaps += 1
            self.missed += seq - last - 1
        self._suspect.pop(key, None)
        self._last[key] = seq
        return True

    def _remember(self, key: tuple[int, int]) -> None:
        """Make room for a new (incarnation, type id) pair: the bound is MAX_TRACKED.

        ``_publishers`` only counts incarnations (it is in first-seen order): one forgotten
        there and seen again is counted again in ``publishers_seen``."""
        last = self._last
        while len(last) >= MAX_TRACKED:
            oldest = next(iter(last))
            del last[oldest]
            self._suspect.pop(oldest, None)
            self.forgotten += 1
        publishers = self._publishers
        if key[0] not in publishers:
            self.publishers_seen += 1
            while len(publishers) >= MAX_TRACKED:
                del publishers[next(iter(publishers))]
            publishers[key[0]] = None


@dataclass(frozen=True)
class FingerprintMismatch:
    """A peer's definition of a type id differs from ours."""

    type_id: int
    type_name: str
    local: int
    remote: int
    publisher: int

    def describe(self) -> str:
        return (
            f"peer {self.publisher:016x} sends type id {self.type_id} ({self.type_name}) with "
            f"layout fingerprint {self.remote:016x}, but this process defines it as "
            f"{self.local:016x}; its frames are dropped\n"
            "help: both sides must import the same message definition (same class name, "
            "field names, field types and order, and the same topic) for this type id"
        )


class Inbound:
    """Counts drops and tracks sequences for one transport's received frames."""

    def __init__(self, stats: TransportStats) -> None:
        self.stats = stats
        self.tracker = SequenceTracker()
        self.mismatches: dict[tuple[int, int], FingerprintMismatch] = {}

    def accept(self, decoded: Decoded) -> bool:
        """True if ``decoded`` is new and in sequence enough to deliver (not a duplicate)."""
        tracker = self.tracker
        ok = tracker.observe(decoded.publisher, decoded.type_id, decoded.sequence)
        if not ok:
            extra = self.stats.extra
            if tracker.out_of_range != extra.get("sequence_out_of_range", 0):
                extra["sequence_out_of_range"] = tracker.out_of_range
            else:
                self.count("duplicates")
        return ok

    def sync_stats(self) -> None:
        """Copy tracker counters into ``stats`` (cheap; called after each drained batch)."""
        t = self.tracker
        self.stats.sequence_gaps = t.gaps
        extra = self.stats.extra
        extra["messages_missed"] = t.missed
        extra["sequence_out_of_range"] = t.out_of_range
        extra["publishers_seen"] = t.publishers_seen
        if t.forgotten:
            extra["sequences_forgotten"] = t.forgotten

    def drop(self, dropped: Dropped) -> None:
        """Count ``dropped``; log a fingerprint mismatch once per publisher and type."""
        reason = dropped.reason
        if reason in _MALFORMED:
            self.stats.dropped_malformed += 1
        elif reason is DropReason.UNKNOWN_TYPE:
            self.stats.dropped_unknown_type += 1
        self.count(f"drop_{reason.value}")
        if reason is DropReason.FINGERPRINT_MISMATCH:
            self._mismatch(dropped)

    def _mismatch(self, dropped: Dropped) -> None:
        key = (dropped.publisher, dropped.type_id)
        if key in self.mismatches:
            return
        if len(self.mismatches) >= MAX_MISMATCHES:
            # A peer forging a new publisher id per frame logged an error per frame and grew
            # this table without end: past the bound, count (and say so once).
            if not self.stats.extra.get("mismatches_not_logged"):
                log.error(
                    "%d peers or incarnations send types with a layout that differs from "
                    "this process's; further ones are only counted "
                    "(stats.extra['mismatches_not_logged'])",
                    MAX_MISMATCHES,
                )
            self.count("mismatches_not_logged")
            return
        found = _mismatch_of(dropped)
        self.mismatches[key] = found
        self.stats.extra["incompatible_peers"] = len(self.mismatches)
        log.error("%s", found.describe())

    def count(self, key: str) -> None:
        """Add one to ``stats.extra[key]``."""
        extra = self.stats.extra
        extra[key] = extra.get(key, 0) + 1


def _mismatch_of(dropped: Dropped) -> FingerprintMismatch:
    cls = message_class(dropped.type_id)
    return FingerprintMismatch(
        dropped.type_id,
        "?" if cls is None else f"{cls.__module__}.{cls.__qualname__}",
        0 if cls is None else wire_type(cls).fingerprint,
        dropped.fingerprint,
        dropped.publisher,
    )


def describe_mismatch(dropped: Dropped) -> str:
    """The error text for a frame dropped as a fingerprint mismatch."""
    return _mismatch_of(dropped).describe()
