"""JetStream's half of at-least-once: streams with limits, and consumers that ack only when done.

Issue 12 measured what acking on enqueue costs: a durable consumer SIGKILLed with 20,000
messages fetched lost 9,424 it had never returned from ``recv()``. Here a fetched message is
*offered* to the bus with a settle callback (:mod:`~mycelium_mono.bus.transports.base`) and
acknowledged only when every local subscriber is done with it:

- done (a handler returned, a raw subscriber asked for the next one or called ``ack()``) →
  ``ack``;
- failed (a handler raised, a ``"raise"`` subscriber refused it) → ``nak`` with the next
  ``backoff_s`` delay, and after ``max_deliver`` deliveries → a copy to the dead-letter
  subject (stored in its own stream, with the last error in the headers), then ``term``;
  the copy's ``Nats-Msg-Id`` is the input's stream and sequence, so an input dead-lettered
  again (the consumer died before its term) is stored once within the dead-letter stream's
  duplicate window (2 minutes by default), counted as ``dead_letter_repeats``;
- fetched and not yet settled (running, queued, or still waiting in the pull loop for
  queue space or to be tried alone), past a third of ``ack_wait`` → "in progress",
  repeated while the loop runs (for up to ten ack_waits from the fetch): a slow handler or
  a long queue is not handed out again, a dead or stalled consumer's messages are;
- a redelivery (the consumer crashed or stalled past ``ack_wait`` while holding it, or it
  failed) → handled *alone*: the consumer waits until nothing else it fetched is
  unsettled, offers it, and fetches nothing more until it is settled, one at a time while
  redeliveries come (the server hands them out before new messages), so a crash now
  charges a delivery to that message only. The server counts a delivery for every
  message a consumer fetched, begun or not: without this, a consumer SIGKILLed again and
  again pushed every message it had prefetched past ``max_deliver`` though only one was
  ever handled. After a start the first fetch takes one message too, and so does every
  fetch while messages delivered before the start may still come due (at most
  ``1.5 * ack_wait_s + 0.5`` s; it ends once the server has nothing pending but ours);
- delivered more than ``max_deliver + 1`` times without ever being settled (it did not
  settle even alone) → dead-lettered on arrival, before it can crash the consumer again;
- undecodable (garbage, truncated, unknown type) → ``term``, logged loudly and counted as
  ``poison``: it can never be processed, and acking it "as processed" would hide it;
- a fingerprint mismatch (this process defines the type differently from the publisher) →
  neither acked nor termed: the consumer stops pulling that type and says so, so the
  messages wait in the stream for a process with the right definition. ``ready()`` checks
  the last stored message first and refuses before consuming anything.

Back-pressure: while the bus refuses an offer (a full ``"block"`` subscriber, or no
subscription of the type left open: a shutdown closed them), the pull loop holds the message
and fetches nothing more, and what it holds is never acked unhandled; the server stops
delivering once ``max_ack_pending`` messages are unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    Header,
    StreamConfig,
)

from mycelium_mono.bus.transports.base import Inlet, Settle
from mycelium_mono.bus.transports.wire import (
    Dropped,
    DropReason,
    Inbound,
    WireMismatchError,
    decode_body,
    describe_mismatch,
)

__all__ = [
    "MSG_ID",
    "ConsumerOptions",
    "OutputLedger",
    "OutputsStored",
    "PullConsumer",
    "StreamOptions",
    "ensure_stream",
    "update_durable",
]

log = logging.getLogger("mycelium_mono.transport.nats")

# JetStream's error code for "subjects overlap with an existing stream".
_OVERLAP = 10065
MSG_ID = Header.MSG_ID.value
"""The header JetStream deduplicates by (within the stream's duplicate window)."""
_DISCARD = {"old": DiscardPolicy.OLD, "new": DiscardPolicy.NEW}


@dataclass(frozen=True)
class StreamOptions:
    """The stream every published message is stored in, and its retention limits."""

    name: str
    max_age_s: float | None = None
    max_bytes: int | None = None
    max_msgs: int | None = None
    # None: whatever the stream has (a new stream: the server's "old"). A default of "old"
    # here made every process that asked for nothing (a publisher on default options) flip a
    # stream another process had set to "new" back to "old" on its first publish: the full
    # stream then threw away its oldest messages, stored and acked outputs among them.
    discard: Literal["old", "new"] | None = None

    def __post_init__(self) -> None:
        for field_name in ("max_bytes", "max_msgs"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(
                    f"JetStream stream {self.name!r}: stream_{field_name} must be a positive "
                    f"int or None, got {value!r}\nhelp: None means no limit"
                )
        if self.max_age_s is not None and not (
            isinstance(self.max_age_s, int | float) and math.isfinite(self.max_age_s)
            and self.max_age_s > 0
        ):
            raise ValueError(
                f"JetStream stream {self.name!r}: stream_max_age_s must be a positive number "
                f"of seconds or None, got {self.max_age_s!r}\nhelp: None keeps messages forever"
            )
        if self.discard is not None and self.discard not in _DISCARD:
            raise ValueError(
                f"JetStream stream {self.name!r}: stream_discard must be 'old' or 'new', got "
                f"{self.discard!r}\nhelp: 'old' drops the oldest messages at a limit, 'new' "
                "refuses new publishes, None leaves the stream's as it is"
            )

    def limits(self) -> dict[str, Any]:
        """The StreamConfig fields these options set (unset limits are left to the server)."""
        found: dict[str, Any] = {}
        if self.discard is not None:
            found["discard"] = _DISCARD[self.discard]
        if self.max_age_s is not None:
            found["max_age"] = float(self.max_age_s)
        if self.max_bytes is not None:
            found["max_bytes"] = self.max_bytes
        if self.max_msgs is not None:
            found["max_msgs"] = self.max_msgs
        return found


# JetStream's error code for "stream name already in use with a different configuration":
# another process created the stream between our look-up and our add.
_NAME_IN_USE = 10058
# How often ensure_stream reads, changes and checks the stream before it gives up.
_ENSURE_ATTEMPTS = 20


async def ensure_stream(js: JetStreamContext, options: StreamOptions, subject: str) -> None:
    """Make ``options.name`` exist, capture ``subject`` and carry the requested limits.

    Raises :class:`ValueError` naming the other stream when one already captures ``subject``
    (JetStream refuses two streams over one subject).

    Processes starting together each do this for their own subjects, and the server has no
    compare-and-set for a stream's configuration: two that both found no stream raced to
    create it (the loser died at ``ready()`` with "stream name already in use", err 10058),
    and two that both read the same configuration each wrote it back with only their own
    subject added, so the first one's subject was silently dropped (6 processes on a fresh
    stream, 20 times: 67 crashed, 21 of the other 53 subjects gone; a publish to a dropped
    subject is stored nowhere). So the stream is read back after every change and the change
    made again, after a random pause, until the stream has what this process asked for.
    """
    for attempt in range(_ENSURE_ATTEMPTS):
        if attempt:
            await asyncio.sleep(random.uniform(0.005, 0.05) * min(attempt, 5))
        try:
            if await _stream_has(js, options, subject):
                return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _NAME_IN_USE:
                continue  # created by another process meanwhile: read it and add ours
            if exc.err_code != _OVERLAP:
                raise
            raise ValueError(await _overlap_message(js, options.name, subject)) from exc
    raise RuntimeError(
        f"JetStream stream {options.name!r} still does not capture {subject!r} with the "
        f"limits asked for after {_ENSURE_ATTEMPTS} attempts: other processes keep changing "
        "its configuration\nhelp: start the processes again, or create the stream once "
        f"beforehand with every subject (`nats stream add {options.name}`)"
    )


async def _stream_has(js: JetStreamContext, options: StreamOptions, subject: str) -> bool:
    """One read-and-change of the stream: True if it already had ``subject`` and the limits,
    False if it was created or changed just now (to be read back: another process may have
    overwritten the change with its own)."""
    try:
        info = await js.stream_info(options.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(name=options.name, subjects=[subject], **options.limits())
        )
        return False
    config = info.config
    changed = False
    subjects = list(config.subjects or [])
    if subject not in subjects:
        config.subjects = [*subjects, subject]
        changed = True
    for key, value in options.limits().items():
        if getattr(config, key) != value:
            setattr(config, key, value)
            changed = True
    if changed:
        await js.update_stream(config)
    return not changed


async def _overlap_message(js: JetStreamContext, stream: str, subject: str) -> str:
    owner = "another stream"
    with contextlib.suppress(Exception):
        owner = f"stream {await js.find_stream_name_by_subject(subject)!r}"
    return (
        f"JetStream stream {stream!r} cannot capture {subject!r}: {owner} already does "
        "(JetStream stores each subject in one stream only)\n"
        f"help: use that stream (with_nats(..., stream=<its name>)) in every process, or "
        "delete it first (`nats stream rm`) if nothing in it is needed"
    )


@dataclass(frozen=True)
class ConsumerOptions:
    """How one subscribed type is consumed; see :class:`NatsTransport` for each field."""

    durable: str | None
    fetch_batch: int
    ack_wait_s: float
    max_ack_pending: int
    max_deliver: int
    backoff_s: tuple[float, ...]
    dead_letter_prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.max_deliver, int) or self.max_deliver < 1:
            raise ValueError(
                f"max_deliver must be an int >= 1, got {self.max_deliver!r}\n"
                "help: it is how many times a failing message is tried before it is "
                "dead-lettered"
            )
        if any(not (isinstance(d, int | float) and d >= 0) for d in self.backoff_s):
            raise ValueError(
                f"backoff_s must be non-negative seconds, got {self.backoff_s!r}\n"
                "help: e.g. (0.1, 1.0, 5.0): the delay before each redelivery of a failure"
            )

    def config(self) -> ConsumerConfig:
        durable = self.durable is not None
        return ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if durable else DeliverPolicy.NEW,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            # Unlimited at the server: we count deliveries and dead-letter ourselves. A
            # server-side limit would stop delivering silently (an advisory nobody reads).
            max_deliver=-1,
            inactive_threshold=None if durable else 60.0,
        )

    def delay(self, deliveries: int) -> float:
        """The nak delay after the ``deliveries``-th failed delivery."""
        if not self.backoff_s:
            return 0.0
        return float(self.backoff_s[min(deliveries, len(self.backoff_s)) - 1])


