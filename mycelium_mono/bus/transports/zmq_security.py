"""ZeroMQ CURVE keys, the allow-list, and the public-bind policy (issue 17).

- :class:`CurveKeyPair` / :class:`CurveConfig`: CURVE encryption, and an allow-list of the
  client keys that may subscribe. The secret key is never in a repr.
- Key files: :func:`write_curve_keys` makes ``<name>.key`` (public, to hand out) and
  ``<name>.key_secret`` (keep private) in the ZeroMQ certificate format (czmq's ZPL, what
  ``zmq.auth`` reads); :func:`load_curve_keys` reads a pair back, :func:`load_public_key`
  a peer's public key; :func:`load_allowed_keys` reads every public ``*.key`` in a
  directory, the allow-list a peer was given.
- :class:`CurveAllowList`: the ZAP handler. A client whose key is not listed is refused
  during the handshake, so nothing it sends or asks for reaches this process; each refusal
  is counted (``stats.extra["curve_rejected"]``) and each unknown key logged once (a
  stranger restarted in a loop would otherwise flood the log; libzmq itself does not retry
  a handshake the ZAP handler refused, measured with pyzmq 27.3).
- :func:`warn_if_exposed`: a bind (or connect) off loopback without CURVE is plain text
  that anyone on the network can read and subscribe to. It is allowed — ``allow_public``
  already says "I know" — but warns loudly, with :class:`InsecureTransportWarning` (a
  ``UserWarning``) and a log line. Silence it with
  ``warnings.filterwarnings("ignore", category=InsecureTransportWarning)`` where a private
  network makes plain text acceptable.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth

from mycelium_mono.bus.transports.base import TransportStats

__all__ = [
    "CurveAllowList",
    "CurveConfig",
    "CurveKeyPair",
    "InsecureTransportWarning",
    "is_loopback",
    "load_allowed_keys",
    "load_curve_keys",
    "load_public_key",
    "warn_if_exposed",
    "write_curve_keys",
]

log = logging.getLogger("mycelium_mono.transport.zmq")


class InsecureTransportWarning(UserWarning):
    """A ZeroMQ socket is reachable off this machine without CURVE: plain text, no auth."""


@dataclass(frozen=True)
class CurveKeyPair:
    """A CURVE key pair, Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> CurveKeyPair:
        """A fresh key pair."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret)


@dataclass(frozen=True)
class CurveConfig:
    """CURVE encryption and an allow-list.

    ``keys`` is this peer's pair: the server keys of its XPUB and the client keys of its
    SUB. ``allowed_clients`` holds the public keys allowed to subscribe to this peer;
    ``peer_keys`` maps each address given to ``connect_to`` to that peer's public key.
    """

    keys: CurveKeyPair
    allowed_clients: frozenset[bytes]
    peer_keys: Mapping[str, bytes]


def write_curve_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``<name>.key`` (public) and ``<name>.key_secret`` (secret) in ``directory``."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    # zmq.auth writes both files with the umask's permissions: under the usual 022 the secret
    # sat on disk readable by every local user until a chmod after it. Create them under a
    # private umask instead, then give the public half its ordinary permissions back.
    umask = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(target, name)
    finally:
        os.umask(umask)
    Path(secret).chmod(0o600)  # a secret file that existed already keeps its old mode
    Path(public).chmod(0o666 & ~umask)
    return Path(public), Path(secret)


def load_curve_keys(secret_file: str | Path) -> CurveKeyPair:
    """This peer's pair from its ``.key_secret`` file."""
    public, secret = zmq.auth.load_certificate(secret_file)
    if secret is None:
        raise ValueError(
            f"{secret_file} holds only a public key\n"
            "help: load this peer's own '<name>.key_secret'; the '.key' files are the "
            "public halves other peers put on their allow-lists"
        )
    return CurveKeyPair(public, secret)


def load_public_key(public_file: str | Path) -> bytes:
    """The public key in a ``<name>.key`` file (what a peer puts in ``peer_keys``)."""
    public, _ = zmq.auth.load_certificate(public_file)
    return public


def load_allowed_keys(directory: str | Path) -> frozenset[bytes]:
    """The public keys of every ``*.key`` file in ``directory`` (an allow-list)."""
    return frozenset(zmq.auth.load_certificates(directory))


class CurveAllowList:
    """ZAP credentials provider: a client is let in only if its public key is listed."""

    def __init__(self, allowed: frozenset[bytes], stats: TransportStats) -> None:
        self.allowed = allowed
        self.stats = stats
        self._logged: set[bytes] = set()
        # The authenticator calls back on its own thread; the counter is read on the loop's.
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        with self._lock:
            extra = self.stats.extra
            extra["curve_rejected"] = extra.get("curve_rejected", 0) + 1
            first = key not in self._logged
            self._logged.add(key)
        if first:
            log.warning(
                "CURVE client %s is not on the allow-list: refused (counted in "
                "stats.extra['curve_rejected']; logged once per key)\n"
                "help: if this peer should subscribe, add its public key to "
                "CurveConfig.allowed_clients",
                key.decode("ascii", "replace"),
            )
        return False


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(endpoint: str, curve: CurveConfig | None, action: str) -> bool:
    """Warn if ``endpoint`` (``tcp://host:port``) is off loopback without CURVE; True if so."""
    if curve is not None or not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    if is_loopback(host):
        return False
    text = (
        f"ZeroMQ {action} {endpoint} without CURVE: messages cross the network in plain "
        "text and any host that reaches it can subscribe\n"
        "help: pass curve=CurveConfig(...) (README: Security), or bind 127.0.0.1"
    )
    log.warning("%s", text)
    warnings.warn(text, InsecureTransportWarning, stacklevel=3)
    return True
