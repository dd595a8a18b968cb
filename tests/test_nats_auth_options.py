"""NatsSecurity: which options go together, what nats-py receives, and what is never shown."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from nats_secure import make_pki

from mycelium_mono.bus import MessageBus
from mycelium_mono.bus.transports.nats import NatsTransport
from mycelium_mono.bus.transports.nats_auth import NatsSecurity, redact_url

SECRET = "s3cret-Aiy0ooch"


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"user": "alice"}, "user and password go together"),
        ({"password": SECRET}, "user and password go together"),
        ({"token": ""}, "token is empty"),
        ({"user": "alice", "password": SECRET, "token": SECRET}, "more than one credential"),
        ({"nkeys_seed": "a.nk", "nkeys_seed_str": SECRET}, "more than one credential"),
        ({"tls": ssl.create_default_context(), "tls_ca_file": "ca.pem"}, "both given"),
        ({"tls_cert_file": "client.pem"}, "tls_cert_file and tls_key_file go together"),
    ],
)
def test_contradictory_options_are_refused_with_help(
    options: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        NatsSecurity(**options)  # type: ignore[arg-type]
    assert "help: " in str(caught.value) and SECRET not in str(caught.value)


def test_repr_shows_which_options_are_set_but_no_secret() -> None:
    s = NatsSecurity(user="alice", password=SECRET, tls_ca_file="/etc/ca.pem")
    assert repr(s) == "NatsSecurity(user='alice', password=***, tls_ca_file='/etc/ca.pem')"
    assert SECRET not in repr(NatsSecurity(token=SECRET))
    assert SECRET not in repr(NatsSecurity(nkeys_seed_str=SECRET))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"nats://alice:{SECRET}@h:4222", "nats://alice:***@h:4222"),
        (f"tls://{SECRET}@h:4222", "tls://***@h:4222"),
        (f"nats://a:{SECRET}@h1:1,nats://b:{SECRET}@h2:2", "nats://a:***@h1:1,nats://b:***@h2:2"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ],
)
def test_redact_url_hides_the_userinfo_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_with_nats_takes_nats_py_keywords() -> None:
    bus = MessageBus.with_nats("nats://127.0.0.1:4222", user="alice", password=SECRET)
    transport = bus.transport
    assert isinstance(transport, NatsTransport)
    assert transport.security == NatsSecurity(user="alice", password=SECRET)
    assert transport.security.connect_kwargs() == {"user": "alice", "password": SECRET}


def test_security_object_and_keywords_together_are_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        NatsTransport(security=NatsSecurity(token=SECRET), token=SECRET)  # type: ignore[call-arg]


def test_pem_paths_become_an_ssl_context_that_trusts_the_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    s = NatsSecurity(
        tls_ca_file=str(pki.ca),
        tls_cert_file=str(pki.client_cert),
        tls_key_file=str(pki.client_key),
    )
    context = s.connect_kwargs()["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "mycelium test CA"),),)
    ]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tls_ca_file='.*nope\.pem': no such file"):
        NatsSecurity(tls_ca_file=str(tmp_path / "nope.pem")).connect_kwargs()
    with pytest.raises(FileNotFoundError, match="user_credentials="):
        NatsSecurity(user_credentials=str(tmp_path / "x.creds")).connect_kwargs()


def test_a_file_that_is_not_a_creds_file_is_refused_before_connecting(tmp_path: Path) -> None:
    # nats-py itself loops forever reading such a file, blocking the event loop.
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN USER NKEY SEED-----\nSUAXXX\n------END USER NKEY SEED------\n")
    with pytest.raises(ValueError, match="no '-----BEGIN NATS USER JWT-----' section"):
        NatsSecurity(user_credentials=str(creds)).connect_kwargs()