class OutputLedger:
    """A transport's JetStream publishes by index, in the order they reach the server (or are
    dropped unsent as refused).

    An input may be acked only once what its handler emitted is stored: acking it while its
    output is still unconfirmed loses the output for good if JetStream then refuses it (a full
    stream that discards new messages, a subject the server does not let us publish to). A
    consumer's window for an input starts at :meth:`offer_mark` when it offers the message,
    raised to :meth:`begin_mark` when the first handler starts on it, and ends at
    :meth:`settle_mark` when the message is settled; every output of that handler gets an
    index inside it, so the acker waits until everything below the end is settled and acks
    only if none of the window was given up on. Other handlers' outputs in the window make it
    wait longer, never less.
    """

    # Refusals are rare; the last ones are enough to judge the inputs still in flight.
    _REFUSALS_KEPT = 4096

    def __init__(self) -> None:
        self.appended = 0  # publishes handed to the server (or refused); the next one's index
        self.sending = 0  # publish() calls between acceptance and the server
        self.resolved = 0  # every index below this one is stored or given up on
        self._resolved_above: set[int] = set()  # settled out of order, above `resolved`
        self.refused: deque[tuple[int, str]] = deque(maxlen=self._REFUSALS_KEPT)
        self.progress = asyncio.Event()

    def offer_mark(self) -> int:
        """A lower bound of the index of any output accepted from now on."""
        return self.appended

    def begin_mark(self, queued: int) -> int:
        """Where a handler starting now puts its first output: behind the ``queued`` ones (a
        batch of sync handlers runs without yielding, so the pump has not sent them yet)."""
        return self.appended + queued

    def settle_mark(self, queued: int) -> int:
        """An index above every output accepted so far (``queued``: not yet sent ones)."""
        return self.appended + queued + self.sending

    def append(self) -> int:
        index = self.appended
        self.appended += 1
        self.progress.set()
        return index

    def resolve(self, index: int) -> None:
        """``index`` is stored or given up on; ``resolved`` moves over every settled prefix."""
        if index == self.resolved:
            self.resolved += 1
            while self.resolved in self._resolved_above:
                self._resolved_above.remove(self.resolved)
                self.resolved += 1
        elif index > self.resolved:
            self._resolved_above.add(index)
        self.progress.set()

    def refuse(self, indices: list[int], reason: str) -> None:
        self.refused.extend((index, reason) for index in indices)
        for index in indices:
            self.resolve(index)

    def refusal_between(self, since: int, upto: int) -> str | None:
        """Why an output in ``since..upto`` was given up on, or None."""
        return next((why for index, why in self.refused if since <= index < upto), None)


