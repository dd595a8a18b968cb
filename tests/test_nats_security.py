"""NATS with credentials, TLS and subject permissions, against its own nats-servers (issue 17).

Each test starts its own ``nats-server`` with a config file in ``tmp_path`` on a free port
(``tests/nats_secure.py``); it is killed when the test ends.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_secure import (
    NKeyUser,
    Operator,
    Pki,
    Server,
    make_operator,
    make_pki,
    nats_server,
    new_nkey_user,
    stranger_account,
    tls_block,
    write_creds,
)
from peers.harness import free_port, until
from peers.messages import Fill, Tick, tick

from mycelium_mono.bus import MessageBus
from mycelium_mono.bus.transports.base import CallbackInlet
from mycelium_mono.bus.transports.nats import NatsTransport
from mycelium_mono.bus.transports.nats_auth import (
    NatsAuthenticationError,
    NatsPermissionError,
    NatsSecurity,
    NatsTLSError,
)

pytestmark = pytest.mark.network

PASSWORD = "pw-Ohx8quee-never-printed"
TOKEN = "tok-Eiqu4ahk-never-printed"
# Long enough that a refusal that waited for it instead of failing at once would show.
PATIENT_S = 20.0

USERS = f"""
authorization {{
  users = [
    {{user: alice, password: "{PASSWORD}"}}
  ]
}}
"""

PERMISSIONS = f"""
authorization {{
  users = [
    {{user: trader, password: "{PASSWORD}", permissions: {{
      publish: {{allow: ["dist_test.>", "_INBOX.>"]}},
      subscribe: {{allow: ["dist_test.>", "_INBOX.>"]}}
    }}}}
  ]
}}
"""


@pytest.fixture
def users_server(tmp_path: Path) -> Iterator[Server]:
    with nats_server(tmp_path, USERS) as server:
        yield server


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[Server]:
    with nats_server(tmp_path, f'authorization {{ token: "{TOKEN}" }}\n') as server:
        yield server


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[Server]:
    with nats_server(tmp_path, tls_block(pki)) as server:
        yield server


@pytest.fixture
def mtls_server(tmp_path: Path, pki: Pki) -> Iterator[Server]:
    with nats_server(tmp_path, tls_block(pki, verify_clients=True)) as server:
        yield server


async def exchange(url: str, n: int = 1000, **options: Any) -> list[int]:
    """Publish ``n`` Ticks from one bus to another through ``url``; the seqs received."""
    receiver = MessageBus.with_nats(url, **options)
    sender = MessageBus.with_nats(url, **options)
    async with receiver, sender:
        sub = receiver.subscribe(Tick, maxsize=n)
        await receiver.ready()
        pub = sender.publisher(Tick)
        for seq in range(1, n + 1):
            await pub.publish(tick(seq))
        return [(await asyncio.wait_for(sub.recv(), 10)).seq for _ in range(n)]


async def refused(url: str, **options: Any) -> tuple[BaseException, float]:
    """Start a transport that must be refused: the error and how long it took."""
    t = NatsTransport(url, connect_timeout_s=PATIENT_S, **options)
    began = time.monotonic()
    with pytest.raises(ConnectionError) as caught:
        await t.start(CallbackInlet(lambda m: None))
    return caught.value, time.monotonic() - began


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in (PASSWORD, TOKEN):
            assert secret not in str(text), f"a secret leaked into: {text}"


# -- user / password ---------------------------------------------------------------------


async def test_user_and_password_deliver_1000_messages_in_order(users_server: Server) -> None:
    got = await exchange(users_server.url, user="alice", password=PASSWORD)
    assert got == list(range(1, 1001))


async def test_jetstream_with_user_and_password_delivers_1000_messages_in_order(
    tmp_path: Path,
) -> None:
    config = USERS + f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
    with nats_server(tmp_path, config) as server:
        got = await exchange(
            server.url, jetstream=True, stream="SECURE", user="alice", password=PASSWORD
        )
    assert got == list(range(1, 1001))


async def test_wrong_password_fails_at_once_naming_the_refused_user(users_server: Server) -> None:
    error, took = await refused(users_server.url, user="alice", password="not-the-password")
    assert isinstance(error, NatsAuthenticationError)
    assert "refused the credentials" in str(error) and "user 'alice'" in str(error)
    assert "help: check the user name and password" in str(error)
    assert "start one" not in str(error)  # the server is running: don't tell them to start it
    assert took < PATIENT_S  # not the connect deadline


async def test_no_credentials_says_the_server_requires_them(users_server: Server) -> None:
    error, _ = await refused(users_server.url)
    assert isinstance(error, NatsAuthenticationError)
    assert "requires authentication and this connection presented none" in str(error)


async def test_password_in_the_url_is_redacted_in_repr_and_errors(users_server: Server) -> None:
    url = f"nats://alice:{PASSWORD}@127.0.0.1:{users_server.port}"
    t = NatsTransport(url)
    await t.start(CallbackInlet(lambda m: None))
    try:
        assert repr(t) == f"<NatsTransport nats://alice:***@127.0.0.1:{users_server.port} core>"
        assert t.url == f"nats://alice:***@127.0.0.1:{users_server.port}"
    finally:
        await t.close()
    wrong = f"nats://alice:{PASSWORD}x@127.0.0.1:{users_server.port}"
    error, _ = await refused(wrong)
    assert "user 'alice' with a password in the URL" in str(error)
    assert_no_secret(error, repr(error), error.__cause__)


async def test_reconnect_to_a_server_with_other_credentials_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with nats_server(tmp_path, USERS, port=port) as server:
        t = NatsTransport(server.url, user="alice", password=PASSWORD)
        await t.start(CallbackInlet(lambda m: None))
    try:
        rotated = USERS.replace(PASSWORD, "rotated-password")
        with nats_server(tmp_path, rotated, name="rotated", port=port):
            # nats-py retries every 0.2 s: several refusals, one log line.
            await until(lambda: t.stats.extra.get("reconnect_refused", 0) >= 3, timeout=20)
    finally:
        await t.close()
    logged = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
    assert len(logged) == 1 and "refused the credentials" in logged[0]
    assert_no_secret(*logged)


# -- token -------------------------------------------------------------------------------


async def test_token_delivers_1000_messages_in_order(token_server: Server) -> None:
    assert await exchange(token_server.url, token=TOKEN) == list(range(1, 1001))


async def test_wrong_token_fails_at_once_without_printing_it(token_server: Server) -> None:
    error, took = await refused(token_server.url, token=TOKEN + "-wrong")
    assert isinstance(error, NatsAuthenticationError)
    assert "(a token)" in str(error) and "authorization { token" in str(error)
    assert took < PATIENT_S
    assert_no_secret(error, repr(error), error.__cause__)


async def test_token_in_the_url_is_not_printed_when_refused(token_server: Server) -> None:
    # The case issue 17 found: the secret was in the message, and it said "start a server".
    error, _ = await refused(f"nats://{TOKEN}x@127.0.0.1:{token_server.port}")
    assert isinstance(error, NatsAuthenticationError)
    assert f"nats://***@127.0.0.1:{token_server.port}" in str(error)
    assert_no_secret(error, repr(error))


# -- NKey --------------------------------------------------------------------------------


@pytest.fixture
def nkey_user() -> NKeyUser:
    return new_nkey_user()


@pytest.fixture
def nkey_server(tmp_path: Path, nkey_user: NKeyUser) -> Iterator[Server]:
    config = f"authorization {{ users = [ {{nkey: {nkey_user.public}}} ] }}\n"
    with nats_server(tmp_path, config) as server:
        yield server


async def test_nkey_seed_file_delivers_1000_messages_in_order(
    nkey_server: Server, nkey_user: NKeyUser, tmp_path: Path
) -> None:
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(nkey_user.seed + "\n")
    got = await exchange(nkey_server.url, nkeys_seed=str(seed_file))
    assert got == list(range(1, 1001))


async def test_unknown_nkey_is_refused_at_once_without_printing_the_seed(
    nkey_server: Server,
) -> None:
    stranger = new_nkey_user()
    error, took = await refused(nkey_server.url, nkeys_seed_str=stranger.seed)
    assert isinstance(error, NatsAuthenticationError)
    assert f"an NKey seed, public key {stranger.public}" in str(error)
    assert "nkey users" in str(error)
    assert stranger.seed not in str(error) and took < PATIENT_S


# -- .creds (JWT) -------------------------------------------------------------------------


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    return make_operator(tmp_path)


@pytest.fixture
def operator_server(tmp_path: Path, operator: Operator) -> Iterator[Server]:
    with nats_server(tmp_path, operator.config) as server:
        yield server


async def test_creds_file_delivers_1000_messages_in_order(
    operator_server: Server, operator: Operator, tmp_path: Path
) -> None:
    creds = write_creds(tmp_path / "user.creds", operator.account)
    got = await exchange(operator_server.url, user_credentials=str(creds))
    assert got == list(range(1, 1001))


async def test_creds_signed_by_an_untrusted_account_are_refused_at_once(
    operator_server: Server, tmp_path: Path
) -> None:
    creds = write_creds(tmp_path / "stranger.creds", stranger_account())
    error, took = await refused(operator_server.url, user_credentials=str(creds))
    assert isinstance(error, NatsAuthenticationError)
    assert f"the credentials in {creds}" in str(error) and "signed by an account" in str(error)
    assert took < PATIENT_S


# -- TLS ---------------------------------------------------------------------------------


async def test_tls_with_the_ca_file_delivers_1000_messages_in_order(
    tls_server: Server, pki: Pki
) -> None:
    got = await exchange(tls_server.url, tls_ca_file=str(pki.ca))
    assert got == list(range(1, 1001))


async def test_tls_server_certificate_from_another_ca_fails_at_once(
    tls_server: Server, pki: Pki
) -> None:
    error, took = await refused(tls_server.url, tls_ca_file=str(pki.rogue_ca))
    assert isinstance(error, NatsTLSError)
    assert "TLS with the NATS server" in str(error) and "certificate" in str(error)
    assert "help: pass tls_ca_file=" in str(error)
    assert took < PATIENT_S


async def test_mutual_tls_with_an_ssl_context_delivers_1000_messages_in_order(
    mtls_server: Server, pki: Pki
) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(pki.client_cert, pki.client_key)
    assert await exchange(mtls_server.url, tls=context) == list(range(1, 1001))


async def test_mutual_tls_without_a_client_certificate_is_refused_at_once(
    mtls_server: Server, pki: Pki
) -> None:
    error, took = await refused(mtls_server.url, tls_ca_file=str(pki.ca))
    assert isinstance(error, NatsTLSError)
    assert "tls_cert_file=" in str(error)
    assert took < PATIENT_S


async def test_tls_asked_of_a_plain_text_server_is_refused_before_credentials_are_sent(
    tmp_path: Path, pki: Pki
) -> None:
    # nats-py alone sends CONNECT, password included, unencrypted here (measured).
    traced = USERS + "trace: true\n"  # the server logs every CONNECT it receives
    with nats_server(tmp_path, traced) as server:
        error, _ = await refused(
            server.url, user="alice", password=PASSWORD, tls_ca_file=str(pki.ca)
        )
        assert isinstance(error, NatsTLSError)
        assert "does not require TLS" in str(error) and "nothing was sent" in str(error)
        assert "CONNECT" not in server.log_text()
        # The control: without TLS options the same credentials do reach it.
        t = NatsTransport(server.url, user="alice", password=PASSWORD)
        await t.start(CallbackInlet(lambda m: None))
        await t.close()
        await until(lambda: "CONNECT" in server.log_text())


# -- permissions -------------------------------------------------------------------------


@pytest.fixture
def permissions_server(tmp_path: Path) -> Iterator[Server]:
    with nats_server(tmp_path, PERMISSIONS) as server:
        yield server


TRADER = {"user": "trader", "password": PASSWORD}


async def test_allowed_subjects_deliver_1000_messages_in_order(
    permissions_server: Server,
) -> None:
    assert await exchange(permissions_server.url, **TRADER) == list(range(1, 1001))


async def test_publish_to_a_forbidden_subject_is_counted_logged_and_raised(
    permissions_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    t = NatsTransport(permissions_server.url, **TRADER)
    await t.start(CallbackInlet(lambda m: None))
    try:
        await t.publish(Fill(seq=1, qty=1))  # dist_chain.4004: not allowed
        with pytest.raises(NatsPermissionError, match=r"publish to 'dist_chain\.4004'"):
            await t.flush()
        assert t.stats.extra["publish_refused"] == 1
        with pytest.raises(NatsPermissionError, match="user 'trader'"):
            await t.publish(Fill(seq=2, qty=1))  # known refused: raises before sending
        await t.publish(tick(1))  # an allowed subject still goes through
        await t.flush()
    finally:
        await t.close()
    refusals = [r for r in caplog.records if "permissions violation" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR


async def test_a_refused_subject_does_not_block_allowed_ones(permissions_server: Server) -> None:
    got: list[Any] = []
    receiver = NatsTransport(permissions_server.url, **TRADER)
    sender = NatsTransport(permissions_server.url, **TRADER)
    await receiver.start(CallbackInlet(got.append))
    await sender.start(CallbackInlet(lambda m: None))
    try:
        receiver.subscribe(Tick)
        await receiver.ready()
        await sender.publish(Fill(seq=1, qty=1))
        await until(lambda: sender.stats.extra.get("publish_refused") == 1)
        for seq in range(1, 101):
            await sender.publish(tick(seq))
        await until(lambda: len(got) == 100)
        with pytest.raises(NatsPermissionError, match="dist_chain"):
            await sender.flush()
    finally:
        await sender.close()
        await receiver.close()
    assert [m.seq for m in got] == list(range(1, 101))


async def test_jetstream_publish_to_a_forbidden_subject_raises_permission_error(
    tmp_path: Path,
) -> None:
    # Not "JetStream did not store ... is the server up?" after the whole flush timeout.
    allow_api = PERMISSIONS.replace(
        '"_INBOX.>"]},\n      subscribe', '"_INBOX.>", "$JS.API.>"]},\n      subscribe'
    )
    assert "$JS.API" in allow_api  # JetStream's API subjects: the stream itself is allowed
    config = allow_api + f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
    with nats_server(tmp_path, config) as server:
        t = NatsTransport(server.url, jetstream=True, stream="PERM", **TRADER)
        await t.start(CallbackInlet(lambda m: None))
        try:
            await t.publish(Fill(seq=1, qty=1))
            with pytest.raises(NatsPermissionError, match=r"publish to 'dist_chain\.4004'"):
                await t.flush()
        finally:
            await t.close()
    assert "publish_failed" not in t.stats.extra


async def test_subscribe_to_a_forbidden_subject_raises_at_ready(
    permissions_server: Server,
) -> None:
    bus = MessageBus.with_nats(permissions_server.url, **TRADER)
    try:
        await bus.start()
        bus.subscribe(Fill)
        with pytest.raises(NatsPermissionError, match=r"subscribe to 'dist_chain\.4004'"):
            await bus.ready()
        assert bus.transport.stats.extra["subscribe_refused"] == 1
    finally:
        await bus.close()


# -- no secret anywhere ------------------------------------------------------------------


async def test_no_secret_in_any_log_record_or_repr(
    permissions_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url_with_secret = f"nats://trader:{PASSWORD}@127.0.0.1:{permissions_server.port}"
    bus = MessageBus.with_nats(url_with_secret)
    texts: list[object] = [repr(bus), repr(bus.transport)]
    try:
        await bus.start()
        await bus.publisher(Fill).publish(Fill(seq=1, qty=1))
        with pytest.raises(NatsPermissionError) as caught:
            await bus.transport.flush()  # type: ignore[attr-defined]
        texts += [caught.value, repr(caught.value)]
    finally:
        await bus.close()
    error, _ = await refused(permissions_server.url, user="trader", password=TOKEN)
    texts += [error, repr(error), error.__cause__, repr(NatsSecurity(token=TOKEN))]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text for r in caplog.records if r.exc_text]
    assert any("permissions violation" in str(t) for t in texts)  # the logs were captured
    assert_no_secret(*texts)
