"""Who a NATS connection is, how it is encrypted, and what a refusal means (issue 17).

:class:`NatsSecurity` holds a connection's credentials and TLS settings under the names
nats-py's ``connect()`` uses (``user``, ``password``, ``token``, ``nkeys_seed``,
``nkeys_seed_str``, ``user_credentials``, ``tls``, ``tls_hostname``,
``tls_handshake_first``), plus ``tls_ca_file``/``tls_cert_file``/``tls_key_file`` for
those who have PEM files rather than an :class:`ssl.SSLContext`. :meth:`connect_kwargs`
turns it into nats-py keyword arguments.

Secrets never leave this module in text: the dataclass repr, :func:`redact_url` (a URL's
``user:password@`` or ``token@``) and every error below show *which kind* of credential
was used, never its value.

:class:`RefusalWatch` reads nats-py's error callback:

- during the first connect, a refusal (bad credentials, a TLS failure) is final: nats-py
  would retry it until our deadline and then report a bare ``TimeoutError`` (measured: 3 s
  and "start a server", issue 17), so the watch raises the translated error at once;
- once connected, ``permissions violation for publish/subscription to "<subject>"`` does not
  close the connection: the server silently drops that publish or subscription. The watch
  counts it, logs it once per subject and remembers it, so that :meth:`RefusalWatch.check`
  raises :class:`NatsPermissionError` at the next publish to that subject, ``flush`` or
  ``ready``;
- a reconnect the server refuses (credentials rotated) is counted and logged once per
  outage; nats-py keeps retrying.

:func:`refuse_plain_text_server` reads the server's INFO before nats-py connects when TLS
was asked for: nats-py itself sends the credentials in plain text to a server that does
not require TLS.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit

__all__ = [
    "REFUSED",
    "NatsAuthOptions",
    "NatsAuthenticationError",
    "NatsPermissionError",
    "NatsSecurity",
    "NatsTLSError",
    "RefusalWatch",
    "redact_url",
    "refuse_plain_text_server",
    "resolve_security",
]

log = logging.getLogger("mycelium_mono.transport.nats")

REDACTED = "***"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^@/,\s]*)@")
_PERMISSION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"', re.I)
# nats-server's words for "these credentials are not accepted" (lower-cased by nats-py).
_AUTH_WORDS = ("authorization violation", "authentication expired", "authentication revoked")
_SECRET_FIELDS = frozenset({"password", "token", "nkeys_seed_str"})


class NatsAuthOptions(TypedDict, total=False):
    """The security keywords ``MessageBus.with_nats(url, ...)`` accepts (see NatsSecurity)."""

    user: str
    password: str
    token: str
    nkeys_seed: str
    nkeys_seed_str: str
    user_credentials: str
    tls: ssl.SSLContext
    tls_ca_file: str
    tls_cert_file: str
    tls_key_file: str
    tls_hostname: str
    tls_handshake_first: bool


class NatsAuthenticationError(ConnectionRefusedError):
    """The server refused this connection's credentials (or demanded some)."""


class NatsTLSError(ConnectionError):
    """The TLS handshake with the server failed (untrusted certificate, missing client cert)."""


class NatsPermissionError(PermissionError):
    """The server refused a publish or subscription: the user may not use that subject."""


