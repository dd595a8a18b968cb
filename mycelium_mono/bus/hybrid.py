"""The background half of a hybrid route: ``route(sync=[...], background=[...])``.

The generated ``MonolithBus`` runs ``emit_<m>_sync(msg)`` inline, then calls
``self.background.submit(self.emit_<m>_async, msg)``. :class:`BackgroundBacklog` queues that
call and one long-lived worker task on the running event loop awaits the queued calls in
order — one task for the backlog, never a task per message (a task wake-up per message
costs ~3.7 µs on the build machines; draining a deque costs ~0.34 µs).

The caller is synchronous and runs on the event loop thread, so it can never wait for the
worker. The bound holds under every policy (issue 12: "block" used to overfill, 200,000
calls queued against ``maxsize=10000``): a full ``policy="block"`` backlog refuses the call
with :class:`BacklogFull` (nothing queued, like ``asyncio.Queue.put_nowait``), and the
producer gets its back-pressure by awaiting ``await backlog.wait_for_space()`` between
messages; "drop_oldest" drops and counts the oldest call; "raise" refuses as "block" does.

A background call that raises, with no ``on_error``, is logged and kept: the next ``drain()``
(or ``close()``) raises every kept failure together as an ``ExceptionGroup``, so a test that
drains sees them (issue 15: they used to be only logged, and ``drain()`` returned normally).
A generated bus's background call hands each failing handler's exception over itself
(:meth:`BackgroundBacklog.take_failures`), so ``on_error`` and that group hold the handlers'
exceptions, not the bus's group around them, and a call whose failures the bus's own
``on_error`` took is still counted as ``failed``.

The backlog belongs to one running loop at a time (tests/test_stranger9_hybrid9.py): a call
cut off because its worker's loop ended is counted as ``dropped``; a submit from another
thread's running loop is refused; ``drain()``, ``wait_for_space()`` and ``close()`` refuse to
wait from inside a background handler, which would wait for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mycelium_mono.bus.policy import OverflowPolicy, check_policy
from mycelium_mono.bus.waiting import wait_listed
from mycelium_mono.monolith import CallbackShape, check_error_callback

__all__ = [
    "BackgroundBacklog",
    "BacklogClosedError",
    "BacklogFull",
    "BacklogStats",
    "NoEventLoopError",
    "OtherEventLoopError",
    "default_backlog",
]

logger = logging.getLogger("mycelium_mono.hybrid")

M = TypeVar("M")
ErrorCallback = Callable[[BaseException], object]

BACKLOG_ON_ERROR = CallbackShape(
    "on_error(exc)", "def on_error(exc: BaseException) -> None (the handler's own exception; a "
    "MonolithBus's on_error takes (exc, where, msg))", 1)

# What a handler's call never counts as its own failure: the process is stopping (asyncio
# hands these on to asyncio.run), or the task's coroutine is being closed (GeneratorExit,
# which a coroutine that caught it and awaited again would turn into a RuntimeError).
NEVER_A_FAILURE = (KeyboardInterrupt, SystemExit, GeneratorExit)


_KEPT_FAILURES = 100
"""Failures kept for the next ``drain()`` when nobody drains; older ones are only counted."""


class BacklogFull(RuntimeError):
    """``submit`` on a full backlog ("block" or "raise"); the call was not queued."""


class BacklogClosedError(RuntimeError):
    """``submit`` after :meth:`BackgroundBacklog.close`."""


class NoEventLoopError(RuntimeError):
    """``submit`` was called from code that is not running inside an asyncio event loop."""


class OtherEventLoopError(NoEventLoopError):
    """``submit`` from an event loop while the backlog's worker runs on another loop that is
    still running (a second thread with its own ``asyncio.run``); the call was not queued.

    The backlog is one queue drained by one task on one loop: a second loop moved the worker
    on every alternation, cancelling the first loop's task from the wrong thread. Two threads
    sharing one hybrid bus lost calls (18 of 10,000) and both hung in ``drain()``.
    """


@dataclass(frozen=True)
class BacklogStats:
    """A snapshot of the backlog's counters (``failed`` calls are also ``completed``)."""

    submitted: int
    completed: int
    failed: int
    dropped: int
    overfilled: int
    queued: int
    rejected: int = 0
    """Calls refused with :class:`BacklogFull` (policy "block" or "raise"): never queued.

    A subscriber's "raise" refusals are counted (``SubscriberStats.rejected``); the backlog's
    were counted nowhere, so a producer that caught BacklogFull left no trace in the stats.
    """


