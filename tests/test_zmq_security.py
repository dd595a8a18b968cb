"""ZeroMQ CURVE between real sockets on 127.0.0.1, the allow-list, and the public-bind warning."""

from __future__ import annotations

import logging
import stat
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from peers.harness import free_port, until
from peers.messages import Tick, tick

from mycelium_mono.bus.transports.base import CallbackInlet
from mycelium_mono.bus.transports.wire import wire_type
from mycelium_mono.bus.transports.zmq import ZmqTransport
from mycelium_mono.bus.transports.zmq_security import (
    CurveConfig,
    CurveKeyPair,
    InsecureTransportWarning,
    load_allowed_keys,
    load_curve_keys,
    load_public_key,
    warn_if_exposed,
    write_curve_keys,
)

pytestmark = pytest.mark.network

N = 1000
TICK = wire_type(Tick).prefix


def curve(keys: CurveKeyPair, allowed: set[bytes], peers: dict[str, bytes]) -> CurveConfig:
    return CurveConfig(keys, frozenset(allowed), peers)


async def started(transport: ZmqTransport, got: list[Any]) -> ZmqTransport:
    await transport.start(CallbackInlet(got.append))
    return transport


@pytest.fixture
async def closing() -> AsyncIterator[list[ZmqTransport]]:
    """Transports appended here are closed at teardown, whatever happened."""
    opened: list[ZmqTransport] = []
    try:
        yield opened
    finally:
        for t in opened:
            await t.close()


async def curve_publisher(
    closing: list[ZmqTransport], allowed: set[bytes]
) -> tuple[ZmqTransport, CurveKeyPair]:
    keys = CurveKeyPair.generate()
    pub = ZmqTransport("127.0.0.1:0", curve=curve(keys, allowed, {}))
    closing.append(pub)
    await pub.start(CallbackInlet(lambda m: None))
    return pub, keys


async def subscriber(
    closing: list[ZmqTransport], got: list[Any], to: ZmqTransport, config: CurveConfig | None
) -> ZmqTransport:
    sub = ZmqTransport("127.0.0.1:0", curve=config, ready_timeout_s=0.5)
    closing.append(sub)
    await sub.start(CallbackInlet(got.append))
    sub.subscribe(Tick)
    await sub.connect_to(to.address)
    return sub


async def test_curve_pair_exchanges_1000_messages_each_way_in_order(
    closing: list[ZmqTransport],
) -> None:
    a_keys, b_keys = CurveKeyPair.generate(), CurveKeyPair.generate()
    a_addr, b_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    got_a: list[Any] = []
    got_b: list[Any] = []
    a = ZmqTransport(a_addr, curve=curve(a_keys, {b_keys.public}, {b_addr: b_keys.public}))
    b = ZmqTransport(b_addr, curve=curve(b_keys, {a_keys.public}, {a_addr: a_keys.public}))
    closing += [a, b]
    await started(a, got_a)
    await started(b, got_b)
    for me, other in ((a, b_addr), (b, a_addr)):
        me.subscribe(Tick)
        await me.connect_to(other)
    await a.ready(timeout=10)
    await b.ready(timeout=10)
    for seq in range(1, N + 1):
        await a.publish(tick(seq))
        await b.publish(tick(seq))
    await until(lambda: len(got_a) == N and len(got_b) == N)
    assert [m.seq for m in got_a] == list(range(1, N + 1)) == [m.seq for m in got_b]
    assert a.stats.extra.get("curve_rejected", 0) == 0


