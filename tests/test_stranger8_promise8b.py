"""README "Across processes" and "Security", claim by claim, on a weather network.

Stations publish Readings, a Forecaster consumes them. Only claims no other test exercises
are here: real sockets on 127.0.0.1 (ZeroMQ) and the machine's NATS server at 4222 (each
JetStream test uses a stream of its own and deletes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import zmq
from peers.harness import until
from peers.inlet import ListInlet

from mycelium_mono import F64, U32, U64, MessageBus, message
from mycelium_mono.bus.transports.nats import DEFAULT_PENDING_LIMIT, PENDING_BYTES_LIMIT
from mycelium_mono.bus.transports.wire import HEADER, MAGIC
from mycelium_mono.bus.transports.zmq import ZmqTransport
from mycelium_mono.bus.transports.zmq_security import write_curve_keys

pytest_plugins = ["conftest_distributed"]
pytestmark = pytest.mark.network

TOPIC = "wx8b"


@message(type_id=8281, topic=TOPIC)
class Reading:
    """One station's temperature sample; ``seq`` counts from 1 per station."""

    station: U32
    seq: U64
    celsius: F64


def reading(seq: int) -> Reading:
    return Reading(station=7, seq=seq, celsius=seq / 10)


# -- ZeroMQ: settings and defaults ----------------------------------------------------------


def _sockets(t: ZmqTransport) -> list[zmq.Socket[Any]]:
    # Both of the transport's sockets: what libzmq was really told, not what was stored.
    return [t._xpub, t._sub]  # type: ignore[list-item]


async def test_reconnect_is_a_setting_that_reaches_both_sockets() -> None:
    # README: "Close timeout, TCP keepalive, reconnect and CURVE keys ... are settings".
    # Reconnect was hard-wired (100 ms doubling to 2 s): reconnect_ms= was a TypeError.
    station = ZmqTransport("127.0.0.1:0", reconnect_ms=250, reconnect_max_ms=4000)
    await station.start(ListInlet())
    try:
        for sock in _sockets(station):
            assert sock.getsockopt(zmq.RECONNECT_IVL) == 250
            assert sock.getsockopt(zmq.RECONNECT_IVL_MAX) == 4000
    finally:
        await station.close()
    with pytest.raises(ValueError, match="reconnect_max_ms must be an int >= reconnect_ms"):
        ZmqTransport("127.0.0.1:0", reconnect_ms=500, reconnect_max_ms=100)


async def test_heartbeats_are_off_by_default_and_close_flushes_for_ten_seconds() -> None:
    # README: ZMTP heartbeats off by default (heartbeat_ms=0); close_timeout_s is 10 s.
    quiet = ZmqTransport("127.0.0.1:0")
    beating = ZmqTransport("127.0.0.1:0", heartbeat_ms=400)
    await quiet.start(ListInlet())
    await beating.start(ListInlet())
    try:
        assert quiet.close_timeout_s == 10.0
        assert [s.getsockopt(zmq.HEARTBEAT_IVL) for s in _sockets(quiet)] == [0, 0]
        assert [s.getsockopt(zmq.HEARTBEAT_IVL) for s in _sockets(beating)] == [400, 400]
    finally:
        await quiet.close()
        await beating.close()


# -- ZeroMQ: one cluster list for every peer ------------------------------------------------


@pytest.fixture
async def forecaster() -> AsyncIterator[MessageBus]:
    bus = MessageBus.with_tcp("127.0.0.1:0")
    try:
        yield bus
    finally:
        await bus.close()


async def _publish_and_count(bus: MessageBus, count: int) -> list[int]:
    sub = bus.subscribe(Reading, maxsize=count * 2)
    await bus.ready()
    publish = bus.publisher(Reading)
    for seq in range(1, count + 1):
        await publish.publish(reading(seq))
    seen: list[int] = []
    await until(lambda: _drain(sub, seen) >= count)
    await asyncio.sleep(0.2)  # a second copy, if one were coming back, arrives by now
    _drain(sub, seen)
    return seen


