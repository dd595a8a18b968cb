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
        if self._closed:
            raise BacklogClosedError(
                f"submit({_name(fn)}) after the backlog was closed\n"
                "help: close the backlog only after the last emit"
            )
        loop = _running_loop(fn)
        if self._loop is not loop and self._loop is not None and self._loop.is_running():
            # Another thread's loop owns the worker: refuse before anything is queued (the
            # hybrid emit submits before its sync handlers run, so none of them ran either).
            raise self._other_loop(fn)
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
        await self._settle()
        self._raise_failures()

    async def _settle(self) -> None:
        # Until nothing is left, not only what was submitted when the wait began: a
        # background handler that emits queues more background calls, and drain() used to
        # return with those still to run (their failures raised by nobody, and lost when
        # asyncio.run ended right after the drain).
        while self._finished() < self._submitted:
            fut = asyncio.get_running_loop().create_future()
            entry = (self._submitted, fut)
            self._progress.append(entry)
            try:
                await fut
            finally:
                if fut.cancelled():
                    # A drain() under a timeout (a health check polling a stalled handler)
                    # left its entry here until the backlog got that far: one per check.
                    with contextlib.suppress(ValueError):
                        self._progress.remove(entry)

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
        while len(self._queue) > self.maxsize - room:
            fut = asyncio.get_running_loop().create_future()
            self._space_waiters.append(fut)
            try:
                await fut
            finally:
                if fut.cancelled():  # as in _settle: a wait cut short leaves nothing behind
                    with contextlib.suppress(ValueError):
                        self._space_waiters.remove(fut)

    async def close(self, timeout: float | None = None) -> None:
        """Refuse new calls, run what is queued (up to ``timeout`` s), stop the worker.

        Calls that did not finish by then (the one cut off and those never started) are
        counted as ``dropped``, and every ``drain()`` returns.
        """
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settle(), timeout)
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

    def _other_loop(self, fn: Callable[..., Any]) -> OtherEventLoopError:
        return OtherEventLoopError(
            f"submit({_name(fn)}) from an event loop other than the one this backlog's worker "
            "runs on, which is still running (in another thread); the call was not queued\n"
            "help: a bus with background routes belongs to one event loop: give each thread's "
            "loop its own bus, or hand the emit to the bus's loop with "
            "loop.call_soon_threadsafe(bus.emit, msg)")

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        old = self._worker
        if old is not None and not old.done() and not old.get_loop().is_closed():
            # A different loop is running us now (e.g. a second asyncio.run): the old
            # worker can no longer be woken from here.
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
                    raise  # the worker itself is being cancelled (close(), a new loop)
                # The handler's own CancelledError (something it awaited was cancelled) is
                # that call's failure: it used to end the worker, and drain() then hung.
                self._failed += 1
                self._report_call((_cancelled_call(fn, exc),))
            except NEVER_A_FAILURE:
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


def _running_loop(fn: Callable[..., Any]) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        name = _name(fn)
        sync_name = name.removesuffix("_async") + "_sync" if name.endswith("_async") else None
        hint = f"call {sync_name}(msg) for the sync handlers only" if sync_name else ""
        raise NoEventLoopError(
            f"background handlers ({name}) need a running asyncio event loop, and there is "
            "none in this thread\n"
            f"help: {hint + ', or ' if hint else ''}run the caller inside asyncio "
            "(asyncio.run(main()) with the emits inside main)"
        ) from None


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn))))
