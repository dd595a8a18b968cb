"""The wire format: frames round-trip, every kind of bad frame is dropped and counted."""

from __future__ import annotations

import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peers.messages import Quote, Tick, tick

from mycelium_mono.bus.transports.base import TransportStats
from mycelium_mono.bus.transports.wire import (
    HEADER,
    MAGIC,
    MAX_FRAME,
    MAX_SEQUENCE_JUMP,
    VERSION,
    Decoded,
    Dropped,
    DropReason,
    Inbound,
    Outbound,
    SequenceTracker,
    decode_body,
    decode_frame,
    parse_prefix,
    wire_type,
)

PREFIX = wire_type(Tick).prefix
TICK_FP = wire_type(Tick).fingerprint


def header(
    *,
    magic: bytes = MAGIC,
    version: int = VERSION,
    flags: int = 0,
    type_id: int = Tick.TYPE_ID,
    fingerprint: int = TICK_FP,
    publisher: int = 7,
    seq: int = 1,
) -> bytes:
    return HEADER.pack(magic, version, flags, type_id, fingerprint, publisher, seq)


def test_frame_round_trips_message_publisher_and_sequence() -> None:
    out = Outbound(publisher=42)
    first, second = out.frame(tick(1)), out.frame(tick(2))
    decoded = decode_frame(second)
    assert decoded == Decoded(tick(2), Tick.TYPE_ID, 42, 2, TICK_FP)
    assert decode_frame(first).sequence == 1  # type: ignore[union-attr]


def test_frame_starts_with_the_subject_and_a_nul_for_prefix_filtering() -> None:
    frame = Outbound().frame(tick(1))
    assert frame.startswith(b"dist_test.4001\0")
    assert len(frame) == len(PREFIX) + HEADER.size + Tick.SIZE


def test_body_round_trips_with_its_subject() -> None:
    body = Outbound(publisher=5).body(Quote(seq=3, price=1.5))
    decoded = decode_body(body, "dist_chain.4002")
    assert isinstance(decoded, Decoded)
    assert decoded.message == Quote(seq=3, price=1.5)


def test_body_on_the_wrong_subject_is_dropped() -> None:
    body = Outbound(publisher=5).body(Quote(seq=3, price=1.5))
    dropped = Dropped(DropReason.BAD_PREFIX, Quote.TYPE_ID, 5, wire_type(Quote).fingerprint)
    assert decode_body(body, "dist_chain.4003") == dropped


def test_sequence_numbers_are_per_type() -> None:
    out = Outbound()
    out.frame(tick(1))
    quote = decode_frame(out.frame(Quote(seq=1, price=0.0)))
    assert isinstance(quote, Decoded) and quote.sequence == 1


def test_a_class_that_is_not_a_message_has_no_wire_type() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError, match="not a @message class"):
        wire_type(Plain)


def test_prefix_parses_back_to_topic_and_type_id() -> None:
    assert parse_prefix(PREFIX) == ("dist_test", 4001)
    assert parse_prefix(b"dist_test.") is None
    assert parse_prefix(b"a.99999\0") is None
    assert parse_prefix(b"\xff.1\0") is None


def reason(frame: bytes) -> DropReason | None:
    result = decode_frame(frame)
    return result.reason if isinstance(result, Dropped) else None


def test_truncated_header_is_dropped() -> None:
    assert reason(PREFIX + header()[:10]) is DropReason.TRUNCATED


def test_missing_prefix_terminator_is_dropped() -> None:
    assert reason(b"dist_test.4001" + b"x" * 300) is DropReason.BAD_PREFIX


def test_oversize_frame_is_dropped_before_parsing() -> None:
    assert reason(PREFIX + header() + b"\0" * MAX_FRAME) is DropReason.OVERSIZE


def test_bad_magic_and_version_are_dropped() -> None:
    payload = tick(1).to_bytes()
    assert reason(PREFIX + header(magic=b"XX") + payload) is DropReason.BAD_MAGIC
    assert reason(PREFIX + header(version=9) + payload) is DropReason.BAD_VERSION


def test_unknown_type_id_is_dropped() -> None:
    frame = b"dist_test.4099\0" + header(type_id=4099) + tick(1).to_bytes()
    assert reason(frame) is DropReason.UNKNOWN_TYPE


def test_prefix_that_disagrees_with_the_header_is_dropped() -> None:
    frame = b"dist_test.4002\0" + header() + tick(1).to_bytes()
    assert reason(frame) is DropReason.BAD_PREFIX


def test_payload_of_the_wrong_length_is_dropped() -> None:
    assert reason(PREFIX + header() + tick(1).to_bytes()[:-1]) is DropReason.WRONG_LENGTH
    assert reason(PREFIX + header() + tick(1).to_bytes() + b"!") is DropReason.WRONG_LENGTH


def test_fingerprint_mismatch_is_dropped_never_decoded() -> None:
    frame = PREFIX + header(fingerprint=TICK_FP ^ 1) + tick(1).to_bytes()
    assert reason(frame) is DropReason.FINGERPRINT_MISMATCH


def test_fingerprint_mismatch_is_logged_once_per_publisher_and_counted(caplog) -> None:  # type: ignore[no-untyped-def]
    stats = TransportStats()
    inbound = Inbound(stats)
    bad = TICK_FP ^ 0xFF
    with caplog.at_level(logging.ERROR, logger="mycelium_mono.transport"):
        for publisher in (1, 1, 1, 2):
            result = decode_frame(
                PREFIX + header(fingerprint=bad, publisher=publisher) + tick(1).to_bytes()
            )
            assert isinstance(result, Dropped)
            inbound.drop(result)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "4001" in errors[0] and "Tick" in errors[0]
    assert f"{bad:016x}" in errors[0] and f"{TICK_FP:016x}" in errors[0]
    assert stats.extra["drop_fingerprint_mismatch"] == 4
    assert stats.extra["incompatible_peers"] == 2