def _drain(sub: Any, seen: list[int]) -> int:
    while len(sub):
        seen.append(sub.recv_nowait().seq)
    return len(seen)


async def test_connect_to_its_own_address_is_ignored(forecaster: MessageBus) -> None:
    await forecaster.start()
    await forecaster.connect_to(forecaster.transport.endpoint)  # the cluster list names us
    assert forecaster.transport.peers == []  # type: ignore[attr-defined]
    assert await _publish_and_count(forecaster, 50) == list(range(1, 51))


async def test_its_own_address_under_another_spelling_is_ready_and_counted(
    forecaster: MessageBus,
) -> None:
    # README: its own frames, if they come back, are dropped and counted as own_frames. A
    # cluster list saying "localhost" for a bus bound at 127.0.0.1 used to make ready() wait
    # for an acknowledgement from a peer that is this bus, then time out after 10 s.
    await forecaster.start()
    port = forecaster.transport.endpoint.rsplit(":", 1)[1]  # type: ignore[attr-defined]
    await forecaster.connect_to(f"localhost:{port}")
    forecaster.transport.ready_timeout_s = 3.0  # type: ignore[attr-defined]
    assert await _publish_and_count(forecaster, 50) == list(range(1, 51))  # each once
    assert forecaster.transport.stats.extra["own_frames"] >= 50


# -- NATS ----------------------------------------------------------------------------------


async def test_wait_for_subscribers_on_nats_says_it_cannot_count(shared_nats: str) -> None:
    # README: "NATS cannot count and says so" — through the bus, core and JetStream alike.
    stream = f"WX8B_{uuid.uuid4().hex[:10].upper()}"
    for options in ({}, {"jetstream": True, "stream": stream}):
        bus = MessageBus.with_nats(shared_nats, **options)
        try:
            with pytest.raises(NotImplementedError, match="NATS cannot count the subscribers"):
                await bus.wait_for_subscribers(1, Reading, timeout=1)
        finally:
            await bus.close()


async def test_core_subjects_are_topic_dot_type_id_and_bad_payloads_are_counted(
    shared_nats: str,
) -> None:
    # README: subjects <topic>.<type_id>; malformed frames are dropped and counted in
    # bus.transport.stats. A raw nats-py client plays the station and the attacker.
    raw = await nats.connect(shared_nats)
    heard = await raw.subscribe(f"{TOPIC}.8281")
    station = MessageBus.with_nats(shared_nats)
    forecast = MessageBus.with_nats(shared_nats)
    try:
        sub = forecast.subscribe(Reading, maxsize=100)
        await forecast.ready()
        await station.publisher(Reading).publish(reading(1))
        await station.transport.flush()
        assert (await heard.next_msg(timeout=5)).subject == f"{TOPIC}.8281"
        unknown = HEADER.pack(MAGIC, 1, 0, 8289, 0, 1, 1)  # a type id nobody defined
        for junk in (b"garbage", HEADER.pack(MAGIC, 1, 0, 8281, 0, 1, 1)[:12], unknown):
            await raw.publish(f"{TOPIC}.8281", junk)
        await raw.flush()
        await station.publisher(Reading).publish(reading(2))
        await station.transport.flush()
        seen: list[int] = []
        await until(lambda: _drain(sub, seen) >= 2)
        stats = forecast.transport.stats
        assert seen == [1, 2]
        assert (stats.dropped_malformed, stats.dropped_unknown_type) == (2, 1), stats
    finally:
        await station.close()
        await forecast.close()
        await raw.close()


def test_the_core_client_buffer_defaults() -> None:
    # README table: pending_limit, default 65,536 messages and at most 64 MiB of payload.
    from mycelium_mono.bus.transports.nats import NatsTransport

    assert NatsTransport().pending_limit == DEFAULT_PENDING_LIMIT == 65_536
    assert PENDING_BYTES_LIMIT == 64 * 1024 * 1024


