"""Private nats-server instances with authentication, TLS and permissions, for the security tests.

Each server gets a config file in a temporary directory, a free port on 127.0.0.1, and is killed
when its ``with`` block ends, whatever happened. Certificates are a throwaway CA made here with
the ``cryptography`` package (the ``dev`` extra).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from peers.harness import NATS_BINARY, free_port, reachable


@dataclass(frozen=True)
class Server:
    """A running private nats-server."""

    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def nats_server(
    tmp: Path, config: str, name: str = "nats", port: int | None = None
) -> Iterator[Server]:
    """``nats-server -c`` with ``config`` on ``port`` (default: a free one); always stopped."""
    if not Path(NATS_BINARY).exists():
        pytest.fail(
            f"{NATS_BINARY} is missing; the NATS security tests start their own servers.\n"
            "help: apt-get install nats-server",
            pytrace=False,
        )
    port = port or free_port()
    conf = tmp / f"{name}.conf"
    log = tmp / f"{name}.log"
    conf.write_text(f"listen: 127.0.0.1:{port}\n{config}")
    proc = subprocess.Popen(
        [NATS_BINARY, "-c", str(conf), "-l", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(proc, port, log)
        yield Server(port, log)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    while not reachable("127.0.0.1", port, 0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            logged = log.read_text(errors="replace") if log.exists() else ""
            raise AssertionError(f"nats-server did not start on port {port}:\n{err}{logged}")
        time.sleep(0.02)


# -- NKeys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NKeyUser:
    seed: str  # "SU..."
    public: str  # "U..."


def new_nkey_user() -> NKeyUser:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    return NKeyUser(seed.decode(), public)


# -- a throwaway PKI -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1, a client certificate, a rogue CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _self_signed("mycelium test CA")
    _, rogue_cert = _self_signed("someone else's CA")
    server_key, server_cert = _issued(ca_key, ca_cert, "127.0.0.1", server=True)
    client_key, client_cert = _issued(ca_key, ca_cert, "mycelium test client", server=False)
    files = {
        "ca.pem": _pem(ca_cert),
        "rogue-ca.pem": _pem(rogue_cert),
        "server.pem": _pem(server_cert),
        "server-key.pem": _key_pem(server_key),
        "client.pem": _pem(client_cert),
        "client-key.pem": _key_pem(client_key),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    d = directory
    return Pki(
        d / "ca.pem",
        d / "server.pem",
        d / "server-key.pem",
        d / "client.pem",
        d / "client-key.pem",
        d / "rogue-ca.pem",
    )


def tls_block(pki: Pki, *, verify_clients: bool = False) -> str:
    verify = f'\n  ca_file: "{pki.ca}"\n  verify: true' if verify_clients else ""
    return (
        f'tls {{\n  cert_file: "{pki.server_cert}"\n  key_file: "{pki.server_key}"'
        f"{verify}\n  timeout: 2\n}}\n"
    )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


# Python 3.13 verifies with VERIFY_X509_STRICT: a CA needs key usage and a key identifier,
# and what it issues an authority key identifier ("Missing Authority Key Identifier").
_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _self_signed(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common, _name(common), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issued(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, common: str, *, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = (
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        if server
        else (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    )
    builder = (
        _builder(common, ca.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- decentralized auth: operator → account → user JWTs, a .creds file -----------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], signer: Any) -> str:
    """A NATS v2 JWT: ed25519-nkey signature over ``header.claims`` by ``signer``."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = _b64(signer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


def _key(prefix: int) -> tuple[Any, str]:
    pair = nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))
    return pair, pair.public_key.decode()


def _claims(issuer: str, subject: str, name: str, nats: dict[str, Any]) -> dict[str, Any]:
    claims = {"iat": int(time.time()), "iss": issuer, "name": name, "sub": subject, "nats": nats}
    claims["jti"] = hashlib.sha256(json.dumps(claims).encode()).hexdigest()[:52].upper()
    return claims


UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


@dataclass(frozen=True)
class Operator:
    """An operator and one account it trusts, as a nats-server config block."""

    config: str
    account: Any  # the account's signing KeyPair


def make_operator(directory: Path) -> Operator:
    operator, op_pub = _key(nkeys.PREFIX_BYTE_OPERATOR)
    account, acct_pub = _key(nkeys.PREFIX_BYTE_ACCOUNT)
    op_jwt = _jwt(
        _claims(op_pub, op_pub, "test-operator", {"type": "operator", "version": 2}), operator
    )
    limits = {**UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
    acct = {"type": "account", "version": 2, "limits": limits}
    acct_jwt = _jwt(_claims(op_pub, acct_pub, "test-account", acct), operator)
    (directory / "operator.jwt").write_text(op_jwt)
    config = (
        f'operator: "{directory / "operator.jwt"}"\n'
        "resolver: MEMORY\n"
        f'resolver_preload: {{\n  {acct_pub}: "{acct_jwt}"\n}}\n'
    )
    return Operator(config, account)


def write_creds(path: Path, signer: Any) -> Path:
    """A user signed by ``signer`` (an account KeyPair), in the ``.creds`` format nsc writes."""
    user, user_pub = _key(nkeys.PREFIX_BYTE_USER)
    issuer = signer.public_key.decode()
    claims = {"type": "user", "version": 2, "pub": {}, "sub": {}, **UNLIMITED}
    user_jwt = _jwt(_claims(issuer, user_pub, "test-user", claims), signer)
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return path


def stranger_account() -> Any:
    """An account KeyPair no server trusts."""
    return _key(nkeys.PREFIX_BYTE_ACCOUNT)[0]