class OutputsStored(Protocol):
    """What a consumer needs from its transport to ack only after the outputs are stored."""

    def offer_mark(self) -> int: ...

    def begin_mark(self) -> int: ...

    def output_mark(self) -> int: ...

    async def outputs_stored(self, since: int, upto: int) -> str | None:
        """None once the outputs ``since..upto`` are stored; else why they are not."""

    def own_mark(self, subject: str) -> int:
        """The stream sequence of this process's last stored publish to ``subject``."""


# How long one pull waits at the server for a message (nats-py's fetch timeout).
FETCH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class _Outcome:
    """A settled message waiting for the acker: ``error`` None means ack; ``since``..``upto``
    are the output indices its handler's emits fall between (:class:`OutputLedger`)."""

    msg: Msg
    error: BaseException | None
    since: int = 0
    upto: int = 0


class _Settler:
    """The settle callback of one fetched message, and where its outputs can start.

    ``since`` is the transport's output mark when the message was offered; :meth:`began`
    raises it to the mark when the first handler starts on it (a batch is offered at once,
    so the offer mark would count every output of the batch's earlier messages as this
    one's, and one refused output would fail them all).
    """

    __slots__ = ("consumer", "m", "since")

    def __init__(self, consumer: PullConsumer, m: Msg, since: int) -> None:
        self.consumer = consumer
        self.m = m
        self.since = since

    def began(self) -> None:
        outputs = self.consumer.outputs
        if outputs is not None:
            self.since = max(self.since, outputs.begin_mark())

    def __call__(self, error: BaseException | None) -> None:
        outputs = self.consumer.outputs
        upto = self.since if outputs is None else outputs.output_mark()
        self.consumer._settled(_Outcome(self.m, error, self.since, upto))


