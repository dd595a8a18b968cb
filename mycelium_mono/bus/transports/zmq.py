"""ZeroMQ transport: brokerless publish/subscribe between peers (``MessageBus.with_tcp``).

Every transport binds one XPUB (its own messages go out there) and owns one SUB that
``connect_to`` points at each peer's XPUB; peers that both publish connect to each other.

Choices, with the measurements behind them (pyzmq 27.3, 2-core build machine):

- Plain (sync) sockets driven by the event loop's reader on ``zmq.FD``: awaiting each
  ``recv`` on ``zmq.asyncio`` caps at ~75k msg/s, one wake-up then a ``NOBLOCK`` drain
  until ``EAGAIN`` reaches ~190k msg/s (issue 4). Re-measured for this module with raw
  frames from another thread: 55k msg/s awaiting each recv, 470k msg/s draining.
- Sends are always ``NOBLOCK`` and ``XPUB_NODROP`` is always on, so a full high-water mark
  is visible as ``EAGAIN`` instead of a silent drop (the default HWM of 1000 silently lost
  ~30% of a burst). ``lossless=True`` queues the frame and makes the awaiting ``publish``
  wait for ``POLLOUT``; ``lossless=False`` drops it and counts ``dropped_overflow``.
  Trade-off of lossy mode: one full subscriber makes the frame drop for every subscriber.
- Slow joiners: no sleeps. ``XPUB_VERBOSER`` hands every (un)subscription to us; the
  publisher answers each with an acknowledgement frame on the subscribed prefix carrying
  its layout fingerprint. The subscriber's :meth:`ZmqTransport.ready` waits until every
  connected peer acknowledged every subscribed type (a layout mismatch is reported here,
  before the first message); the publisher's :meth:`ZmqTransport.wait_for_subscribers`
  waits for ``n`` subscriptions to a type.
- A restarted peer: ZeroMQ reconnects by itself and the SUB re-sends its subscriptions; the
  restarted process has a new random incarnation id in every header, so sequence tracking
  starts afresh for it (a replayed ``seq == 1`` from a live peer is a duplicate, not a
  restart). A peer restarted at another address is :meth:`ZmqTransport.disconnect_from`
  its old one: ZeroMQ would redial that for good, and hear whoever binds it next.

Delivery guarantees (issue 12):

- **Back-pressure.** A frame the bus refuses (a full ``"block"`` subscriber) is held and the
  SUB is not read until there is space: libzmq's receive queue (``hwm``) fills, then TCP,
  then the publisher's send queue, so a lossless publisher's ``await publish`` waits. No
  local queue grows past its ``maxsize``.
- **No abort on a stalled peer.** Before issue 12, a subscriber whose event loop stalled
  3 s while its publisher finished and closed (1 s linger, heartbeats on) died on libzmq's
  ``Assertion failed: !_io_error (stream_engine_base.cpp:310)`` in 4 of 5 runs. Now the
  publisher's close waits for the stalled peer instead of tearing the connection down under
  it, and ZMTP heartbeats are off by default (``heartbeat_ms=0``) as a second guard; a dead
  peer is found by TCP keepalive instead (``keepalive_s``). Measured with heartbeats back
  on (1 s) and the new close: 0 aborts in 6 stalled runs — ``tests/test_zmq_stall.py``
  holds the default to 10.
- **Lossless close.** ``close()`` keeps flushing for up to ``close_timeout_s`` (default 10 s):
  first this transport's own backlog, then libzmq's send queue (the socket's linger). What
  is still unsent then is reported — logged as an error and counted in
  ``stats.extra["undelivered_at_close"]`` (frames in our backlog) and
  ``stats.extra["close_linger_expired"]`` (libzmq dropped what it still held) — never
  silently counted as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import zmq
import zmq.auth.thread

from mycelium_mono.bus.transports.base import Inlet, Transport, TransportStats
from mycelium_mono.bus.transports.wire import (
    MAX_FRAME,
    Decoded,
    Dropped,
    Inbound,
    Outbound,
    WireMismatchError,
    endpoint_token,
    parse_prefix,
    wire_type,
)
from mycelium_mono.bus.transports.wire import decode_frame as _decode_frame
from mycelium_mono.bus.transports.zmq_security import (
    CurveAllowList,
    CurveConfig,
    CurveKeyPair,
    is_loopback,
    warn_if_exposed,
)
from mycelium_mono.bus.waiting import wait_listed
from mycelium_mono.messages import message_class

__all__ = ["CurveConfig", "CurveKeyPair", "WireMismatchError", "ZmqTransport", "endpoint_of"]

log = logging.getLogger("mycelium_mono.transport.zmq")

# At most this many frames per wake-up, then yield to the loop (and come straight back).
_DRAIN_BATCH = 2048
# A guard while frames wait for POLLOUT: the FD wake-up is what normally resumes them.
_POLL_GUARD_S = 0.01
# Acknowledgements of one prefix kept from senders that name no endpoint we connected to
# (peers that predate endpoint tokens, or their restarts), beyond one per connected peer.
_MAX_UNNAMED_ACKS = 1024
# The authenticator matches this exactly (pyzmq has no wildcard for callback providers).
_ZAP_DOMAIN = "mycelium"


def endpoint_of(address: str, *, allow_public: bool = False) -> str:
    """``"127.0.0.1:9000"`` → ``"tcp://127.0.0.1:9000"``; ``tcp://``/``ipc://`` kept.

    Raises :class:`ValueError` for a non-loopback host unless ``allow_public``.
    """
    if address.startswith("ipc://"):
        return address
    endpoint = address if address.startswith("tcp://") else f"tcp://{address}"
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not host or not port:
        raise ValueError(
            f"ZeroMQ address {address!r} has no host:port\n"
            "help: write it as '127.0.0.1:9000', 'tcp://127.0.0.1:9000' or 'ipc:///tmp/x.ipc'"
        )
    if not allow_public and not is_loopback(host.strip("[]")):
        raise ValueError(
            f"refusing to bind or connect ZeroMQ to non-loopback host {host!r} ({address!r})\n"
            "help: peers on other machines need allow_public=True (and curve=... to encrypt "
            "and authenticate them); use 127.0.0.1 for peers on this machine"
        )
    return endpoint


def _reconnect_intervals(first_ms: int, longest_ms: int) -> tuple[int, int]:
    """Check the reconnect settings here, not as a libzmq error at ``start()``."""
    if not isinstance(first_ms, int) or isinstance(first_ms, bool) or first_ms < 1:
        raise ValueError(f"reconnect_ms must be a positive int (milliseconds), got {first_ms!r}")
    if not isinstance(longest_ms, int) or isinstance(longest_ms, bool) or longest_ms < first_ms:
        raise ValueError(
            f"reconnect_max_ms must be an int >= reconnect_ms ({first_ms}), got {longest_ms!r}\n"
            "help: it is the longest wait between reconnect attempts, in milliseconds"
        )
    return first_ms, longest_ms


# What a peer may make this process hold for one frame: frames up to it are read, counted and
# dropped as oversize when past max_frame; a larger one closes that connection unread.
INBOUND_FRAMES_PER_LIMIT = 16
INBOUND_FLOOR = 1 << 20


class ZmqTransport(Transport):
    """One XPUB bound at ``bind``; one SUB connected to every peer given to ``connect_to``.

    ``hwm``: high-water mark (frames) of both sockets; ``lossless``: wait (True) or drop
    and count (False) when a subscriber's HWM is reached; ``close_timeout_s``: how long a
    lossless ``close`` keeps flushing before it reports what was not sent (lossy: 0);
    ``linger_ms``: kept for compatibility, the lossy close's linger; ``heartbeat_ms``: ZMTP
    heartbeat interval, 0 (default) for off — see the module docstring for why;
    ``keepalive_s``: TCP keepalive idle time that finds dead peers instead;
    ``reconnect_ms``/``reconnect_max_ms``: first and longest wait before ZeroMQ reconnects to
    a peer that went away (doubling in between); ``curve``:
    encryption + allow-list; ``allow_public``: permit non-loopback hosts;
    ``ready_timeout_s``: how long :meth:`ready` waits for peers' acknowledgements.
    """

    def __init__(
        self,
        bind: str = "127.0.0.1:9000",
        *,
        hwm: int = 100_000,
        lossless: bool = True,
        curve: CurveConfig | None = None,
        linger_ms: int = 1000,
        heartbeat_ms: int = 0,
        keepalive_s: int = 10,
        reconnect_ms: int = 100,
        reconnect_max_ms: int = 2000,
        close_timeout_s: float = 10.0,
        allow_public: bool = False,
        ready_timeout_s: float = 10.0,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.bind_address = endpoint_of(bind, allow_public=allow_public)
        warn_if_exposed(self.bind_address, curve, "bind")
        self.hwm = hwm
        self.lossless = lossless
        self.curve = curve
        self.linger_ms = linger_ms
        self.heartbeat_ms = heartbeat_ms
        self.keepalive_s = keepalive_s
        self.reconnect_ms, self.reconnect_max_ms = _reconnect_intervals(
            reconnect_ms, reconnect_max_ms
        )
        self.close_timeout_s = close_timeout_s
        self.allow_public = allow_public
        self.ready_timeout_s = ready_timeout_s
        self.max_frame = max_frame
        self.max_inbound = max(INBOUND_FRAMES_PER_LIMIT * max_frame, INBOUND_FLOOR)
        """The largest frame libzmq reads from a peer; past it, it hangs up on that peer."""
        self.stats = TransportStats()
        self.endpoint = ""
        """The bound endpoint (a real port when ``bind`` asked for port 0)."""
        self.peers: list[str] = []
        self._out = Outbound()
        self._in = Inbound(self.stats)
        self._prefixes: set[bytes] = set()
        # Per prefix, who acknowledged it: ("peer", endpoint) when the ack names an endpoint
        # we connected to (a restart of that peer is still that peer), else ("id", its
        # incarnation id) — peers that predate endpoint tokens, or another spelling.
        self._acks: dict[bytes, set[tuple[str, object]]] = {}
        self._peer_tokens: dict[int, str] = {}
        self._subscriptions: Counter[bytes] = Counter()
        self._backlog: deque[bytes] = deque()
        # ids of the acknowledgement frames waiting in _backlog (alive there, so unique):
        # they are no message, so neither stats.sent nor undelivered_at_close counts them
        # (a subscription made behind a backlog used to add one to stats.sent).
        self._backlog_acks: set[int] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._poll_scheduled = False
        self._guard: asyncio.TimerHandle | None = None
        self._ctx: zmq.Context[Any] | None = None
        self._xpub: zmq.Socket[Any] | None = None
        self._sub: zmq.Socket[Any] | None = None
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inlet: Inlet | None = None
        # Received messages the bus refused (a full "block" subscriber), in arrival order,
        # and the task that offers them again once there is space; the SUB is not read
        # meanwhile, except by ready(), which must still hear acknowledgements (see
        # _drain_sub) and holds the data frames it reads on the way, at most hwm of them.
        self._held: deque[Any] = deque()
        self._unparking: asyncio.Task[None] | None = None

    @property
    def publisher_id(self) -> int:
        """This transport's random publisher id (in every frame header)."""
        return self._out.publisher

    @property
    def address(self) -> str:
        """What a peer passes to ``connect_to`` to reach this transport."""
        return self.endpoint or self.bind_address

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, inlet: Inlet) -> None:
        """Bind the XPUB, create the SUB, and start reading both from the event loop."""
        if self._ctx is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._inlet = inlet
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            if self.curve is not None:
                self._start_authenticator(ctx, self.curve)
            self._xpub = self._make_xpub(ctx)
        except BaseException:
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
            ctx.destroy(linger=0)
            raise
        self._ctx = ctx
        self._sub = self._make_sub(ctx)
        for prefix in self._prefixes:
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix)
        self._loop.add_reader(self._xpub.FD, self._service_xpub)
        self._loop.add_reader(self._sub.FD, self._drain_sub)

    def _start_authenticator(self, ctx: zmq.Context[Any], curve: CurveConfig) -> None:
        self._auth = zmq.auth.thread.ThreadAuthenticator(ctx, log=log)
        self._auth.start()
        self._auth.configure_curve_callback(
            _ZAP_DOMAIN, CurveAllowList(curve.allowed_clients, self.stats)
        )

    def _common_options(self, sock: zmq.Socket[Any]) -> None:
        sock.setsockopt(zmq.LINGER, self.linger_ms)
        if self.heartbeat_ms > 0:  # off by default: libzmq's !_io_error assertion (issue 12)
            sock.setsockopt(zmq.HEARTBEAT_IVL, self.heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * self.heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * self.heartbeat_ms)
        if self.keepalive_s > 0:
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, self.keepalive_s)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, self.keepalive_s // 5))
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        sock.setsockopt(zmq.RECONNECT_IVL, self.reconnect_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, self.reconnect_max_ms)
        # libzmq reads a frame whole before anyone can look at it: unbounded, one 300 MiB
        # frame from a peer cost a subscriber 600 MiB (libzmq's copy and pyzmq's) before it
        # was dropped as oversize. Past this limit libzmq disconnects that peer instead (it
        # reconnects; what was in flight on that connection is gone, as for any drop).
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_inbound)

    def _make_xpub(self, ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = ctx.socket(zmq.XPUB)
        self._common_options(sock)
        sock.setsockopt(zmq.SNDHWM, self.hwm)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        if self.curve is not None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.keys.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve.keys.secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN.encode())
        try:
            sock.bind(self.bind_address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(
                f"cannot bind ZeroMQ XPUB at {self.bind_address}: {exc}\n"
                "help: is another bus already bound there? pick another port, or port 0 "
                "for a free one (see transport.endpoint)"
            ) from exc
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _make_sub(self, ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = ctx.socket(zmq.SUB)
        self._common_options(sock)
        sock.setsockopt(zmq.RCVHWM, self.hwm)
        if self.curve is not None:
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.keys.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve.keys.secret)
        return sock

    async def connect_to(self, address: str) -> None:
        """Connect the SUB to a peer's XPUB (ZeroMQ reconnects by itself after a restart)."""
        sub = self._require(self._sub, "connect_to")
        endpoint = endpoint_of(address, allow_public=self.allow_public)
        if endpoint in self.peers:
            return  # one connection per peer: ready() counts one acknowledgement per peer
        if endpoint == self.endpoint:
            # A cluster-wide address list includes this bus: hearing itself would hand its
            # local subscribers each of its own messages a second time.
            log.debug("connect_to(%r): that is this bus's own XPUB; not connecting", address)
            return
        warn_if_exposed(endpoint, self.curve, "connect to")
        if self.curve is not None:
            key = self.curve.peer_keys.get(address) or self.curve.peer_keys.get(endpoint)
            if key is None:
                raise ValueError(
                    f"connect_to({address!r}) with CURVE on, but curve.peer_keys has no "
                    "public key for that address\n"
                    "help: add the peer's CurveKeyPair.public under this exact address"
                )
            sub.setsockopt(zmq.CURVE_SERVERKEY, key)
        sub.connect(endpoint)
        self.peers.append(endpoint)
        self._peer_tokens[endpoint_token(endpoint)] = endpoint
        self._schedule_drain()

    async def disconnect_from(self, address: str) -> None:
        """Forget a peer given to :meth:`connect_to` (one that moved to another address).

        ZeroMQ redials a connected address for good: without this, a peer restarted at a
        new port left its old address in ``peers``, so ``ready()`` after a new
        ``subscribe()`` waited for the dead one until it timed out, and whatever process
        bound the old port next was subscribed to and heard as that peer (its messages
        delivered). Frames that peer already delivered stay delivered; an address never
        connected is ignored.
        """
        sub = self._require(self._sub, "disconnect_from")
        endpoint = endpoint_of(address, allow_public=self.allow_public)
        if endpoint not in self.peers:
            return
        with contextlib.suppress(zmq.ZMQError):  # libzmq already gave up on it: nothing to do
            sub.disconnect(endpoint)
        self.peers.remove(endpoint)
        self._peer_tokens.pop(endpoint_token(endpoint), None)
        for acked in self._acks.values():
            acked.discard(("peer", endpoint))  # a reconnect must be acknowledged afresh
        self._wake()

    async def close(self) -> None:
        """Flush (lossless: up to ``close_timeout_s``), report what was not sent, close.

        See the module docstring: frames not sent by then are logged as an error and
        counted in ``stats.extra``; nothing unsent is counted in ``stats.sent``.
        """
        if self._ctx is None:
            return
        loop, xpub, sub = self._loop, self._xpub, self._sub
        assert loop is not None and xpub is not None and sub is not None
        deadline = loop.time() + (self.close_timeout_s if self.lossless else 0.0)
        cut_short = False
        if self._backlog and self.lossless:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_drained(), self.close_timeout_s)
            except asyncio.CancelledError:
                # The caller stopped waiting (asyncio.wait_for around close()): close now,
                # with no linger, and report; leaving the sockets open used to keep the port
                # bound, and a second close() found nothing to do.
                cut_short = True
                deadline = loop.time()
        loop.remove_reader(xpub.FD)
        loop.remove_reader(sub.FD)
        if self._guard is not None:
            self._guard.cancel()
        if self._unparking is not None:
            self._unparking.cancel()
        self._held.clear()
        # None first: a drain or poll already scheduled with call_soon then does nothing.
        self._xpub = self._sub = None
        unsent = len(self._backlog) - len(self._backlog_acks)
        self._backlog.clear()
        self._backlog_acks.clear()
        linger_s = max(0.0, deadline - loop.time()) if self.lossless else self.linger_ms / 1000
        sub.close(0)
        xpub.close(round(linger_s * 1000))
        if self._auth is not None:
            self._auth.stop()
        ctx, self._ctx = self._ctx, None
        # term() blocks until linger has flushed the XPUB: keep it off the event loop.
        started = loop.time()
        await asyncio.to_thread(ctx.term)
        expired = loop.time() - started >= linger_s - 0.005 and linger_s > 0
        # Frames left in our backlog mean libzmq's send queue was at its HWM, and the time
        # spent waiting for it left no linger: libzmq dropped what it held. That used to be
        # reported as close_linger_expired=0 (the lost frames counted as sent, silently).
        expired = expired or unsent > 0
        self._report_close(unsent, expired and self.lossless)
        self._wake()
        self._in.sync_stats()
        if cut_short:
            raise asyncio.CancelledError

    def _report_close(self, unsent: int, linger_expired: bool) -> None:
        extra = self.stats.extra
        extra["undelivered_at_close"] = unsent
        extra["close_linger_expired"] = int(linger_expired)
        if unsent or linger_expired:
            log.error(
                "ZeroMQ close at %s: %d frame(s) never left this process%s within "
                "close_timeout_s=%.1f; a peer was too slow or gone\n"
                "help: raise close_timeout_s, or find the stalled subscriber",
                self.address,
                unsent,
                " and libzmq dropped what its send queue still held" if linger_expired else "",
                self.close_timeout_s,
            )

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(self, message_type: type[Any]) -> None:
        """Subscribe the SUB to ``message_type``'s prefix (applied at start if not started)."""
        prefix = wire_type(message_type).prefix
        if prefix in self._prefixes:
            return
        self._prefixes.add(prefix)
        self._acks.setdefault(prefix, set())
        if self._sub is not None:
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix)
            self._schedule_drain()

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until every connected peer acknowledged every subscribed type.

        Raises :class:`WireMismatchError` as soon as a peer's acknowledgement (or frame)
        shows a different layout for a subscribed type id, and :class:`TimeoutError`
        naming the types still unacknowledged after ``timeout`` (``ready_timeout_s``).
        """
        limit = self.ready_timeout_s if timeout is None else timeout
        await self._wait_until(
            self._all_acked, limit, lambda: self._ready_timeout_message(limit), for_ready=True
        )

    def _all_acked(self) -> bool:
        if self._in.mismatches:
            # A peer defines a subscribed type differently: say so now, not after a timeout.
            found = next(iter(self._in.mismatches.values()))
            raise WireMismatchError(found.describe())
        need = len(self.peers)
        return all(len(self._acks[p]) >= need for p in self._prefixes)

    def _ready_timeout_message(self, limit: float) -> str:
        need = len(self.peers)
        missing = sorted(
            p.rstrip(b"\0").decode() for p in self._prefixes if len(self._acks[p]) < need
        )
        return (
            f"ZeroMQ peers {self.peers} did not acknowledge subscriptions {missing} within "
            f"{limit}s\n"
            "help: is every peer running and bound at that address? with CURVE, is this "
            "peer's public key on their allow-list?"
        )

    async def wait_for_subscribers(
        self, n: int, message_type: type[Any], timeout: float = 10.0
    ) -> None:
        """Wait until ``n`` subscriptions to ``message_type`` reached this XPUB."""
        prefix = wire_type(message_type).prefix

        def enough() -> bool:
            return self.subscriber_count(prefix) >= n

        def message() -> str:
            return (
                f"{self.subscriber_count(prefix)} of {n} subscribers to "
                f"{message_type.__name__} reached {self.endpoint} within {timeout}s\n"
                "help: did the subscribers connect_to this address and subscribe?"
            )

        await self._wait_until(enough, timeout, message)

    def subscriber_count(self, prefix: bytes) -> int:
        """Live subscriptions at this XPUB whose prefix matches ``prefix``."""
        return sum(c for p, c in self._subscriptions.items() if prefix.startswith(p))

    async def _wait_until(
        self,
        done: Callable[[], bool],
        timeout: float,
        message: Callable[[], str],
        *,
        for_ready: bool = False,
    ) -> None:
        loop = self._require(self._loop, "ready")
        deadline = loop.time() + timeout
        while not done():
            # Sends on the same socket can consume the FD's wake-up: look ourselves too.
            self._service_xpub()
            self._drain_sub(for_ready)
            if done():
                return
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(message())
            waiter = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait_listed(self._waiters, waiter, waiter), min(left, 0.05))

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, msg: Any) -> None:
        """Send ``msg``; under ``lossless`` wait while frames queue behind a full HWM."""
        self.publish_nowait(msg)
        if self._backlog and self.lossless:  # lossy: the backlog holds only acknowledgements
            await self._wait_drained()

    def full(self) -> bool:
        """Lossless with ``hwm`` frames already waiting here for the HWM to clear."""
        return self.lossless and 0 < self.hwm <= len(self._backlog)

    def publish_nowait(self, msg: Any) -> None:
        """Send without waiting: queue (lossless) or drop and count (lossy) at the HWM.

        Called directly the lossless backlog has no bound; through a bus, :meth:`full`
        makes ``publish_nowait`` refuse once ``hwm`` frames wait here.
        """
        xpub = self._xpub
        if xpub is None:
            raise self._not_started("publish_nowait")
        frame = self._out.frame(msg)
        if self._backlog and self.lossless:
            # Lossless: behind what already waits, in order. Lossy never queues a message
            # behind a waiting acknowledgement (one a stalled subscriber's full pipe holds
            # up): it used to, and then `publish` blocked and `publish_nowait` grew the
            # backlog without bound (100,000 frames, none dropped or counted).
            self._backlog.append(frame)
            return
        try:
            xpub.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self._overflow(frame)
            return
        self.stats.sent += 1
        if not self._poll_scheduled:
            # A send processes the socket's commands and can swallow the FD's wake-up for
            # subscription messages; look once per loop iteration instead of per send.
            self._poll_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._service_xpub)

    def _overflow(self, frame: bytes) -> None:
        if not self.lossless:
            self.stats.dropped_overflow += 1
            return
        self._backlog.append(frame)
        extra = self.stats.extra
        extra["hwm_waits"] = extra.get("hwm_waits", 0) + 1
        self._arm_guard()

    def _arm_guard(self) -> None:
        if self._guard is None and self._loop is not None:
            self._guard = self._loop.call_later(_POLL_GUARD_S, self._on_guard)

    def _on_guard(self) -> None:
        self._guard = None
        self._service_xpub()
        if self._backlog:
            self._arm_guard()

    async def wait_for_space(self) -> None:
        """Wait until fewer than ``hwm`` frames wait here (woken by each flush, not polled)."""
        while self.full() and self._ctx is not None:
            await self._flushed()

    async def _wait_drained(self) -> None:
        while self._backlog and self._ctx is not None:
            await self._flushed()

    async def _flushed(self) -> None:
        """Wait for the next wake-up (a flush, a subscription event, close)."""
        loop = self._require(self._loop, "publish")
        waiter = loop.create_future()
        self._arm_guard()
        await wait_listed(self._waiters, waiter, waiter)

    def _flush_backlog(self, xpub: zmq.Socket[Any]) -> None:
        backlog = self._backlog
        extra = self.stats.extra
        # Lossless publish_nowait cannot wait, so the backlog is unbounded: show its peak.
        extra["backlog_peak"] = max(extra.get("backlog_peak", 0), len(backlog))
        acks = self._backlog_acks
        sent = flushed = 0
        try:
            while backlog:
                frame = backlog[0]
                xpub.send(frame, zmq.NOBLOCK)
                backlog.popleft()
                flushed += 1
                if acks and id(frame) in acks:
                    acks.discard(id(frame))  # an acknowledgement, not a message
                else:
                    sent += 1
        except zmq.Again:
            pass
        self.stats.sent += sent
        if flushed:
            self._wake()

    # -- receiving -----------------------------------------------------------------------

    def _service_xpub(self) -> None:
        """Read (un)subscription events, acknowledge subscriptions, flush the backlog."""
        self._poll_scheduled = False
        xpub = self._xpub
        if xpub is None:
            return
        while True:
            try:
                event = xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_subscription_event(xpub, event)
        if self._backlog:
            self._flush_backlog(xpub)

    def _on_subscription_event(self, xpub: zmq.Socket[Any], event: bytes) -> None:
        if not event:
            return
        prefix = event[1:]
        if event[0] == 1:
            self._subscriptions[prefix] += 1
            self._acknowledge(xpub, prefix)
        elif event[0] == 0 and prefix in self._subscriptions:
            # Forgotten at zero: kept, every prefix a peer ever (un)subscribed stayed here
            # for good, and peers choose prefixes freely.
            if self._subscriptions[prefix] > 1:
                self._subscriptions[prefix] -= 1
            else:
                del self._subscriptions[prefix]
        self._wake()

    def _acknowledge(self, xpub: zmq.Socket[Any], prefix: bytes) -> None:
        parsed = parse_prefix(prefix)
        if parsed is None:
            return  # a topic-wide or catch-all subscription: nothing to acknowledge per type
        topic, type_id = parsed
        local = message_class(type_id)
        if local is not None and topic != local.TOPIC:
            log.error(
                "a peer subscribed to type id %d under topic %r, but this process publishes "
                "it as %s with topic %r; it will receive nothing of this type\n"
                "help: both sides must import the same message definition",
                type_id,
                topic,
                local.__qualname__,
                local.TOPIC,
            )
        frame = self._out.ack(prefix, type_id, endpoint_token(self.endpoint))
        if self._backlog:
            self._backlog.append(frame)
            self._backlog_acks.add(id(frame))
            return
        try:
            xpub.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self._backlog.append(frame)
            self._backlog_acks.add(id(frame))
            self._arm_guard()

    def _schedule_drain(self) -> None:
        if self._loop is not None:
            self._loop.call_soon(self._drain_sub)

    def _drain_sub(self, for_ready: bool = False) -> None:
        """One wake-up, then NOBLOCK receives until EAGAIN (or a batch, then yield).

        While the bus refuses (messages are held) the SUB is not read: that is the
        back-pressure. ``for_ready``: ready() is waiting for acknowledgements, which queue
        behind data frames on the same socket; read on, holding the data frames (at most
        ``hwm``), or a peer that starts publishing first would make ready() time out.
        """
        sub = self._sub
        inlet = self._inlet
        if sub is None or inlet is None:
            return
        if self._held:
            if for_ready:
                self._read_while_held(sub)
            return
        handle = self._handle
        n = 0
        try:
            while n < _DRAIN_BATCH:
                try:
                    frame = sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                n += 1
                msg = handle(frame)
                if msg is not None and not inlet.offer(msg):
                    self._park(sub, msg)
                    return
            else:
                self._schedule_drain()
        finally:
            self._in.sync_stats()

    def _handle(self, frame: bytes) -> Any:
        """The message to offer from ``frame``, or ``None`` (dropped, duplicate, or an ack)."""
        result = _decode_frame(frame, self.max_frame)
        if isinstance(result, Dropped):
            self._in.drop(result)
            return None
        if result.publisher == self._out.publisher:
            # Our own frame or ack (this bus reached its own XPUB under another spelling):
            # the local subscribers already have it, and it is no other peer's acknowledgement.
            self._in.count("own_frames")
            if result.message is None:
                self._on_own_ack(frame)
            return None
        if result.message is None:
            self._on_ack(frame, result)
            return None
        if self._in.accept(result):
            self.stats.received += 1
            return result.message
        return None

    def _read_while_held(self, sub: zmq.Socket[Any]) -> None:
        """Read acknowledgements for ready() while held; hold the data frames read on the way."""
        held = self._held
        try:
            while len(held) < max(1, self.hwm):
                try:
                    frame = sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = self._handle(frame)
                if msg is not None:
                    held.append(msg)
        finally:
            self._in.sync_stats()

    def _park(self, sub: zmq.Socket[Any], msg: Any) -> None:
        """Hold ``msg`` and stop reading the SUB until the bus has room (back-pressure)."""
        loop = self._loop
        assert loop is not None
        self._held.append(msg)
        self._in.count("backpressure_waits")
        # Not reading is what pushes back: the FD stays readable, so stop watching it.
        loop.remove_reader(sub.FD)
        self._unparking = loop.create_task(self._unpark())

    async def _unpark(self) -> None:
        inlet = self._inlet
        assert inlet is not None
        held = self._held
        while held:  # in arrival order: each publisher's order is kept
            msg = held[0]
            while not inlet.offer(msg):
                await inlet.space(type(msg))
            held.popleft()
        self._unparking = None
        sub, loop = self._sub, self._loop
        if sub is not None and loop is not None:
            loop.add_reader(sub.FD, self._drain_sub)
            self._drain_sub()

    def _on_ack(self, frame: bytes, ack: Decoded) -> None:
        self._in.count("acks_received")
        prefix = frame[: frame.index(b"\0") + 1]
        acked = self._acks.get(prefix)
        peer = self._peer_tokens.get(ack.sequence) if ack.sequence else None
        who: tuple[str, object] = ("id", ack.publisher) if peer is None else ("peer", peer)
        if acked is not None and who not in acked:
            if peer is None and len(acked) >= len(self.peers) + _MAX_UNNAMED_ACKS:
                # Forged acknowledgements under a new publisher id each grew this set by
                # one per frame: past the bound, count them instead.
                self._in.count("acks_ignored")
                return
            acked.add(who)
            self._wake()

    def _on_own_ack(self, frame: bytes) -> None:
        """Our own acknowledgement came back: one of ``peers`` is this bus's own XPUB.

        A cluster list can name this bus under a spelling ``connect_to`` cannot recognise
        (``localhost:9000`` for ``127.0.0.1:9000``). That connection never gets another
        peer's acknowledgement, so ``ready()`` used to time out waiting for it; our own
        acknowledgement stands in for it instead.
        """
        acked = self._acks.get(frame[: frame.index(b"\0") + 1])
        if acked is not None and ("self", 0) not in acked:
            acked.add(("self", 0))
            self._wake()

    # -- helpers -----------------------------------------------------------------------

    def _require(self, value: Any, operation: str) -> Any:
        if value is None:
            raise self._not_started(operation)
        return value

    def _not_started(self, operation: str) -> RuntimeError:
        return RuntimeError(
            f"ZmqTransport.{operation}() before start() (or after close())\n"
            "help: `await bus.start()` (or `async with bus:`) first"
        )

    def __repr__(self) -> str:
        return f"<ZmqTransport {self.address} peers={self.peers} lossless={self.lossless}>"