def test_ack_with_a_foreign_fingerprint_is_a_mismatch_and_zero_means_undefined() -> None:
    ok = Outbound(publisher=3).ack(PREFIX, Tick.TYPE_ID)
    decoded = decode_frame(ok)
    assert isinstance(decoded, Decoded) and decoded.message is None
    undefined = PREFIX + header(flags=1, fingerprint=0, seq=0)
    assert isinstance(decode_frame(undefined), Decoded)
    foreign = PREFIX + header(flags=1, fingerprint=123, seq=0)
    assert reason(foreign) is DropReason.FINGERPRINT_MISMATCH


def test_drops_are_counted_in_transport_stats() -> None:
    stats = TransportStats()
    inbound = Inbound(stats)
    for frame in (
        b"garbage",
        PREFIX + header()[:3],
        b"dist_test.4099\0" + header(type_id=4099) + tick(1).to_bytes(),
    ):
        result = decode_frame(frame)
        assert isinstance(result, Dropped)
        inbound.drop(result)
    assert stats.dropped_malformed == 2
    assert stats.dropped_unknown_type == 1
    assert stats.extra["drop_bad_prefix"] == 1
    assert stats.extra["drop_truncated"] == 1


def test_tracker_counts_gaps_and_missed_messages() -> None:
    tracker = SequenceTracker()
    for seq in (1, 2, 5, 6, 10):
        assert tracker.observe(1, 4001, seq)
    assert (tracker.gaps, tracker.missed) == (2, 5)


def test_tracker_rejects_duplicates() -> None:
    tracker = SequenceTracker()
    assert tracker.observe(1, 4001, 1)
    assert tracker.observe(1, 4001, 2)
    assert tracker.observe(1, 4001, 3)
    assert not tracker.observe(1, 4001, 2)
    assert not tracker.observe(1, 4001, 3)
    assert tracker.duplicates == 2
    assert tracker.gaps == 0


def test_tracker_rejects_a_replayed_first_frame_as_a_duplicate_not_a_restart() -> None:
    tracker = SequenceTracker()
    for seq in (1, 2, 3):
        assert tracker.observe(1, 4001, seq)
    assert not tracker.observe(1, 4001, 1)
    assert tracker.duplicates == 1
    assert tracker.observe(1, 4001, 4), "tracking was reset by the replayed seq 1"


def test_tracker_sees_a_new_incarnation_id_as_a_new_publisher() -> None:
    tracker = SequenceTracker()
    for seq in (1, 2, 3):
        tracker.observe(1, 4001, seq)
    assert tracker.observe(2, 4001, 1)
    assert tracker.publishers == {1, 2}
    assert tracker.gaps == tracker.duplicates == 0


def test_tracker_counts_an_out_of_range_sequence_and_keeps_the_valid_ones() -> None:
    tracker = SequenceTracker()
    for seq in (1, 2, 3):
        assert tracker.observe(1, 4001, seq)
    assert not tracker.observe(1, 4001, 10**12)
    assert tracker.out_of_range == 1
    assert [tracker.observe(1, 4001, seq) for seq in (4, 5, 6)] == [True, True, True]
    assert tracker.duplicates == tracker.gaps == 0


def test_tracker_follows_a_large_jump_once_the_next_frame_confirms_it() -> None:
    tracker = SequenceTracker()
    tracker.observe(1, 4001, 1)
    jump = 1 + MAX_SEQUENCE_JUMP + 10
    assert not tracker.observe(1, 4001, jump)
    assert tracker.observe(1, 4001, jump + 1)
    assert tracker.observe(1, 4001, jump + 2)
    assert tracker.gaps == 1 and tracker.out_of_range == 1


def test_tracker_keeps_types_apart() -> None:
    tracker = SequenceTracker()
    for seq in (1, 2, 3):
        tracker.observe(1, 4001, seq)
        tracker.observe(1, 4002, seq)
    assert tracker.gaps == tracker.duplicates == 0


def test_tracker_accepts_joining_mid_stream_without_a_gap() -> None:
    tracker = SequenceTracker()
    assert tracker.observe(9, 4001, 500)
    assert tracker.observe(9, 4001, 501)
    assert tracker.gaps == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    result = decode_frame(data)
    assert isinstance(result, Decoded | Dropped)
    body = decode_body(data, "dist_test.4001")
    assert isinstance(body, Decoded | Dropped)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 10**6), st.data())
def test_mutated_valid_frames_never_raise_and_decode_only_to_a_tick(seed: int, data) -> None:  # type: ignore[no-untyped-def]
    frame = bytearray(Outbound().frame(tick(seed + 1)))
    rng = random.Random(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        op = rng.choice(("flip", "cut", "add"))
        if op == "flip" and frame:
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        elif op == "cut" and frame:
            del frame[rng.randrange(len(frame)) :]
        else:
            frame[rng.randrange(len(frame) + 1) : 0] = rng.randbytes(rng.randrange(1, 5))
    result = decode_frame(bytes(frame))
    if isinstance(result, Decoded) and result.message is not None:
        assert type(result.message) is Tick  # a flipped payload bit is still a valid Tick
    else:
        assert isinstance(result, Dropped) or result.message is None