class PullConsumer:
    """One subscribed type: fetch, offer to the bus, and settle each message at the server."""

    def __init__(
        self,
        js: JetStreamContext,
        psub: JetStreamContext.PullSubscription,
        subject: str,
        options: ConsumerOptions,
        inlet: Inlet,
        inbound: Inbound,
        max_frame: int,
        outputs: OutputsStored | None = None,
    ) -> None:
        self.js = js
        self.outputs = outputs
        self.psub = psub
        self.subject = subject
        self.options = options
        self.inlet = inlet
        self.inbound = inbound
        self.max_frame = max_frame
        self._outcomes: deque[_Outcome] = deque()
        self._acker_wakeup: asyncio.Future[None] | None = None
        self._dead_letter_ready = False
        self.stopped_for_mismatch = False
        # Offered to the bus and not yet acked/nak'd/termed at the server.
        self._held = 0
        # Fetched and not yet settled (waiting to be offered, or offered), by id: the
        # message, when it was fetched, when the server last heard of it (see
        # _keep_working).
        self._working: dict[int, tuple[Msg, float, float]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # The last fetch's messages, being offered in order.
        self._batch: list[Msg] = []
        # Fetch one at a time: at a start (what comes first may be what crashed the last
        # process), and while redeliveries come (the next may be one too).
        self._isolating = True
        # And, after a start, until what was delivered before it comes due or is settled
        # (see _others_pending); loop times, 0.0 when there is no such window.
        self._window_ends = 0.0
        self._window_checked = 0.0
        # The highest stream sequence offered to the bus (own_in_flight() compares it with
        # this process's own stored publishes).
        self.taken_seq = 0
        # What own_mark() said when a fetch began that came back empty: everything stored
        # up to there had been delivered (here, or to a work queue's other process).
        self.caught_up = 0

    # -- fetching ------------------------------------------------------------------------

    async def run(self, closing: Callable[[], bool]) -> None:
        """Fetch until ``closing()``; the acker runs beside it in the same task group."""
        loop = asyncio.get_running_loop()
        acker = loop.create_task(self._ack_forever())
        keeper = loop.create_task(self._keep_working())
        try:
            await self._open_start_window()
            while not closing() and not self.stopped_for_mismatch:
                mark = 0 if self.outputs is None else self.outputs.own_mark(self.subject)
                alone = self._isolating or await self._others_pending()
                began = asyncio.get_running_loop().time()
                msgs = await self._fetch(1 if alone else self.options.fetch_batch)
                fetched = loop.time()
                for m in msgs:
                    # Ours from the fetch on, not only once offered: one waiting for queue
                    # space, behind a blocked one in its batch, or for the others to settle
                    # before it is tried alone, was left silent and handed out again after
                    # ack_wait, then handled twice here (a work queue of 1.5 s handlers at
                    # ack_wait 1 s: 10 of 24 jobs handled twice by the survivor of a kill, 2
                    # dead-lettered that never failed; tests/test_stranger7_progress7.py).
                    self._working[id(m)] = (m, fetched, fetched)
                self._batch = msgs
                behind = mark > max(self.caught_up, self.taken_seq)
                if not msgs and behind and await self._delivered_all(began):
                    self.caught_up = mark
                for i, m in enumerate(msgs):
                    if self.stopped_for_mismatch or closing():
                        # The rest of the batch stays unacked, redelivered later. Closing: the
                        # transport cancelled this task, but Python 3.11's wait_for (inside
                        # nats-py's fetch) can swallow a cancel that races the reply.
                        for rest in msgs[i:]:
                            self._working.pop(id(rest), None)
                        break
                    await self._take(m, closing)
                    self.taken_seq = max(self.taken_seq, m.metadata.sequence.stream)
                self.inbound.sync_stats()
        finally:
            for task in (keeper, acker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._settle_outcomes()

    # Inputs delivered before this start (to a process that died, or to a work queue's other
    # process) come back as redeliveries once ack_wait has passed. Fetched in one batch, they
    # all wait behind the first, which is tried alone, and a death then charges every one of
    # them a delivery: a stage dying on one input dead-lettered the 15 fetched with it, never
    # begun (test_inputs_coming_due_while_a_restarted_stage_is_busy_are_each_tried_alone).
    # So while any may still come, every fetch takes one message.
    _WINDOW_CHECK_S = 0.5

    async def _open_start_window(self) -> None:
        info = await self._consumer_info()
        if info is None or info.num_ack_pending != 0:  # None (not reported): unknown
            loop = asyncio.get_running_loop()
            # Each was delivered before now, so each is due within ack_wait (the margin is
            # the server's redelivery timer and this process's own start-up).
            self._window_ends = loop.time() + self.options.ack_wait_s * 1.5 + 0.5
            self._window_checked = loop.time()
            self.inbound.count("start_windows")

    async def _others_pending(self) -> bool:
        """Whether inputs delivered before this start may still come due (checked with the
        server every half second: the window closes once nothing is pending but ours)."""
        if not self._window_ends:
            return False
        now = asyncio.get_running_loop().time()
        if now >= self._window_ends:
            self._window_ends = 0.0
            return False
        if now - self._window_checked >= self._WINDOW_CHECK_S:
            self._window_checked = now
            info = await self._consumer_info()
            pending = None if info is None else info.num_ack_pending
            if pending is not None and pending <= self._held:
                self._window_ends = 0.0
                return False
        return True

    async def _consumer_info(self) -> ConsumerInfo | None:
        try:
            return await self.psub.consumer_info()
        except Exception as exc:  # unknown: assume something may come due
            self.inbound.count("consumer_info_errors")
            log.debug("JetStream consumer info for %s failed: %r", self.subject, exc)
            return None

    async def _delivered_all(self, began: float) -> bool:
        """Whether an empty fetch begun at ``began`` proves that everything stored before it
        was delivered (here, or to a work queue's other process).

        Only a fetch that really waited does: nats-py's ``fetch(1)`` also comes back empty at
        once when it reads the timeout status of an earlier, expired pull request (late under
        load), and a failed fetch is empty too. Such an empty fetch let a graceful shutdown
        take this process's own emits for handled while they still sat in the stream (seen
        once in CI: 1 of 20 two-hop emits handled). The server has the last word.
        """
        if asyncio.get_running_loop().time() - began < FETCH_TIMEOUT_S / 2:
            return False
        info = await self._consumer_info()
        return info is not None and info.num_pending == 0

    async def _fetch(self, batch: int) -> list[Msg]:
        try:
            return await self.psub.fetch(batch, timeout=FETCH_TIMEOUT_S)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.errors.ConnectionClosedError:
            raise asyncio.CancelledError from None
        except Exception as exc:  # reconnecting, server restarting: try again
            self.inbound.count("fetch_errors")
            log.warning("JetStream fetch on %s failed: %r; retrying", self.subject, exc)
            await asyncio.sleep(0.2)
            return []

    async def _take(self, m: Msg, closing: Callable[[], bool] = lambda: False) -> None:
        result = decode_body(m.data, m.subject, self.max_frame)
        if isinstance(result, Dropped):
            self._working.pop(id(m), None)
            await self._undecodable(m, result)
            return
        if result.message is None:
            self._working.pop(id(m), None)
            await m.ack()  # a subscription acknowledgement carries no message
            return
        deliveries = m.metadata.num_delivered
        if deliveries > 1:
            self.inbound.count("redelivered")
        limit = self.options.max_deliver
        if deliveries > limit + 1:
            error = RuntimeError(
                f"delivered {deliveries} times without being settled, the last time alone "
                "(the consumer crashed or exceeded ack_wait each time)"
            )
            self._working.pop(id(m), None)
            await self._dead_letter(m, error, deliveries)
            return
        alone = deliveries > 1
        self._isolating = alone
        if alone:
            # Nothing else held, so a crash now costs no other message a delivery (the
            # server counts one for everything fetched and not settled).
            self.inbound.count("tried_alone")
            await self._until_idle()
        self.inbound.stats.received += 1
        settle = self._settler(m, 0 if self.outputs is None else self.outputs.offer_mark())
        msg = result.message
        inlet = self.inlet
        self._hold()
        while not inlet.offer(msg, settle):
            # A full "block" subscriber, or none left (every subscription of the type closed):
            # hold this one, fetch nothing more (back-pressure). Nobody took it, so it is
            # never acked: closing, it is left for the server to deliver again.
            if closing():
                self._working.pop(id(m), None)
                self._release()
                return
            if not inlet.wants(type(msg)):
                # Refused for want of any subscriber (its service was given up, its
                # subscription closed), not for a full queue: neither it nor the rest of its
                # batch is kept "in progress", they go to another consumer after ack_wait
                # instead of ten ack_waits.
                batch = self._batch
                start = next((i for i, x in enumerate(batch) if x is m), len(batch))
                for rest in (m, *batch[start:]):
                    self._working.pop(id(rest), None)
            self.inbound.count("backpressure_waits")
            await inlet.space(type(msg))
        # Still in _working since the fetch, unless the offer settled it at once (a full
        # "raise" subscriber refused it): adding it here kept a nak'd message "in progress".
        if alone:
            await self._until_idle()

    def _hold(self) -> None:
        self._held += 1
        self._idle.clear()

    def _release(self) -> None:
        self._held -= 1
        if self._held <= 0:
            self._held = 0
            self._idle.set()

    async def _until_idle(self) -> None:
        """Wait until every message offered is settled at the server (at most ``ack_wait``:
        by then the server hands out the unsettled ones again anyway)."""
        if self._held == 0:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), self.options.ack_wait_s)
        except TimeoutError:
            self.inbound.count("alone_wait_timeouts")

    async def _undecodable(self, m: Msg, dropped: Dropped) -> None:
        self.inbound.drop(dropped)
        if dropped.reason is DropReason.FINGERPRINT_MISMATCH:
            # Our definition is wrong, not the message: leave it (and the rest) stored.
            self.stopped_for_mismatch = True
            log.error(
                "JetStream consumer of %s stopped: %s; nothing of this type is acknowledged "
                "until a process with the publisher's definition consumes it",
                self.subject,
                next(iter(self.inbound.mismatches.values())).describe(),
            )
            return
        self.inbound.count("poison")
        log.error(
            "JetStream message %s on %s can never be decoded (%s, %d bytes); terminated so "
            "it is not redelivered forever. It is still in the stream at that sequence.",
            _stream_seq(m),
            m.subject,
            dropped.reason.value,
            len(m.data),
        )
        with contextlib.suppress(Exception):
            await m.term()

    # -- settling ------------------------------------------------------------------------

    def _settler(self, m: Msg, since: int) -> Settle:
        return _Settler(self, m, since)

    def _settled(self, outcome: _Outcome) -> None:
        self._working.pop(id(outcome.msg), None)
        self._outcomes.append(outcome)
        wakeup = self._acker_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # How long a held message is kept "in progress", in ack_waits; past that the server hands
    # it out again, as it did before any was kept (a handler that never returns, a message
    # left queued in a subscription nobody reads any more).
    WORKING_ACK_WAITS = 10

    async def _keep_working(self) -> None:
        """Tell the server "in progress" (``+WPI``) for every message held longer than a third
        of ``ack_wait``, while the loop runs, for up to :attr:`WORKING_ACK_WAITS` ack_waits.

        A slow handler (each order 1.4 s against ack_wait 1 s), or a queue working through a
        batch, had every message it held handed out again: each handled twice, and the
        repeats spent deliveries a real failure needs before it is dead-lettered
        (``test_a_handler_slower_than_ack_wait_keeps_its_messages_and_handles_each_once``).
        So ``ack_wait_s`` is how long the server waits on a *silent* consumer: a process that
        died, or a loop that stalls (no heartbeat leaves a loop blocked in ``time.sleep``),
        gets its messages handed out again as before.
        """
        loop = asyncio.get_running_loop()
        ack_wait = self.options.ack_wait_s
        period = max(ack_wait / 3, 0.01)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for key, (m, offered, told) in list(self._working.items()):
                if now - told < period or key not in self._working:
                    continue
                if now - offered > ack_wait * self.WORKING_ACK_WAITS:
                    del self._working[key]  # left to the server's redelivery
                    self.inbound.count("in_progress_expired")
                    continue
                try:
                    await m.in_progress()
                except Exception as exc:  # reconnecting: the server may redeliver it
                    self.inbound.count("in_progress_errors")
                    log.debug("in-progress for %s failed: %r", self.subject, exc)
                    continue
                self.inbound.count("in_progress")
                if key in self._working:
                    self._working[key] = (m, offered, now)

    async def _ack_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._outcomes:
                self._acker_wakeup = loop.create_future()
                await self._acker_wakeup
            await self._settle_outcomes()

    async def _settle_outcomes(self) -> None:
        outcomes = self._outcomes
        while outcomes:
            outcome = outcomes.popleft()
            try:
                error = outcome.error
                if error is None:
                    error = await self._outputs_not_stored(outcome)
                if error is None:
                    await outcome.msg.ack()
                    self.inbound.count("acked")
                else:
                    await self._failed(outcome.msg, error)
            except Exception as exc:  # connection lost: the server redelivers after ack_wait
                self.inbound.count("ack_errors")
                log.warning("settling a JetStream message on %s failed: %r", self.subject, exc)
            finally:
                self._release()

    async def _outputs_not_stored(self, outcome: _Outcome) -> RuntimeError | None:
        """None once what the handler emitted is stored; else the input fails as if the
        handler had raised (nak with backoff, dead-lettered after ``max_deliver`` with the
        reason in its headers): at-least-once, a repeat, never a loss."""
        outputs = self.outputs
        if outputs is None or outcome.since == outcome.upto:
            return None
        why = await outputs.outputs_stored(outcome.since, outcome.upto)
        if why is None:
            return None
        self.inbound.count("acks_withheld")
        log.warning(
            "JetStream message %s on %s not acked: what its handler emitted was not stored "
            "(%s); it is delivered again",
            _stream_seq(outcome.msg),
            self.subject,
            why,
        )
        return RuntimeError(f"what the handler emitted was not stored by JetStream: {why}")

    async def _failed(self, m: Msg, error: BaseException) -> None:
        deliveries = m.metadata.num_delivered
        if deliveries >= self.options.max_deliver:
            await self._dead_letter(m, error, deliveries)
            return
        self.inbound.count("nacked")
        await m.nak(delay=self.options.delay(deliveries))

    async def _dead_letter(self, m: Msg, error: BaseException, deliveries: int) -> None:
        subject = f"{self.options.dead_letter_prefix}.{m.subject}"
        headers = {
            "Mycelium-Error": repr(error)[:1000],
            "Mycelium-Deliveries": str(deliveries),
            "Mycelium-Subject": m.subject,
            "Mycelium-Stream-Seq": _stream_seq(m),
            # One id per input: dead-lettering it again (the consumer died before the term
            # below reached the server) is dropped by the dead-letter stream's duplicate
            # window instead of storing a second copy.
            MSG_ID: dead_letter_msg_id(m),
        }
        try:
            await self._ensure_dead_letter_stream()
            ack = await self.js.publish(subject, m.data, headers=headers, timeout=5.0)
        except Exception as exc:
            # Not stored anywhere: keep it in the main stream (redelivered after the delay).
            self.inbound.count("dead_letter_errors")
            log.error("could not dead-letter %s to %s: %r; will retry", m.subject, subject, exc)
            await m.nak(delay=self.options.delay(deliveries))
            return
        await m.term()
        if ack.duplicate:
            self.inbound.count("dead_letter_repeats")
            log.warning(
                "JetStream message %s on %s was already dead-lettered to %s (not stored again)",
                _stream_seq(m),
                m.subject,
                subject,
            )
            return
        self.inbound.count("dead_lettered")
        log.error(
            "JetStream message %s on %s dead-lettered to %s after %d deliveries; last error: %r",
            _stream_seq(m),
            m.subject,
            subject,
            deliveries,
            error,
        )

    async def _ensure_dead_letter_stream(self) -> None:
        if self._dead_letter_ready:
            return
        prefix = self.options.dead_letter_prefix
        name = dead_letter_stream_name(prefix)
        await ensure_stream(self.js, StreamOptions(name), f"{prefix}.>")
        self._dead_letter_ready = True