@dataclass(frozen=True, repr=False)
class NatsSecurity:
    """Credentials and TLS for one NATS connection; at most one kind of credential.

    - ``user`` + ``password``, or ``token``;
    - ``nkeys_seed`` (path of a seed file) or ``nkeys_seed_str`` (the seed ``SU...``);
    - ``user_credentials``: path of a ``.creds`` file (user JWT + seed, made by ``nsc``);
    - ``tls``: an :class:`ssl.SSLContext`, *or* ``tls_ca_file`` (the CA that signed the
      server's certificate) and/or ``tls_cert_file`` + ``tls_key_file`` (this client's
      certificate, for servers with ``verify: true``); ``tls_hostname``: the name to
      check the server's certificate against when it differs from the URL's host.
    """

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkeys_seed: str | None = None
    nkeys_seed_str: str | None = None
    user_credentials: str | None = None
    tls: ssl.SSLContext | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    tls_handshake_first: bool = False

    def __post_init__(self) -> None:
        problem = _contradiction(self)
        if problem is not None:
            raise ValueError(f"NATS security options: {problem[0]}\nhelp: {problem[1]}")

    @property
    def uses_tls(self) -> bool:
        """True when this side asks for TLS (the server may require it regardless)."""
        return self.tls is not None or any(
            (self.tls_ca_file, self.tls_cert_file, self.tls_key_file, self.tls_handshake_first)
        )

    def describe(self) -> str:
        """Which credential this connection presents, without its value."""
        if self.user is not None:
            return f"user {self.user!r} with a password"
        if self.token is not None:
            return "a token"
        if self.nkeys_seed_str is not None or self.nkeys_seed is not None:
            where = f" from {self.nkeys_seed}" if self.nkeys_seed is not None else ""
            public = _nkey_public(self.nkeys_seed_str, self.nkeys_seed)
            return f"an NKey seed{where}" + (f", public key {public}" if public else "")
        if self.user_credentials is not None:
            return f"the credentials in {self.user_credentials}"
        return "no credentials"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's ``Client.connect`` (files are read here)."""
        kwargs: dict[str, Any] = {
            name: value
            for name in ("user", "password", "token", "nkeys_seed_str", "tls_hostname")
            if (value := getattr(self, name)) is not None
        }
        for name in ("nkeys_seed", "user_credentials"):
            path = getattr(self, name)
            if path is not None:
                kwargs[name] = str(_existing(path, name))
        if self.user_credentials is not None:
            _check_creds(Path(kwargs["user_credentials"]))
        if self.nkeys_seed or self.nkeys_seed_str or self.user_credentials:
            _require_nkeys()
        context = self.ssl_context()
        if context is not None:
            kwargs["tls"] = context
        if self.tls_handshake_first:
            kwargs["tls_handshake_first"] = True
        return kwargs

    def ssl_context(self) -> ssl.SSLContext | None:
        """``tls`` as given, or one built from the PEM paths (None: no TLS asked for)."""
        if self.tls is not None:
            return self.tls
        if not self.uses_tls:
            return None
        ca = self.tls_ca_file
        context = ssl.create_default_context(
            cafile=None if ca is None else str(_existing(ca, "tls_ca_file"))
        )
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            context.load_cert_chain(
                _existing(self.tls_cert_file, "tls_cert_file"),
                _existing(self.tls_key_file, "tls_key_file"),
            )
        return context

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={REDACTED if f.name in _SECRET_FIELDS else repr(getattr(self, f.name))}"
            for f in fields(self)
            if getattr(self, f.name) not in (None, False)
        ]
        return f"NatsSecurity({', '.join(shown)})"


def _contradiction(s: NatsSecurity) -> tuple[str, str] | None:
    """The first pair of options that cannot go together, as (what, help)."""
    for name in ("user", "password", "token", "nkeys_seed_str"):
        if getattr(s, name) == "":
            return f"{name} is empty", f"leave {name} out, or give its value"
    if (s.user is None) != (s.password is None):
        return "user and password go together", "give both user= and password="
    kinds = [
        s.user is not None,
        s.token is not None,
        s.nkeys_seed is not None or s.nkeys_seed_str is not None,
        s.user_credentials is not None,
    ]
    if sum(kinds) > 1 or (s.nkeys_seed is not None and s.nkeys_seed_str is not None):
        return (
            f"more than one credential given ({s.describe()} and more)",
            "give one of user/password, token, nkeys_seed(_str) or user_credentials",
        )
    if s.tls is not None and (s.tls_ca_file or s.tls_cert_file or s.tls_key_file):
        return (
            "tls= (an SSLContext) and tls_*_file paths both given",
            "load the files into your SSLContext, or pass only the paths",
        )
    if (s.tls_cert_file is None) != (s.tls_key_file is None):
        return "tls_cert_file and tls_key_file go together", "give both, or neither"
    return None