class BackgroundBacklog:
    """A bounded queue of background calls, run in order by one worker task."""

    def __init__(
        self,
        maxsize: int = 10_000,
        policy: OverflowPolicy = "block",
        on_error: ErrorCallback | None = None,
    ) -> None:
        check_policy(policy, maxsize, where="BackgroundBacklog")
        check_error_callback(on_error, "BackgroundBacklog", BACKLOG_ON_ERROR)
        self.maxsize = maxsize
        self.policy = policy
        self.on_error = on_error
        self._queue: deque[tuple[Callable[[Any], Awaitable[None]], Any]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._progress: list[tuple[int, asyncio.Future[None]]] = []
        self._space_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._settling = False  # close() is running what is queued (and what that queues)
        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._dropped = 0
        self._overfilled = 0
        self._rejected = 0
        self._unraised: list[Exception] = []
        self._unraised_lost = 0
        self._unraised_calls = 0  # calls behind self._unraised (one may hold several failures)
        self._in_flight = 0  # 1 while the worker awaits a call
        self._current: tuple[Callable[[Any], Awaitable[None]], Any] | None = None
        self._current_failed = False  # the call running now reported failures (take_failures)

    def submit(self, fn: Callable[[M], Awaitable[None]], msg: M) -> None:
        """Queue ``await fn(msg)`` to run in the background; never blocks the caller."""
        if self._closed and not (self._settling and self._in_worker()):
            # While close() runs what is queued, the calls those handlers queue (a background
            # handler's emit into a hybrid route) are part of it, as they are of drain(): they
            # used to be refused, each such handler failed with BacklogClosedError and its
            # chain was left half run (the sync path of the nested emit done, its background
            # path never).
            raise BacklogClosedError(
                f"submit({_name(fn)}) after the backlog was closed\n"
                "help: close the backlog only after the last emit"
            )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or loop is not self._loop:
            loop = _running_loop(fn, self._worker)  # or why it cannot be queued from here
        queue = self._queue
        if len(queue) >= self.maxsize:
            self._make_room(fn)
        queue.append((fn, msg))
        self._submitted += 1
        if self._loop is loop:
            wakeup = self._wakeup
            if wakeup is not None:
                self._wakeup = None
                if not wakeup.done():
                    wakeup.set_result(None)
                    return
            if self._worker is not None and not self._worker.done():
                return
        self._start_worker(loop)

    async def drain(self) -> None:
        """Wait until the backlog is empty: everything submitted has run (or been dropped),
        including the calls the background handlers submitted meanwhile.

        Raises an :class:`ExceptionGroup` of the calls that failed since the last ``drain()``
        when there is no ``on_error`` callback (with one, the callback got them instead).
        """
        self._refuse_in_worker("drain()")
        await self._settle()
        self._raise_failures()

    def _in_worker(self) -> bool:
        """True when called from a background handler this backlog is running."""
        worker = self._worker
        if worker is None:
            return False
        try:
            return asyncio.current_task() is worker
        except RuntimeError:  # no running loop in this thread
            return False

    def _refuse_in_worker(self, what: str) -> None:
        # A background handler runs on the backlog's one worker task, so a wait for the
        # backlog to move on (empty, room, closed) from inside one waits for itself: it
        # used to hang for good, and every call behind it with it.
        if self._in_worker():
            current = self._current
            handler = f" ({_name(current[0])})" if current is not None else ""
            raise RuntimeError(
                f"{what} called from inside a background handler{handler}: the backlog runs "
                "its calls one at a time, so it would wait for this very call to finish, "
                "forever\n"
                "help: call it from the producer (the code that emits), not from a handler "
                "the backlog runs; a background handler that needs another handler's result "
                "can await that emit itself (await bus.emit_<message>_async(msg))"
            )

    async def _settle(self) -> None:
        # Until nothing is left, not only what was submitted when the wait began: a
        # background handler that emits queues more background calls, and drain() used to
        # return with those still to run (their failures raised by nobody, and lost when
        # asyncio.run ended right after the drain).
        while self._finished() < self._submitted:
            fut = asyncio.get_running_loop().create_future()
            await wait_listed(self._progress, (self._submitted, fut), fut)

    def _raise_failures(self) -> None:
        failures, self._unraised = self._unraised, []
        lost, self._unraised_lost = self._unraised_lost, 0
        calls, self._unraised_calls = self._unraised_calls, 0
        if not failures:
            return
        count = len(failures) + lost
        several = f" ({count} handler failures)" if count != calls else ""
        older = f" (the {lost} oldest were only logged)" if lost else ""
        raise ExceptionGroup(
            f"{calls} background call{'' if calls == 1 else 's'} failed{several}{older}; pass "
            "on_error= to the backlog to handle them yourself", failures)

    def take_failures(self, fn: Callable[..., Any], msg: Any, errors: Sequence[Exception], *,
                      reported: bool) -> bool:
        """The handlers of ``fn(msg)`` failed with ``errors``: if that is the call this
        backlog's worker is running, count it as failed and (unless ``reported`` elsewhere,
        by the bus's own ``on_error``) report each exception as that call's failure.

        A generated bus calls this from its background emit instead of raising its
        ``ExceptionGroup`` at the worker: ``on_error`` used to receive that group rather than
        the handler's exception, drain() raised groups nested in its group, and a call whose
        failures ``MonolithBus(on_error=...)`` took was counted as a success. False (nothing
        taken: the caller raises as usual) when ``fn(msg)`` was awaited by someone else.
        """
        current = self._current
        if current is None or current[1] is not msg or current[0] != fn:
            return False
        try:
            if asyncio.current_task() is not self._worker:
                return False
        except RuntimeError:  # no running loop: not the worker
            return False
        self._current_failed = True
        if not reported:
            self._report_call(errors)
        return True

    async def wait_for_space(self, room: int = 1) -> None:
        """Wait until ``room`` more calls fit under the bound (back-pressure for awaiting
        producers).

        An emit whose sync handlers emit into background routes queues one call per such
        emit: a nested one the full backlog refuses is the emitting handler's failure
        (BacklogFull inside the emit's ExceptionGroup), after the calls before it were
        queued and their handlers ran. A producer waits for as much room as one of its
        emits queues, and none of its emits is cut short.
        """
        if not isinstance(room, int) or isinstance(room, bool) or not 1 <= room <= self.maxsize:
            raise ValueError(f"wait_for_space(room={room!r}): room must be an int in "
                             f"1..{self.maxsize} (the backlog's maxsize)")
        if len(self._queue) > self.maxsize - room:
            self._refuse_in_worker(f"wait_for_space(room={room}) on a full backlog")
        while len(self._queue) > self.maxsize - room:
            fut = asyncio.get_running_loop().create_future()
            await wait_listed(self._space_waiters, fut, fut)

    async def close(self, timeout: float | None = None) -> None:
        """Refuse new calls, run what is queued (up to ``timeout`` s), stop the worker.

        Calls that did not finish by then (the one cut off and those never started) are
        counted as ``dropped``, and every ``drain()`` returns.
        """
        self._refuse_in_worker("close()")
        self._closed = True
        self._settling = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settle(), timeout)
        finally:
            self._settling = False
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        not_run = len(self._queue) + self._in_flight
        if not_run:
            # They will never run: before, they stayed "queued" and drain() waited forever.
            logger.warning("background backlog closed with %d calls not run", not_run)
            self._queue.clear()
            self._in_flight = 0
            self._dropped += not_run
        self._notify_progress()
        self._wake_space_waiters()
        self._raise_failures()

    @property
    def stats(self) -> BacklogStats:
        """A snapshot of the counters."""
        return BacklogStats(
            submitted=self._submitted,
            completed=self._completed,
            failed=self._failed,
            dropped=self._dropped,
            overfilled=self._overfilled,
            queued=len(self._queue),
            rejected=self._rejected,
        )

    def __len__(self) -> int:
        return len(self._queue)

    # -- internals ---------------------------------------------------------------------

    def _make_room(self, fn: Callable[..., Any]) -> None:
        """Apply the overflow policy to a full backlog (see the module docstring)."""
        if self.policy == "drop_oldest":
            self._queue.popleft()
            self._dropped += 1
            self._notify_progress()
            return
        # "block" cannot wait in a sync caller, and must not overfill: it refuses as "raise".
        self._rejected += 1
        raise BacklogFull(
            f"background backlog is full ({self.maxsize} calls, policy={self.policy!r}) "
            f"while submitting {_name(fn)}; the call was not queued\n"
            "help: the background handlers are slower than the sync path; "
            "`await backlog.wait_for_space()` in the producer before emitting, raise maxsize, "
            "or use policy='drop_oldest'"
        )

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        old = self._worker
        if old is not None and not old.done():
            # A different loop is running us now (a second asyncio.run, after a loop that
            # was stopped but not closed, or closed without cancelling its tasks): the old
            # worker can no longer be woken from here, and a call it was inside is cut off.
            # Counted here: that loop may never run again to tell (drain() hung for it).
            self._drop_in_flight(old)
            if not old.get_loop().is_closed():
                old.cancel()
        self._loop = loop
        self._wakeup = None
        # A Task, not loop.create_task: an eager task factory (Python 3.12+) would run the
        # worker's first step inside this submit, i.e. a background handler before the sync
        # handlers of the emit that queued it. A Task is always started by the loop.
        self._worker = asyncio.Task(self._work(), loop=loop, name="mycelium-background-backlog")

    async def _work(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while True:
            while not queue:
                self._wakeup = loop.create_future()
                await self._wakeup
            fn, msg = queue.popleft()
            if self._space_waiters:
                self._wake_space_waiters()
            self._in_flight = 1
            self._current = fn, msg
            self._current_failed = False
            try:
                await fn(msg)
            except Exception as exc:
                self._failed += 1
                self._report_call((exc,))
            except asyncio.CancelledError as exc:
                if cancelling():
                    # The worker itself is being cancelled (close(), asyncio.run ending with
                    # the call in flight): the call was cut off. It was counted nowhere, so
                    # the next drain() (in the next asyncio.run) waited for it forever.
                    self._drop_in_flight(me)
                    raise
                # The handler's own CancelledError (something it awaited was cancelled) is
                # that call's failure: it used to end the worker, and drain() then hung.
                self._failed += 1
                self._report_call((_cancelled_call(fn, exc),))
            except NEVER_A_FAILURE:
                self._drop_in_flight(me)  # cut off too: the process or the loop is stopping
                raise
            except BaseException as exc:
                # Another BaseException (pytest.fail raises one) ended the worker: the calls
                # behind it never ran and drain() waited for them for good
                # (tests/test_stranger8_runtime8.py). That call's failure, like any other.
                self._failed += 1
                self._report_call((_base_exception_call(fn, exc),))
            else:
                if self._current_failed:  # its failures came through take_failures()
                    self._failed += 1
            self._current = None
            self._in_flight = 0
            self._completed += 1
            if self._progress:
                self._notify_progress()

    def _drop_in_flight(self, worker: asyncio.Task[Any] | None) -> None:
        """The call ``worker`` was awaiting will never finish: count it as dropped.

        Only while it is still the backlog's worker: close() took it off first and counts the
        call itself, and a worker replaced on a new loop no longer owns ``_in_flight``.
        """
        if self._in_flight and worker is not None and worker is self._worker:
            logger.warning("background call %s cut off: its worker task was stopped",
                           _name(self._current[0]) if self._current else "?")
            self._in_flight = 0
            self._current = None
            self._dropped += 1
            self._notify_progress()

    def _report_call(self, errors: Sequence[Exception]) -> None:
        """One call failed with ``errors``: each to ``on_error``, or kept for drain()."""
        if self.on_error is None:
            self._unraised_calls += 1
        for exc in errors:
            self._report(exc)

    def _report(self, exc: Exception) -> None:
        if self.on_error is None:
            logger.error("background handler failed", exc_info=exc)
            if len(self._unraised) >= _KEPT_FAILURES:
                self._unraised.pop(0)
                self._unraised_lost += 1
            self._unraised.append(exc)
            return
        try:
            self.on_error(exc)
        except Exception as callback_exc:
            logger.error("on_error callback raised while reporting %r", exc, exc_info=callback_exc)

    def _finished(self) -> int:
        return self._completed + self._dropped

    def _notify_progress(self) -> None:
        finished = self._finished()
        keep = []
        for target, fut in self._progress:
            if finished >= target:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._progress = keep

    def _wake_space_waiters(self) -> None:
        waiters, self._space_waiters = self._space_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


def cancelling() -> bool:
    """True if the current task was asked to cancel, not merely handed a CancelledError by
    something it awaited (a handler's own, which the backlog and the runtime count as that
    handler's failure)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _cancelled_call(fn: Callable[..., Any], exc: asyncio.CancelledError) -> Exception:
    """A handler's CancelledError as an ``Exception`` (an ``ExceptionGroup`` holds no other)."""
    failure = RuntimeError(
        f"background handler {_name(fn)} raised CancelledError (something it awaited was "
        "cancelled); the backlog carried on with the next call"
    )
    failure.__cause__ = exc
    return failure


def _base_exception_call(fn: Callable[..., Any], exc: BaseException) -> Exception:
    """A handler's non-``Exception`` BaseException as an ``Exception``, for the group."""
    failure = RuntimeError(
        f"background handler {_name(fn)} raised {type(exc).__name__} (a BaseException that "
        "is not an Exception); the backlog carried on with the next call"
    )
    failure.__cause__ = exc
    return failure


def default_backlog() -> BackgroundBacklog:
    """A new backlog with the defaults (10,000 calls, "block", errors raised by drain())."""
    return BackgroundBacklog()


def _running_loop(fn: Callable[..., Any],
                  worker: asyncio.Task[None] | None) -> asyncio.AbstractEventLoop:
    """The caller's running loop, for a submit whose loop is not the worker's.

    Refused when the worker runs on another loop that is still running (another thread's):
    both threads would share one queue, and each submit from the other loop restarted the
    worker there, cutting off the call in flight (10 of 20 calls lost, and drain() hung in
    both threads).
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    owner = worker.get_loop() if worker is not None and not worker.done() else None
    if owner is not None and owner is not loop and owner.is_running():
        where = "an event loop other than" if loop else "a thread with no event loop, not"
        raise OtherEventLoopError(
            f"submit({_name(fn)}) from {where} the one this backlog's worker runs on, which is "
            "still running (in another thread); the call was not queued\n"
            "help: a bus with background routes belongs to one event loop: give each thread's "
            "loop its own bus, or hand the emit to the bus's loop with "
            "loop.call_soon_threadsafe(bus.emit, msg)"
        )
    if loop is not None:
        return loop
    name = _name(fn)
    sync_name = name.removesuffix("_async") + "_sync" if name.endswith("_async") else None
    hint = f"call {sync_name}(msg) for the sync handlers only" if sync_name else ""
    raise NoEventLoopError(
        f"background handlers ({name}) need a running asyncio event loop, and there is "
        "none in this thread\n"
        f"help: {hint + ', or ' if hint else ''}run the caller inside asyncio "
        "(asyncio.run(main()) with the emits inside main)"
    )


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn))))
