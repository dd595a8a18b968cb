"""NATS transport: brokered fan-out, and JetStream for at-least-once delivery (``with_nats``).

Subjects are ``<topic>.<type_id>``; the payload is the wire *body* (header + layout, see
:mod:`~mycelium_mono.bus.transports.wire`), so the same decoder, drop counters, fingerprint
check and sequence tracking apply as over ZeroMQ.

- **Core NATS** (``jetstream=False``): at-most-once fan-out, ``no_echo`` so a process never
  receives its own messages. A subscriber that falls behind loses messages in the client
  (``pending_limit``) or the server; both show up as counted sequence gaps.
- **JetStream** (``jetstream=True``): every publish is stored in ``stream`` (created if
  missing, one ``<topic>.*`` subject per topic used, limits from the ``stream_*`` options)
  with a message id, so a re-sent copy is stored once; :meth:`NatsTransport.flush` confirms
  storage and re-sends, in order, whatever was not confirmed. Each subscribed type gets a
  pull consumer with explicit acks, acknowledged only when the application is done with the
  message (see :mod:`~mycelium_mono.bus.transports.jetstream`: nak with backoff, dead
  letters, poison, back-pressure). The consumer is **durable** whenever the transport has a
  name: ``durable=`` if given, else ``name=``; its server-side name is
  ``<durable>-<topic>-<type id>``, so a restarted process with the same name gets
  everything it had not acknowledged. With neither, the consumer is ephemeral and sees only
  messages published after it started. Messages this process published itself reach its
  own subscribers the same way, from the stream (``delivers_own_messages``): the bus does
  not deliver them locally as well. A local copy would live only in memory, and the stored
  one used to be acknowledged as its duplicate when fetched, so two stages on one bus
  SIGKILLed once lost 1525 of 2000 messages their local subscribers had not handled.
  Redeliveries are delivered again (at-least-once) and counted as ``redelivered``.

Measured on the 2-core build machine: NATS round trip ≈ 250 µs, JetStream publish+ack
≈ 130 µs; hence JetStream publishes are pipelined (``publish_async``, up to
``max_in_flight``) and :meth:`NatsTransport.flush` waits for their acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Unpack

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck

from mycelium_mono.bus.transports.base import Inlet, Transport, TransportStats
from mycelium_mono.bus.transports.jetstream import (
    MSG_ID,
    ConsumerOptions,
    OutputLedger,
    PullConsumer,
    StreamOptions,
    check_last_stored,
    ensure_stream,
    update_durable,
)
from mycelium_mono.bus.transports.nats_auth import (
    REFUSED,
    NatsAuthOptions,
    NatsPermissionError,
    NatsSecurity,
    RefusalWatch,
    redact_url,
    refuse_plain_text_server,
    require_encrypted,
    resolve_security,
)
from mycelium_mono.bus.transports.wire import (
    HEADER,
    MAX_FRAME,
    Dropped,
    Inbound,
    Outbound,
    WireMismatchError,
    WireType,
    decode_body,
    wire_type,
)

__all__ = ["NATS_START_HELP", "NatsTransport"]

log = logging.getLogger("mycelium_mono.transport.nats")

DEFAULT_PENDING_LIMIT = 65_536
"""Messages a core-NATS subscription buffers in the client while its subscriber is full.
nats-py's own default, 524,288, held 64 MiB for 200,000 three-field messages behind a
subscriber nobody read (about 340 B each, measured): a slow consumer could grow a process by
170 MiB per subscription before the first drop. This bound holds about 21 MiB."""
PENDING_BYTES_LIMIT = 64 * 1024 * 1024
"""And payload bytes, whichever comes first (nats.go's default; nats-py's is 128 MiB)."""

NATS_START_HELP = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server "
    "-- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)

_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class _Unacked:
    """A JetStream publish whose storage is not confirmed yet."""

    future: asyncio.Future[Any]
    subject: str
    body: bytes
    msg_id: str
    index: int  # its place in the OutputLedger


async def _round_trip(nc: Client) -> None:
    """A PING/PONG behind every command issued so far: the server's answers to them (a
    permissions ``-ERR``) have been read when it returns.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of commands its
    flusher task has not written yet (2.16): the PONG can overtake the ``-ERR`` for a PUB
    or SUB issued just before (a missed refusal in 2 of 16 runs of two permission tests).
    """
    await nc._flush_pending(force_flush=True)
    await nc.flush()


def _stored(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class NatsTransport(Transport):
    """Messages through a NATS server at ``url``.

    ``jetstream``: store and acknowledge (at-least-once) instead of core fan-out;
    ``stream``: the JetStream stream name (created if missing); ``stream_max_age_s``,
    ``stream_max_bytes``, ``stream_max_msgs``, ``stream_discard`` (``"old"``/``"new"``): its
    retention limits (``None``: unlimited; for ``stream_discard``, left as the stream has it,
    ``"old"`` for a new one); ``durable``: consumer name prefix that survives
    restarts (default: ``name``; with neither, ephemeral consumers that see only new
    messages); ``max_deliver``: deliveries of a failing message before it is dead-lettered to
    ``<dead_letter>.<subject>`` (default ``dlq.<stream>``, stored in its own stream);
    ``backoff_s``: nak delay after each failed delivery; ``max_ack_pending``: messages the
    server hands out unacknowledged (the back-pressure window; default 4 x ``fetch_batch``);
    ``pending_limit``: core-NATS client buffer per subscription, in messages, before it
    drops (and at most ``PENDING_BYTES_LIMIT`` of payload);
    ``fetch_batch``: messages per JetStream pull; ``ack_wait_s``: how long the server waits
    on a *silent* consumer before it hands a fetched, unsettled message out again (while its
    loop runs, the consumer reports the messages it holds "in progress" every third of it,
    for up to ten ack_waits: a slow handler is not repeated, a dead or stalled one is);
    ``max_in_flight``: unacknowledged JetStream publishes before ``publish`` waits;
    ``flush_timeout_s``: how long :meth:`flush` (and ``close``) keeps re-sending what
    JetStream did not store; ``ack_timeout_s``: how long one publish's ack may take.
    Credentials and TLS: ``security=NatsSecurity(...)``, or its fields as keywords under
    nats-py's names (``user=``, ``password=``, ``token=``, ``nkeys_seed=``,
    ``user_credentials=``, ``tls=``, ``tls_ca_file=``, ...); see
    :mod:`~mycelium_mono.bus.transports.nats_auth`. ``url`` is kept redacted.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        jetstream: bool = False,
        stream: str = "MYCELIUM",
        durable: str | None = None,
        name: str | None = None,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
        fetch_batch: int = 512,
        ack_wait_s: float = 30.0,
        max_deliver: int = 5,
        backoff_s: tuple[float, ...] = (0.1, 0.5, 2.0, 5.0),
        dead_letter: str | None = None,
        max_ack_pending: int | None = None,
        stream_max_age_s: float | None = None,
        stream_max_bytes: int | None = None,
        stream_max_msgs: int | None = None,
        stream_discard: Literal["old", "new"] | None = None,
        max_in_flight: int = 4000,
        connect_timeout_s: float = 2.0,
        flush_timeout_s: float = 10.0,
        ack_timeout_s: float = 2.0,
        max_frame: int = MAX_FRAME,
        security: NatsSecurity | None = None,
        **auth: Unpack[NatsAuthOptions],
    ) -> None:
        self.url = redact_url(url)  # what reprs, logs and errors show
        self._url = url
        self.security = resolve_security(security, auth)
        self.jetstream = jetstream
        self.stream = stream
        self.durable = durable if durable is not None else name
        self.name = name
        self.stream_options = StreamOptions(
            stream, stream_max_age_s, stream_max_bytes, stream_max_msgs, stream_discard
        )
        self.consumer_options = ConsumerOptions(
            durable=self.durable,
            fetch_batch=fetch_batch,
            ack_wait_s=ack_wait_s,
            max_ack_pending=max_ack_pending or max(fetch_batch * 4, 1024),
            max_deliver=max_deliver,
            backoff_s=tuple(backoff_s),
            dead_letter_prefix=dead_letter or f"dlq.{stream}",
        )
        self.pending_limit = pending_limit
        self.fetch_batch = fetch_batch
        self.ack_wait_s = ack_wait_s
        self.max_in_flight = max_in_flight
        self.connect_timeout_s = connect_timeout_s
        self.flush_timeout_s = flush_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.max_frame = max_frame
        self.stats = TransportStats()
        self._out = Outbound()
        self._in = Inbound(self.stats)
        self._watch = RefusalWatch(url, self.security, self._in.count)
        self._types: dict[type[Any], None] = {}
        # Per subject this process consumes: the highest stream sequence of its own stored
        # publishes there (its own subscribers get them only from the stream).
        self._own_seq: dict[str, int] = {}
        self._subscribed: set[type[Any]] = set()
        self._pending: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: deque[tuple[WireType, bytes]] = deque()
        # Messages the background sender has taken off the outbox, and the publish() calls
        # waiting for theirs to be taken (see publish).
        self._outbox_taken = 0
        self._taken_waiters: list[asyncio.Future[None]] = []
        self._pump: asyncio.Task[None] | None = None
        self._unsendable: ValueError | None = None  # why the sender dropped an emit
        self._stream_topics: set[str] = set()
        self._stream_lock = asyncio.Lock()
        self._unacked: deque[_Unacked] = deque()
        # Taken out of _unacked by _settle() to be re-sent and not yet confirmed.
        self._resending = 0
        self._settle_lock = asyncio.Lock()
        self._ledger = OutputLedger()
        self._pulls: list[JetStreamContext.PullSubscription] = []
        self.consumers: list[PullConsumer] = []
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._inlet: Inlet | None = None
        self._closing = False
        # Set with _closing: a core callback waiting for room in a subscription nobody reads
        # any more gives up, so close() does not sit out drain's timeout (5 s, measured).
        self._closed_event = asyncio.Event()
        self._connected_once = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def publisher_id(self) -> int:
        """This transport's random publisher id (in every message header)."""
        return self._out.publisher

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, inlet: Inlet) -> None:
        """Connect to the server (and JetStream), then subscribe what was declared before."""
        if self._nc is not None:
            return
        self._inlet = inlet
        self._loop = asyncio.get_running_loop()
        self._nc = await self._connect()
        if self.jetstream:
            self._js = self._nc.jetstream(publish_async_max_pending=self.max_in_flight)
        for message_type in self._types:
            self._schedule_subscribe(message_type)

    async def _connect(self) -> Client:
        await refuse_plain_text_server(self._url, self.security, self.connect_timeout_s)
        nc = Client()
        try:
            # nats-py retries the first connect forever when reconnects are unlimited, so
            # the first connect gets a deadline of its own.
            await asyncio.wait_for(
                nc.connect(
                    self._url,
                    name=self.name,
                    no_echo=True,
                    connect_timeout=max(1, round(self.connect_timeout_s)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.2,  # type: ignore[arg-type]
                    error_cb=self._on_error,
                    reconnected_cb=self._watch.reconnected,
                    drain_timeout=5,
                    **self.security.connect_kwargs(),
                ),
                self.connect_timeout_s + 1.0,
            )
            require_encrypted(nc, self._url, self.security)
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                # Bounded: after a failed TLS handshake nats-py's close() waits forever for
                # the plain stream start_tls took over (2.16). Nothing else is open by now.
                await asyncio.wait_for(nc.close(), 0.25)
            if isinstance(exc, REFUSED):  # from the RefusalWatch, inside nats-py's connect
                # Its message says everything; nats-py's frames and errors would only bury it.
                raise exc.with_traceback(None) from None
            raise ConnectionError(
                f"cannot connect to the NATS server at {self.url}: {exc!r}\n"
                f"help: start one (with JetStream) on this machine:\n    {NATS_START_HELP}"
            ) from exc
        self._connected_once = True
        self._watch.connecting = False
        return nc

    async def _on_error(self, exc: Exception) -> None:
        if self._watch.on_error(exc):  # a refusal: raises while connecting, counts after
            return
        if isinstance(exc, nats.errors.SlowConsumerError):
            # The client buffer of a subscription overflowed; the gap shows in sequences too.
            self.stats.dropped_overflow += 1
            return
        self._in.count("engine_errors")
        if self._connected_once:  # before that, start() raises one clear error instead
            log.warning("NATS client error at %s: %r", self.url, exc)

    async def close(self) -> None:
        """Publish what is queued, wait for JetStream acks, drain and disconnect."""
        nc = self._nc
        if nc is None:
            return
        try:
            await self.flush()
        except (ConnectionError, NatsPermissionError, ValueError) as exc:  # counted; say it
            log.error("closing %r with messages the server did not take: %s", self, exc)
        self._closing = True
        self._closed_event.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for psub in self._pulls:
            # Nothing more will be fetched: an abandoned pull inbox would stall drain() for
            # its whole timeout (30 s, measured after a server restart).
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        self._nc = None
        with contextlib.suppress(Exception):
            await nc.drain()
        self._in.sync_stats()

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, message_type: type[Any]) -> None:
        """Declare interest in ``message_type``; :meth:`ready` waits until it is in effect."""
        if message_type in self._types:
            return
        self._types[message_type] = None
        if self._nc is not None:
            self._schedule_subscribe(message_type)

    def _schedule_subscribe(self, message_type: type[Any]) -> None:
        if message_type in self._subscribed:
            return
        self._subscribed.add(message_type)
        # The loop start() ran on: subscribe() is sync and may be called outside a coroutine.
        assert self._loop is not None
        task = self._loop.create_task(self._subscribe(message_type))
        self._pending.append(task)

    async def wait_for_subscribers(
        self, n: int, message_type: type[Any], timeout: float
    ) -> None:
        """NATS does not tell a publisher who is subscribed: refuse, and say what to use."""
        how = (
            "JetStream's durable consumers already receive what was published before they "
            "started"
            if self.jetstream
            else "with jetstream=True, durable consumers receive what was published before "
            "they started"
        )
        raise NotImplementedError(
            f"NATS cannot count the subscribers to {message_type.__name__}\n"
            f"help: {how}; or have each subscriber publish a hello message the publisher "
            "waits for"
        )

    async def ready(self) -> None:
        """Wait until the server has every subscription (and JetStream consumer) declared."""
        nc = self._nc
        if nc is None:
            return
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
        if any(c.stopped_for_mismatch for c in self.consumers):
            found = next(iter(self._in.mismatches.values()))
            raise WireMismatchError(found.describe())
        # A PING/PONG round trip: the server has processed every SUB sent before it.
        await _round_trip(nc)
        self._watch.check("subscription")  # and it said so if it refused one

    async def _consumers_created(self) -> None:
        """Wait for the consumers subscribe() is still creating (their errors: ready()).

        This process's own publishes reach its subscribers only from the stream, and an
        ephemeral consumer takes only what is stored after it exists: a publish sent before
        the consumer of a just-subscribed type was created would never reach it.
        """
        creating = [t for t in self._pending if not t.done()]
        if creating:
            await asyncio.wait(creating)

    async def _subscribe(self, message_type: type[Any]) -> None:
        nc = self._require()
        subject = wire_type(message_type).subject
        if self._js is None:
            await nc.subscribe(subject, cb=self._on_core, pending_msgs_limit=self.pending_limit,
                               pending_bytes_limit=PENDING_BYTES_LIMIT)
            return
        await self._ensure_stream(message_type.TOPIC)
        # Refuse a mismatched definition before the consumer takes anything (issue 12).
        await check_last_stored(self._js, self.stream, subject, self.max_frame)
        durable = self._consumer_name(message_type)
        config = self.consumer_options.config()
        if durable is not None:  # restarted with other settings: the server gets them
            await update_durable(self._js, self.stream, durable, config)
        psub = await self._js.pull_subscribe(
            subject, durable=durable, stream=self.stream, config=config
        )
        assert self._inlet is not None
        consumer = PullConsumer(
            self._js,
            psub,
            subject,
            self.consumer_options,
            self._inlet,
            self._in,
            self.max_frame,
            outputs=self,
        )
        self._pulls.append(psub)
        self.consumers.append(consumer)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(consumer.run(lambda: self._closing)))

    @property
    def delivers_own_messages(self) -> bool:  # type: ignore[override]
        """JetStream hands this process its own stored publishes (core NATS: ``no_echo``)."""
        return self.jetstream

    def _consumer_name(self, message_type: type[Any]) -> str | None:
        if self.durable is None:
            return None
        return _NAME_OK.sub("_", f"{self.durable}-{message_type.TOPIC}-{message_type.TYPE_ID}")

    async def _ensure_stream(self, topic: str) -> None:
        """Make ``stream`` exist, capture ``<topic>.*`` and carry the configured limits."""
        if topic in self._stream_topics:
            return
        js = self._js
        assert js is not None
        async with self._stream_lock:
            if topic not in self._stream_topics:
                await ensure_stream(js, self.stream_options, f"{topic}.*")
                self._stream_topics.add(topic)

    # -- receiving -------------------------------------------------------------------------

    async def _on_core(self, msg: Msg) -> None:
        """Core NATS (at-most-once): one payload; duplicates by sequence are dropped.

        Waiting for space here pauses this subscription's reading: the client's buffer then
        fills to ``pending_limit`` (or ``PENDING_BYTES_LIMIT``) and drops, counted as
        ``dropped_overflow``. Closing, the wait ends and the message is lost, as core NATS
        loses what a closed subscriber had not read.
        """
        inlet = self._inlet
        assert inlet is not None
        result = decode_body(msg.data, msg.subject, self.max_frame)
        if isinstance(result, Dropped):
            self._in.drop(result)
        elif result.message is not None and self._in.accept(result):
            self.stats.received += 1
            while not inlet.offer(result.message):
                if self._closing:
                    self._in.count("dropped_at_close")
                    break
                await self._space_unless_closing(inlet, type(result.message))
        self._in.sync_stats()

    async def _space_unless_closing(self, inlet: Inlet, message_type: type[Any]) -> None:
        space = asyncio.ensure_future(inlet.space(message_type))
        closed = asyncio.ensure_future(self._closed_event.wait())
        try:
            await asyncio.wait((space, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (space, closed):
                task.cancel()

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, msg: Any) -> None:
        """Publish ``msg`` (JetStream: pipelined; waits when ``max_in_flight`` are unacked)."""
        if self._outbox:
            # Behind queued publish_nowait messages (order is kept), and waiting until the
            # background sender has handed this one over, as a direct publish waits. It used
            # to return at once without yielding: a loop of `await publish` after one sync
            # emit grew the queue by every message and sent nothing until the loop ended.
            self.publish_nowait(msg)
            await self._until_taken(self._outbox_taken + len(self._outbox))
            return
        ledger = self._ledger
        ledger.sending += 1  # accepted: an input settled from now on waits for it
        indexed = False
        try:
            indexed = await self._send(wire_type(type(msg)), self._out.body(msg))
        finally:
            ledger.sending -= 1
            if not indexed and self._js is not None:
                # Failed (or cancelled) before it took an index: an input settled meanwhile
                # counted it as sending and waits for an index below its mark. Nothing will
                # be stored, and this caller hears why, so the slot is resolved empty (not
                # refused: another task's failure is not that input's).
                ledger.resolve(ledger.append())

    def full(self) -> bool:
        """``max_in_flight`` messages already wait in the background sender's outbox."""
        return len(self._outbox) >= self.max_in_flight

    async def wait_for_space(self) -> None:
        """Wait until the outbox is below ``max_in_flight``; a failed sender's error is raised.

        Woken as the sender takes messages, not polled, and a sender that died is restarted
        (or its failure raised) as :meth:`publish` does: polling :meth:`full` alone waited for
        good behind a sender that had failed, since nothing else restarts it.
        """
        while self.full():
            await self._until_taken(self._outbox_taken + 1)

    def publish_nowait(self, msg: Any) -> None:
        """Queue ``msg`` for a background sender; order with :meth:`publish` is kept."""
        if self._nc is None:
            raise RuntimeError(
                "NatsTransport.publish_nowait() before start() (or after close())\n"
                "help: `await bus.start()` (or `async with bus:`) first"
            )
        self._outbox.append((wire_type(type(msg)), self._out.body(msg)))
        if self._pump is None or self._pump.done():
            assert self._loop is not None
            self._pump = self._loop.create_task(self._run_pump())

    async def _until_taken(self, position: int) -> None:
        """Wait until the sender has taken ``position`` messages off the outbox in all."""
        loop = asyncio.get_running_loop()
        while self._outbox_taken < position:
            pump = self._pump
            if pump is None or pump.done():
                failed = None if pump is None or pump.cancelled() else pump.exception()
                if failed is not None:
                    raise failed  # the sender failed: say why
                if not self._outbox:
                    return
                pump = self._pump = loop.create_task(self._run_pump())
            waiter = loop.create_future()
            self._taken_waiters.append(waiter)
            await asyncio.wait((waiter, pump), return_when=asyncio.FIRST_COMPLETED)

    def _took_one(self) -> None:
        self._outbox_taken += 1
        waiters, self._taken_waiters = self._taken_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _run_pump(self) -> None:
        outbox = self._outbox
        while outbox:
            wt, body = outbox[0]
            why: str | None = None
            try:
                self._watch.check("publish", wt.subject)
            except NatsPermissionError:
                # The server refuses this subject: the message can never be sent. Counted
                # and logged once by the watch.
                why = f"the server refuses publishing to {wt.subject}"
            else:
                try:
                    await self._send(wt, body)
                except ValueError as exc:
                    # No stream of ours can store it (another stream captures its subject):
                    # as final as a refusal. flush() raises it once; counted and logged.
                    why = str(exc).split("\n")[0]
                    self._in.count("publish_failed")
                    if self._unsendable is None:
                        log.error("emit of %s cannot be stored: %s", wt.subject, exc)
                    self._unsendable = exc
            outbox.popleft()
            self._took_one()
            if why is not None and self._js is not None:
                # Held at the head it would stop every emit behind it; its index is refused,
                # so the input that emitted it is failed (nak, dead-lettered with `why`).
                self._ledger.refuse([self._ledger.append()], why)

    async def _send(self, wt: WireType, body: bytes) -> bool:
        """Send; True once a JetStream publish took its index in the ledger."""
        nc = self._require()
        self._watch.check("publish", wt.subject)
        if self._js is None:
            await nc.publish(wt.subject, body)
        else:
            await self._send_stored(self._js, wt, body)
        self.stats.sent += 1
        return self._js is not None

    async def _send_stored(self, js: JetStreamContext, wt: WireType, body: bytes) -> None:
        """Hand ``body`` to the server; its ledger index is taken last, once it is sent."""
        topic = wt.cls.TOPIC
        if topic not in self._stream_topics:
            await self._ensure_stream(topic)
        if self._pending:
            await self._consumers_created()
        if len(self._unacked) >= self.max_in_flight:
            await self._settle()
        # The server drops a re-sent copy with the same id: retries cannot duplicate.
        _, _, _, type_id, _, publisher, seq = HEADER.unpack_from(body)
        msg_id = f"{publisher:x}.{type_id}.{seq}"
        future = await js.publish_async(wt.subject, body, headers={MSG_ID: msg_id})
        if wt.cls in self._types:
            future.add_done_callback(functools.partial(self._stored_own, wt.subject))
        self._unacked.append(_Unacked(future, wt.subject, body, msg_id, self._ledger.append()))

    async def _settle(self) -> None:
        """Wait for outstanding JetStream acks; re-send, in order, from the first missing one.

        nats-py never times out a ``publish_async`` future (a publish sent while the server
        restarts is simply never answered), so the deadline is ours. Go-back-N keeps the
        stream in publish order; the message ids make the re-sent copies of already stored
        messages no-ops.
        """
        async with self._settle_lock:  # the sender and the consumers' ack barrier share it
            unacked = self._unacked
            if not unacked:
                return
            await asyncio.wait([u.future for u in unacked], timeout=self.ack_timeout_s)
            while unacked and _stored(unacked[0].future):
                self._ledger.resolve(unacked.popleft().index)
            if not unacked:
                return
            retry = list(unacked)
            unacked.clear()
            for u in retry:
                u.future.cancel()  # releases nats-py's in-flight slot
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.flush_timeout_s
            # The ledger hears of every index given up on, or every later input would wait
            # for it forever: a subject the server refuses costs only its own messages (the
            # ones behind it are re-sent and may well be stored), a lost server the rest.
            refused: NatsPermissionError | None = None
            try:
                for i, u in enumerate(retry):
                    # Out of _unacked and not yet stored: own_in_flight() counts them here.
                    self._resending = len(retry) - i
                    try:
                        ack = await self._publish_confirmed(u, deadline)
                        self._note_own(u.subject, ack.seq)
                    except NatsPermissionError as exc:
                        self._ledger.refuse([u.index],
                                            f"the server refuses publishing to {u.subject}")
                        refused = exc
                        continue
                    except ConnectionError as exc:
                        self._ledger.refuse([r.index for r in retry[i:]],
                                            str(exc).split("\n")[0])
                        raise
                    self._ledger.resolve(u.index)
            finally:
                self._resending = 0
            if refused is not None:
                raise refused

    async def _publish_confirmed(self, u: _Unacked, deadline: float) -> PubAck:
        js = self._js
        assert js is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await js.publish(
                    u.subject, u.body, timeout=self.ack_timeout_s, headers={MSG_ID: u.msg_id}
                )
            except (TimeoutError, nats.errors.Error) as exc:
                self._watch.check("publish", u.subject)  # refused: retrying cannot help
                self._in.count("publish_retries")
                no_stream = isinstance(exc, nats.js.errors.NoStreamResponseError)
                if loop.time() > deadline:
                    self._in.count("publish_failed")
                    raise ConnectionError(
                        f"JetStream did not store {u.subject} message {u.msg_id} within "
                        f"{self.flush_timeout_s}s: {exc!r}\n"
                        + (
                            f"help: no stream captures {u.subject}; does stream "
                            f"{self.stream!r} still list it (`nats stream info {self.stream}`)?"
                            if no_stream
                            else f"help: is the NATS server at {self.url} up, with JetStream "
                            "(-js)?"
                        )
                    ) from exc
                if no_stream:
                    await self._recapture(u.subject)
                await asyncio.sleep(0.1)

    async def _recapture(self, subject: str) -> None:
        """No stream answered a publish to ``subject``: the stream may have lost it since we
        added it (an operator's edit, or another process's update written over ours from a
        configuration it read before our change), and every publish to it would be retried
        until ``flush_timeout_s`` and dropped. Add it again (once the server answers)."""
        topic = subject.rpartition(".")[0]
        self._stream_topics.discard(topic)
        try:
            await self._ensure_stream(topic)
        except Exception as exc:  # a restarting server: the next retry tries again
            self._stream_topics.discard(topic)
            log.debug("re-adding %s to stream %s failed: %r", subject, self.stream, exc)
        else:
            self._in.count("stream_subject_restored")

    # -- own publishes coming back (a graceful shutdown waits for them) ----------------------

    def _stored_own(self, subject: str, future: asyncio.Future[Any]) -> None:
        if _stored(future):
            self._note_own(subject, future.result().seq)

    def _note_own(self, subject: str, seq: int) -> None:
        """Our publish to ``subject`` is stored at ``seq`` (only subjects we consume count)."""
        if any(c.subject == subject for c in self.consumers):
            self._own_seq[subject] = max(self._own_seq.get(subject, 0), seq)

    def own_mark(self, subject: str) -> int:
        """The stream sequence of our last stored publish to ``subject`` (0: none)."""
        return self._own_seq.get(subject, 0)

    def own_in_flight(self) -> int:
        """Own publishes still to be sent or confirmed, plus the consumed subjects whose
        consumer has not yet offered this process's last stored publish there (nor come back
        empty from a fetch begun after it was stored: a work queue's other process took it):
        until then, its own subscribers have not seen everything it emitted to them."""
        if self._js is None:
            return 0
        waiting = len(self._outbox) + self._resending
        waiting += sum(not u.future.done() for u in self._unacked)
        if self._own_seq:
            for consumer in self.consumers:
                reached = max(consumer.taken_seq, consumer.caught_up)
                if reached < self._own_seq.get(consumer.subject, 0):
                    waiting += 1
        return waiting

    # -- the consumers' ack barrier (OutputsStored) ------------------------------------------

    def offer_mark(self) -> int:
        """A lower bound of any JetStream publish accepted from now on (:class:`OutputLedger`)."""
        return self._ledger.offer_mark()

    def begin_mark(self) -> int:
        """Where the outputs of a handler starting now begin (:class:`OutputLedger`)."""
        return self._ledger.begin_mark(len(self._outbox))

    def output_mark(self) -> int:
        """An index above every JetStream publish accepted so far (:class:`OutputLedger`)."""
        return self._ledger.settle_mark(len(self._outbox))

    async def outputs_stored(self, since: int, upto: int) -> str | None:
        """Wait until the publishes below ``upto`` are stored or given up on (at most
        ``flush_timeout_s``); None when none of ``since..upto`` was given up on, else why."""
        ledger = self._ledger
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flush_timeout_s
        while ledger.resolved < upto:
            if loop.time() >= deadline or self._js is None:
                return f"not confirmed within flush_timeout_s ({self.flush_timeout_s} s)"
            if self._unacked and self._unacked[0].index < upto:
                # Counted, and refused in the ledger.
                with contextlib.suppress(ConnectionError, NatsPermissionError):
                    await self._settle()
                continue
            # What is missing is still in the outbox, or inside a publish() on its way.
            if self._outbox and (self._pump is None or self._pump.done()):
                self._pump = loop.create_task(self._run_pump())
            ledger.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ledger.progress.wait(), deadline - loop.time())
        return ledger.refusal_between(since, upto)

    async def flush(self) -> None:
        """Send everything queued; with JetStream, return once the server stored all of it.

        Raises :class:`ConnectionError` if JetStream did not store a message within
        ``flush_timeout_s`` (after retrying), :class:`ValueError` (once) if a queued message
        could not be stored by any stream of ours (another stream captures its subject:
        dropped, its input failed).
        """
        while self._outbox:
            if self._pump is None or self._pump.done():
                self._pump = asyncio.get_running_loop().create_task(self._run_pump())
            await self._pump
        await self._settle()
        nc = self._nc
        if nc is not None and not nc.is_closed:
            await _round_trip(nc)
        self._watch.check("publish")
        unsendable, self._unsendable = self._unsendable, None
        if unsendable is not None:  # the rest is sent and stored: now say what was not
            raise unsendable

    # -- helpers ---------------------------------------------------------------------------

    def _require(self) -> Client:
        if self._nc is None:
            raise RuntimeError(
                "NatsTransport used before start() (or after close())\n"
                "help: `await bus.start()` (or `async with bus:`) first"
            )
        return self._nc

    def __repr__(self) -> str:
        mode = f"jetstream stream={self.stream!r}" if self.jetstream else "core"
        return f"<NatsTransport {self.url} {mode}>"