def resolve_security(security: NatsSecurity | None, options: NatsAuthOptions) -> NatsSecurity:
    """One :class:`NatsSecurity` from ``security=`` or the nats-py style keywords."""
    if security is not None and options:
        raise ValueError(
            f"NATS security given twice: security={security!r} and "
            f"{', '.join(sorted(options))}\nhelp: pass one or the other"
        )
    if security is not None:
        return security
    unknown = set(options) - set(NatsAuthOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown NATS security option(s): {', '.join(sorted(unknown))}")
    return NatsSecurity(**options)


def redact_url(url: str) -> str:
    """``nats://alice:pw@host`` → ``nats://alice:***@host``; ``nats://tok@host`` → ``***@``."""

    def hide(m: re.Match[str]) -> str:
        user, colon, _ = m["info"].partition(":")
        shown = f"{user}:{REDACTED}" if colon else REDACTED
        return f"{m['scheme']}{shown}@"

    return _USERINFO.sub(hide, url)


def url_credential(url: str) -> str | None:
    """What the URL itself presents (nats-py reads user:password or a token from it)."""
    m = _USERINFO.search(url)
    if m is None:
        return None
    user, colon, _ = m["info"].partition(":")
    return f"user {user!r} with a password in the URL" if colon else "a token in the URL"


def _existing(path: str, option: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"NATS {option}={path!r}: no such file\nhelp: give the path of an existing file"
        )
    return p


def _nkey_public(seed: str | None, seed_file: str | None) -> str | None:
    """The seed's public key (``U...``: safe to show, and what the server lists), or None."""
    try:
        import nkeys  # type: ignore[import-untyped]

        text = seed if seed is not None else Path(str(seed_file)).read_text()
        return str(nkeys.from_seed(bytearray(text.strip().encode())).public_key.decode())
    except Exception:  # unreadable or not a seed: the server's refusal says the rest
        return None


def _check_creds(path: Path) -> None:
    # nats-py reads the JWT with `while True: readline()` until the BEGIN line: a file
    # without one spins forever inside connect, blocking the event loop (nats-py 2.16).
    text = path.read_text(errors="replace")
    for marker in ("BEGIN NATS USER JWT", "BEGIN USER NKEY SEED"):
        if marker not in text:
            raise ValueError(
                f"NATS user_credentials={str(path)!r} is not a .creds file: no "
                f"'-----{marker}-----' section\nhelp: give the file `nsc generate creds` "
                "wrote (a user JWT and its NKey seed)"
            )


def _require_nkeys() -> None:
    # nats-py imports it only inside connect, and then fails with no hint.
    if importlib.util.find_spec("nkeys") is None:
        raise ImportError(
            "NKey and .creds authentication need the 'nkeys' package\n"
            "help: pip install 'mycelium-mono[nats]'"
        )


# -- refusals ----------------------------------------------------------------------------


def _is_auth_refusal(exc: BaseException) -> bool:
    text = str(exc).lower()
    return type(exc).__name__ == "AuthorizationError" or any(w in text for w in _AUTH_WORDS)


def _is_tls_failure(exc: BaseException) -> bool:
    # nats-py's SecureConnRequired/Wanted/FailedError, or the ssl module's own.
    return isinstance(exc, ssl.SSLError) or type(exc).__name__.startswith("SecureConn")


def connect_refusal(exc: BaseException, url: str, security: NatsSecurity) -> ConnectionError | None:
    """The clear error for a final connect failure, or None when retrying may help."""
    where = redact_url(url)
    if _is_auth_refusal(exc):
        return _auth_error(where, security, url_credential(url))
    if _is_tls_failure(exc):
        return _tls_error(where, security, exc)
    return None


def _auth_error(where: str, s: NatsSecurity, from_url: str | None) -> NatsAuthenticationError:
    presented = from_url if s.describe() == "no credentials" and from_url else s.describe()
    if presented == "no credentials":
        return NatsAuthenticationError(
            f"the NATS server at {where} requires authentication and this connection "
            "presented none\nhelp: pass the credentials the server expects: user= and "
            "password=, token=, nkeys_seed= or user_credentials= (README: Security)"
        )
    hint = {
        "user": "check the user name and password against the server's authorization users",
        "a token": "check the token against the server's authorization { token: ... }",
        "an NKey": "is this seed's public key (U...) listed among the server's nkey users?",
        "the cred": "is the .creds file's user signed by an account the server trusts, "
        "and not expired or revoked?",
    }
    help_line = next((h for k, h in hint.items() if presented.startswith(k)), hint["user"])
    return NatsAuthenticationError(
        f"the NATS server at {where} refused the credentials of this connection "
        f"({presented}): authorization violation\nhelp: {help_line}; the server's log "
        "names the connection it refused"
    )


def _tls_error(where: str, s: NatsSecurity, exc: BaseException) -> NatsTLSError:
    reason, fix = _tls_diagnosis(s, exc)
    return NatsTLSError(f"TLS with the NATS server at {where} failed: {reason}\nhelp: {fix}")


def _tls_diagnosis(s: NatsSecurity, exc: BaseException) -> tuple[str, str]:
    """(what went wrong, what to do) for one TLS failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not trusted ({exc.verify_message})", (
            "pass tls_ca_file= (the CA that signed the server's certificate) or tls= an "
            "SSLContext that trusts it; if the name in the certificate differs from the "
            "URL's host, pass tls_hostname="
        )
    alert = str(getattr(exc, "reason", None) or exc)
    if "BAD_CERTIFICATE" in alert.upper() or "CERTIFICATE_REQUIRED" in alert.upper():
        # The server's alert when it verifies clients (verify: true) and ours is missing.
        if s.tls is None and s.tls_cert_file is None:
            return f"the server wants a client certificate ({alert})", (
                "the server verifies clients: pass tls_cert_file= and tls_key_file=, "
                "signed by a CA in the server's tls { ca_file }"
            )
        return f"the server rejected this client's certificate ({alert})", (
            "is the client certificate signed by a CA in the server's tls { ca_file }, "
            "and not expired?"
        )
    return alert, "check the certificates on both sides (the server's log says what it rejected)"


# What the transport re-raises from its first connect, as they are.
REFUSED = (NatsAuthenticationError, NatsTLSError)


def wants_tls(url: str, security: NatsSecurity) -> bool:
    """True when this connection asked for TLS (options, or a ``tls://`` URL)."""
    return security.uses_tls or url.startswith("tls://")


async def refuse_plain_text_server(url: str, security: NatsSecurity, timeout: float) -> None:
    """Before nats-py sends credentials: refuse a server whose INFO does not require TLS.

    nats-py starts TLS only when the server's INFO says ``tls_required``; a ``tls://`` URL
    or a ``tls=`` context alone does not make it refuse a plain-text server (measured with
    nats-py 2.16 against a server without ``tls {}``: it sent CONNECT, with the password,
    unencrypted). So the INFO line is read here first, on a connection of our own.
    """
    if not wants_tls(url, security) or security.tls_handshake_first:
        return  # handshake first: TLS starts before anything is said
    for server in url.split(","):
        info = await _server_info(server.strip(), timeout)
        if info is not None and not info.get("tls_required"):
            raise NatsTLSError(
                f"the NATS server at {redact_url(server.strip())} does not require TLS, but "
                "this connection asked for it; nothing was sent to it\nhelp: enable "
                "tls { ... } on the server, or drop the tls options if plain text on this "
                "network is acceptable"
            )


async def _server_info(server: str, timeout: float) -> dict[str, Any] | None:
    """The server's INFO, or None if it cannot be read (nats-py will report why)."""
    parsed = urlsplit(server if "://" in server else f"nats://{server}")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222),
            timeout,
        )
    except (OSError, TimeoutError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def require_encrypted(client: Any, url: str, security: NatsSecurity) -> None:
    """After connecting: raise :class:`NatsTLSError` if TLS was asked for and is not on.

    :func:`refuse_plain_text_server` normally refused already; this catches a server (or a
    man in the middle) whose INFO changed in between.
    """
    if wants_tls(url, security) and not _encrypted(client):
        raise NatsTLSError(
            f"the NATS connection to {redact_url(url)} is not encrypted, though this "
            "connection asked for TLS; it was closed, after the credentials were sent in "
            "plain text\nhelp: rotate those credentials; with nats-server >= 2.10.4 use "
            "tls_handshake_first=True (and handshake_first on the server)"
        )


def _encrypted(client: Any) -> bool:
    # nats-py keeps its asyncio stream writer on the transport; no public accessor.
    writer = getattr(getattr(client, "_transport", None), "_io_writer", None)
    return writer is not None and writer.get_extra_info("ssl_object") is not None


Refused = Literal["publish", "subscription"]


@dataclass
class RefusalWatch:
    """Reads nats-py's error callback; see the module docstring for what it does with it.

    ``count`` is the transport's counter (``stats.extra``): ``publish_refused`` and
    ``subscribe_refused`` count each refusal the server reported.
    """

    url: str
    security: NatsSecurity
    count: Callable[[str], None]
    connecting: bool = True

    def __post_init__(self) -> None:
        self._refused: dict[tuple[Refused, str], int] = {}
        self._unreported: list[tuple[Refused, str]] = []
        self._reconnect_logged = False

    def on_error(self, exc: BaseException) -> bool:
        """True when the error was a refusal this watch handled (raises while connecting)."""
        refusal = connect_refusal(exc, self.url, self.security)
        if self.connecting:
            if refusal is not None:
                # Raised inside nats-py's connect loop, which then stops retrying.
                raise refusal from exc
            return False
        if refusal is not None:
            self._reconnect_refused(refusal)
            return True
        m = _PERMISSION.search(str(exc))
        if m is None:
            return False
        key: Refused = "publish" if m[1].lower() == "publish" else "subscription"
        self._note(key, m[2])
        return True

    def _reconnect_refused(self, refusal: ConnectionError) -> None:
        # nats-py keeps reconnecting (every reconnect_time_wait): count each refusal, log
        # the first of a run, so a server restarted with new credentials is not a flood.
        self.count("reconnect_refused")
        if not self._reconnect_logged:
            self._reconnect_logged = True
            log.error("reconnecting: %s (retrying; logged once)", refusal)

    async def reconnected(self) -> None:
        """nats-py's ``reconnected_cb``: the next refusal is news again."""
        self._reconnect_logged = False

    def _note(self, kind: Refused, subject: str) -> None:
        seen = self._refused.get((kind, subject), 0)
        self._refused[(kind, subject)] = seen + 1
        self.count("publish_refused" if kind == "publish" else "subscribe_refused")
        self._unreported.append((kind, subject))
        if not seen:  # once per subject: a loop of refused publishes must not flood the log
            log.error("%s", self._message(kind, subject))

    def check(self, kind: Refused, subject: str | None = None) -> None:
        """Raise if ``subject`` was refused before (per publish: one dict test when none
        was), or, without a subject, for every ``kind`` refusal not raised yet."""
        if subject is not None:
            if self._refused and (kind, subject) in self._refused:
                raise NatsPermissionError(self._message(kind, subject))
            return
        news = [r for r in self._unreported if r[0] == kind]
        if news:
            self._unreported = [r for r in self._unreported if r[0] != kind]
            raise NatsPermissionError("\n".join(self._message(*r) for r in dict.fromkeys(news)))

    def _message(self, kind: Refused, subject: str) -> str:
        who = url_credential(self.url) or self.security.describe()
        n = self._refused.get((kind, subject), 0)
        verb = "publish" if kind == "publish" else "subscribe"
        return (
            f"the NATS server at {redact_url(self.url)} refused to let this connection "
            f"({who}) {verb} to {subject!r} ({n}x): permissions violation\n"
            f"help: allow {subject!r} under this user's permissions {{ {verb}: ... }} on the "
            "server, or do not use that message type on this bus"
        )