async def test_unknown_key_gets_nothing_through_counted_and_logged_once(
    closing: list[ZmqTransport], caplog: pytest.LogCaptureFixture
) -> None:
    friend, stranger = CurveKeyPair.generate(), CurveKeyPair.generate()
    pub, server = await curve_publisher(closing, {friend.public})
    got_friend: list[Any] = []
    got_stranger: list[Any] = []
    ok = await subscriber(
        closing, got_friend, pub, curve(friend, set(), {pub.address: server.public})
    )
    # The stranger knows the publisher's public key; only the allow-list keeps it out.
    # Two of its processes try (ZeroMQ does not retry a refused handshake by itself).
    strangers = [
        await subscriber(
            closing, got_stranger, pub, curve(stranger, set(), {pub.address: server.public})
        )
        for _ in range(2)
    ]
    await ok.ready(timeout=10)
    with pytest.raises(TimeoutError, match="allow-list"):
        await strangers[0].ready(timeout=0.5)
    for seq in range(1, N + 1):
        await pub.publish(tick(seq))
    await until(lambda: len(got_friend) == N)
    await until(lambda: pub.stats.extra.get("curve_rejected", 0) == 2)
    assert got_stranger == []
    assert pub.subscriber_count(TICK) == 1  # only the friend's subscription arrived
    key = stranger.public.decode()
    warned = [r for r in caplog.records if key in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING


async def test_plain_text_peer_gets_nothing_from_a_curve_publisher(
    closing: list[ZmqTransport],
) -> None:
    friend = CurveKeyPair.generate()
    pub, server = await curve_publisher(closing, {friend.public})
    got_friend: list[Any] = []
    got_plain: list[Any] = []
    ok = await subscriber(
        closing, got_friend, pub, curve(friend, set(), {pub.address: server.public})
    )
    await subscriber(closing, got_plain, pub, None)
    await ok.ready(timeout=10)
    for seq in range(1, 101):
        await pub.publish(tick(seq))
    await until(lambda: len(got_friend) == 100)
    assert got_plain == [] and pub.subscriber_count(TICK) == 1


async def test_subscriber_ignores_a_publisher_whose_key_is_not_the_expected_one(
    closing: list[ZmqTransport],
) -> None:
    me = CurveKeyPair.generate()
    impostor, _ = await curve_publisher(closing, {me.public})
    expected = CurveKeyPair.generate()  # the key the real publisher at that address has
    got: list[Any] = []
    sub = await subscriber(
        closing, got, impostor, curve(me, set(), {impostor.address: expected.public})
    )
    with pytest.raises(TimeoutError):
        await sub.ready(timeout=0.5)
    for seq in range(1, 101):
        await impostor.publish(tick(seq))
    assert impostor.subscriber_count(TICK) == 0 and got == []


# -- the public-bind policy --------------------------------------------------------------
# Constructing a transport does not bind: no socket is opened off loopback by these tests.


def test_public_bind_without_curve_warns_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(InsecureTransportWarning, match="without CURVE: messages cross"):
        ZmqTransport("0.0.0.0:9000", allow_public=True)
    assert any("tcp://0.0.0.0:9000 without CURVE" in r.getMessage() for r in caplog.records)


def test_public_bind_with_curve_does_not_warn() -> None:
    config = curve(CurveKeyPair.generate(), set(), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureTransportWarning)
        ZmqTransport("0.0.0.0:9000", allow_public=True, curve=config)


def test_loopback_bind_with_allow_public_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureTransportWarning)
        ZmqTransport("127.0.0.1:9000", allow_public=True)
        ZmqTransport("ipc:///tmp/mycelium-never-bound.ipc", allow_public=True)


def test_connecting_off_loopback_without_curve_warns() -> None:
    # The check connect_to runs, on its own: connecting would send traffic off this machine.
    with pytest.warns(InsecureTransportWarning, match="connect to tcp://192.0.2.7:9000"):
        assert warn_if_exposed("tcp://192.0.2.7:9000", None, "connect to")


# -- key files ---------------------------------------------------------------------------


def test_key_files_round_trip_with_a_private_secret_file(tmp_path: Path) -> None:
    public_file, secret_file = write_curve_keys(tmp_path / "keys", "adapter")
    write_curve_keys(tmp_path / "keys", "strategy")
    keys = load_curve_keys(secret_file)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert keys.secret.decode() not in repr(keys)
    assert load_public_key(public_file) == keys.public
    assert load_allowed_keys(tmp_path / "keys") >= {keys.public}
    assert len(load_allowed_keys(tmp_path / "keys")) == 2
    with pytest.raises(ValueError, match="holds only a public key"):
        load_curve_keys(public_file)