# The consumer settings a process may change between restarts (the server updates them in
# place); the rest of the configuration is the same in every process.
_UPDATABLE = ("ack_wait", "max_ack_pending", "max_deliver")


async def update_durable(
    js: JetStreamContext, stream: str, durable: str, wanted: ConsumerConfig
) -> None:
    """Give an existing durable consumer the settings ``wanted`` asks for.

    nats-py's ``pull_subscribe`` creates a durable consumer only if it is missing: without
    this, a process restarted with another ``ack_wait_s`` or ``max_ack_pending`` would get
    the old ones from the server, silently. Raises :class:`ValueError` if the server will
    not change them.
    """
    try:
        info = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        return  # pull_subscribe creates it with ``wanted``
    have = info.config
    changes = {
        key: getattr(wanted, key)
        for key in _UPDATABLE
        if getattr(have, key) != getattr(wanted, key)
    }
    if not changes:
        return
    before = {key: getattr(have, key) for key in changes}
    try:
        await js.add_consumer(stream, config=have.evolve(**changes))
    except nats.js.errors.BadRequestError as exc:
        raise ValueError(
            f"JetStream consumer {durable!r} of stream {stream!r} has {before}; this process "
            f"asks for {changes} and the server refused to change it: {exc.description}\n"
            f"help: use the old settings, or delete the consumer (`nats consumer rm {stream} "
            f"{durable}`: what it had not acknowledged is delivered from the start again)"
        ) from exc
    log.warning(
        "JetStream consumer %s of stream %s changed from %s to %s (this process's settings)",
        durable,
        stream,
        before,
        changes,
    )


def dead_letter_stream_name(prefix: str) -> str:
    """The stream that stores ``<prefix>.>``: the prefix with separators made name-safe."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in prefix).upper()


def dead_letter_msg_id(m: Msg) -> str:
    """The dead-letter copy's ``Nats-Msg-Id``: the input's stream and stream sequence."""
    meta = m.metadata
    return f"dlq.{meta.stream}.{meta.sequence.stream}"


def _stream_seq(m: Msg) -> str:
    with contextlib.suppress(Exception):
        return str(m.metadata.sequence.stream)
    return "?"


async def check_last_stored(
    js: JetStreamContext, stream: str, subject: str, max_frame: int
) -> None:
    """Refuse (``WireMismatchError``) if the last stored message of ``subject`` has another layout.

    Checked before a consumer takes anything: a mismatched consumer must not start.
    """
    try:
        last = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return  # nothing stored yet
    result = decode_body(last.data or b"", subject, max_frame)
    if isinstance(result, Dropped) and result.reason is DropReason.FINGERPRINT_MISMATCH:
        raise WireMismatchError(describe_mismatch(result))