@pytest.fixture
async def wx_stream(shared_nats: str) -> AsyncIterator[str]:
    stream = f"WX8B_{uuid.uuid4().hex[:10].upper()}"
    try:
        yield stream
    finally:
        nc = await nats.connect(shared_nats)
        try:
            for name in (stream, f"DLQ_{stream}", f"dlq_{stream}"):
                with contextlib.suppress(nats.js.errors.NotFoundError):  # never created
                    await nc.jetstream().delete_stream(name)
        finally:
            await nc.close()


async def test_durable_overrides_name_in_the_consumer_name(
    shared_nats: str, wx_stream: str
) -> None:
    # README: name="risk" gives consumer risk-<topic>-<type_id>; durable= overrides the name.
    bus = MessageBus.with_nats(
        shared_nats, jetstream=True, stream=wx_stream, name="station", durable="forecaster"
    )
    try:
        bus.subscribe(Reading, maxsize=10)
        await bus.ready()
        nc = await nats.connect(shared_nats)
        try:
            names = [c.name for c in await nc.jetstream().consumers_info(wx_stream)]
        finally:
            await nc.close()
        assert names == [f"forecaster-{TOPIC}-8281"], names
    finally:
        await bus.close()


async def test_stream_max_bytes_is_applied(shared_nats: str, wx_stream: str) -> None:
    # README: stream limits stream_max_bytes (the other limits have a test of their own).
    bus = MessageBus.with_nats(shared_nats, jetstream=True, stream=wx_stream, stream_max_bytes=4096)
    try:
        publish = bus.publisher(Reading)
        for seq in range(1, 201):
            await publish.publish(reading(seq))
        await bus.transport.flush()
        nc = await nats.connect(shared_nats)
        try:
            info = await nc.jetstream().stream_info(wx_stream)
        finally:
            await nc.close()
        assert info.config.max_bytes == 4096
        assert 0 < info.state.bytes <= 4096 and info.state.messages < 200
        assert info.state.last_seq == 200  # discard "old": the newest is kept
    finally:
        await bus.close()


# -- ZeroMQ: key files ---------------------------------------------------------------------

_SEEN_SECRET_MODES: list[int] = []
_WATCHED: list[str] = []


def _watch_secret_writes(event: str, args: tuple[Any, ...]) -> None:
    # Audit hooks cannot be removed: this one does nothing unless a test set _WATCHED.
    if _WATCHED and event == "open" and str(args[0]).endswith(_WATCHED[0]):
        path = Path(str(args[0]))
        if path.exists():  # called again on the written file: what mode did it get?
            _SEEN_SECRET_MODES.append(stat.S_IMODE(path.stat().st_mode))
    if _WATCHED and event == "os.chmod" and str(args[0]).endswith(_WATCHED[0]):
        _SEEN_SECRET_MODES.append(stat.S_IMODE(Path(str(args[0])).stat().st_mode))


sys.addaudithook(_watch_secret_writes)


def test_a_secret_key_file_is_never_on_disk_readable_by_others(tmp_path: Path) -> None:
    # README: the secret half is "written with mode 0600". It was written with the umask's
    # permissions (0644 under umask 022) and chmod-ed afterwards: until then every local user
    # could read it. The audit hook stats the file just before the library's chmod.
    old = os.umask(0o022)
    _WATCHED[:] = ["forecaster.key_secret"]
    try:
        public, secret = write_curve_keys(tmp_path / "keys", "forecaster")
    finally:
        _WATCHED.clear()
        os.umask(old)
    assert _SEEN_SECRET_MODES and set(_SEEN_SECRET_MODES) == {0o600}, [
        oct(m) for m in _SEEN_SECRET_MODES
    ]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644  # the public half stays shareable
