"""Services on a MessageBus: spawning, restarting, and shutting down without losing messages.

Two kinds of service run here, written exactly as for the monolith:

- a ``@service`` class whose ``async def run(self, ctx)`` is its body (producers, adapters,
  anything with its own loop); if ``run`` raises it is restarted with exponential backoff;
- a handler class (``MessageHandler[T]`` or ``@handles`` methods) with no ``run``: the runtime
  subscribes to every type it handles — one queue, so the handler sees them in publish order —
  and calls the method for each message; ``self.emit(msg)`` publishes downstream.

Graceful shutdown: signal ``ctx.shutting_down`` (``ctx.sleep`` returns at once), wait until the
pipeline is quiescent — every service has returned or is parked in ``recv()`` on an empty
queue — then close the subscriptions so consumers finish, and cancel whatever is still
running when the timeout expires.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mycelium_mono.bus.bus import (
    DEFAULT_MAXSIZE,
    BusClosedError,
    MessageBus,
    Publisher,
    QueueFullError,
    Subscriber,
    _full_blockers,
)
from mycelium_mono.bus.hybrid import NEVER_A_FAILURE, cancelling
from mycelium_mono.bus.policy import OverflowPolicy, check_policy
from mycelium_mono.handlers import (
    HandlerOwnedError,
    MessageHandler,
    attach_emitter,
    detach_emitter,
    handled_messages,
)

__all__ = ["RunningService", "ServiceContext", "ServiceRuntime", "service"]

logger = logging.getLogger("mycelium_mono.runtime")

T = TypeVar("T")
C = TypeVar("C", bound=type[Any])

_SERVICE_ATTR = "__mycelium_service__"


def service(cls: C) -> C:
    """Mark ``cls`` as a service whose ``async def run(self, ctx)`` is its body."""
    run = getattr(cls, "run", None)
    if not inspect.iscoroutinefunction(run):
        raise TypeError(
            f"@service {cls.__qualname__} has no `async def run(self, ctx)`\n"
            "help: define the service body as `async def run(self, ctx: ServiceContext)`, "
            "or drop @service and spawn it as a handler (MessageHandler / @handles)"
        )
    setattr(cls, _SERVICE_ATTR, True)
    return cls


class ServiceContext:
    """What a running service sees of the bus: emit, subscribe, and the shutdown signal."""

    def __init__(self, runtime: ServiceRuntime, name: str) -> None:
        self._runtime = runtime
        self.name = name
        self._publishers: dict[type[Any], Publisher[Any]] = {}
        self._subscriptions: dict[type[Any], Subscriber[Any]] = {}
        # Emits a handler made while a downstream "block" queue was full, in order; the
        # runtime publishes them (waiting for space) before the handler's next message.
        self._held: list[Any] = []
        self._in_handler = False

    @property
    def bus(self) -> MessageBus:
        """The bus this service runs on."""
        return self._runtime.bus

    async def emit(self, msg: Any) -> None:
        """Publish ``msg`` downstream (waits for space under the "block" policy)."""
        try:
            await self._publisher(type(msg)).publish(msg)
        except BusClosedError:
            raise self._closed_under_service(msg) from None
        if self._runtime._subscriptions_closed:
            # Shutdown closed every subscription, so the back-pressure this emit used to
            # wait on is gone and an in-process publish never suspends: a producer still
            # emitting in a loop spun the event loop for good and shutdown(timeout) never
            # got to cancel it. Yield, so the cancellation after the timeout lands here.
            await asyncio.sleep(0)

    def emit_nowait(self, msg: Any) -> None:
        """Publish without waiting; this is what a handler's sync ``self.emit`` calls.

        A full downstream "block" queue is never overfilled (issue 12). Inside a handler
        the runtime spawned, the message is held, in order with the handler's later emits,
        and published with back-pressure before the handler gets its next message: the
        service waits for its consumers, and every mode reaches the same result. Anywhere
        else this raises :class:`QueueFullError` with nothing queued, like
        ``Publisher.publish_nowait``.
        """
        if self._held:
            self._held.append(msg)  # behind what is already held: order is kept
            return
        try:
            self._publisher(type(msg)).publish_nowait(msg)
        except QueueFullError:
            if not self._in_handler:
                raise
            self._held.append(msg)
        except BusClosedError:
            raise self._closed_under_service(msg) from None

    def _closed_under_service(self, msg: Any) -> BusClosedError:
        """The bus was closed while this service still ran: say which call loses nothing.

        ``await bus.close()`` after a burst of publishes closes the bus while consumers
        still handle what was queued for them; each of their emits then failed with "create
        a new MessageBus to publish again", which does not say that the pipeline's
        downstream messages are being lost, nor that ``runtime.shutdown()`` is the close that
        waits for them.
        """
        if self._runtime._stopping.is_set():
            why = "the runtime has shut down"
        else:
            why = ("the bus was closed while this service still ran (bus.close() does not "
                   "wait for the services on it)")
        return BusClosedError(
            f"service {self.name!r} emitted {type(msg).__name__}, which was not published: "
            f"{why}\nhelp: close a runtime's bus with `await runtime.shutdown()`: it lets "
            "every service handle what is queued for it, and publish what that emits, before "
            "it closes the bus"
        )

    async def _release_held(self, own: Subscriber[Any] | None = None) -> None:
        """Publish what a handler emitted into full queues, waiting for space, in order.

        ``own`` is the service's own subscription when it may not be waited for: a held
        message that ``own`` (full) refuses stays held, with everything after it, until the
        service has taken its next batch — waiting would be waiting for itself.
        """
        held, self._held = self._held, []
        for i, msg in enumerate(held):
            pub = self._publisher(type(msg))
            try:
                if own is not None:
                    while blockers := _full_blockers(pub._topic.local):
                        if own in blockers:
                            self._held = held[i:] + self._held
                            return
                        await blockers[0]._wait_for_space()
                # Nothing local is full now, and publish queues locally before it awaits.
                await pub.publish(msg)
            except BusClosedError:
                # Nothing held can be published any more: said once, naming the service.
                self._held = []
                raise self._closed_under_service(msg) from None
            except BaseException:
                self._held = held[i + 1 :] + self._held
                raise

    async def wait_for_space(self) -> None:
        """Wait until every "block" queue this service publishes to is below its bound."""
        for pub in list(self._publishers.values()):
            await pub.wait_for_space()

    async def _wait_for_space_except(self, own: Subscriber[Any]) -> None:
        """:meth:`wait_for_space`, but never for ``own`` (only this service empties it)."""
        for pub in list(self._publishers.values()):
            for sub in pub._topic.local:
                if sub is not own and sub.policy == "block" and len(sub) >= sub.maxsize:
                    await sub._wait_for_space()

    def subscribe(
        self,
        message_type: type[T],
        *,
        maxsize: int | None = None,
        policy: OverflowPolicy | None = None,
    ) -> Subscriber[T]:
        """This service's subscription to ``message_type``.

        Subscribing again to the same type returns the same subscription, so a restarted
        ``run`` picks up what was queued while it was down instead of losing it.
        """
        existing = self._subscriptions.get(message_type)
        if existing is not None and not existing.closed:
            return existing
        sub = self.bus.subscribe(
            message_type,
            maxsize=maxsize if maxsize is not None else self._runtime.maxsize,
            policy=policy if policy is not None else self._runtime.policy,
            name=f"{self.name}:{message_type.__name__}",
        )
        self._subscriptions[message_type] = sub
        return sub

    @property
    def shutting_down(self) -> bool:
        """True once the runtime began shutting down: producers should stop producing."""
        return self._runtime._stopping.is_set()

    @property
    def shutdown_event(self) -> asyncio.Event:
        """Set when shutdown begins (for ``asyncio.wait`` alongside other awaitables)."""
        return self._runtime._stopping

    async def sleep(self, seconds: float) -> bool:
        """Sleep, returning early when shutdown begins; True if the full time elapsed."""
        return await self._runtime._sleep(seconds)

    @property
    def subscriptions(self) -> list[Subscriber[Any]]:
        """Every subscription this service holds."""
        return list(self._subscriptions.values())

    def _publisher(self, message_type: type[Any]) -> Publisher[Any]:
        pub = self._publishers.get(message_type)
        if pub is None:
            pub = self._publishers[message_type] = self.bus.publisher(message_type)
        return pub

    def _adopt(self, sub: Subscriber[Any]) -> None:
        for message_type in sub.message_types:
            self._subscriptions[message_type] = sub

    def _is_idle(self) -> bool:
        """Parked in ``recv()`` with nothing queued anywhere it listens."""
        subs = list(dict.fromkeys(self._subscriptions.values()))
        if not subs or any(len(s) for s in subs):
            return False
        return any(s.idle for s in subs)


@dataclass(eq=False)
class RunningService:
    """A spawned service and what happened to it so far."""

    name: str
    instance: object
    context: ServiceContext
    kind: str
    # Not optional: spawn_service sets it before returning the RunningService, and typing it
    # `Task[None] | None` made the README's `await adapter.task` a mypy --strict error.
    # (The task's coroutine needs this object, so it cannot be a constructor argument.)
    task: asyncio.Task[None] = field(init=False)
    restarts: int = 0
    handled: int = 0
    errors: int = 0
    failure: BaseException | None = None
    exceptions: list[BaseException] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """True once the service's task has finished (returned, gave up, or was cancelled)."""
        return self.task.done()


class ServiceRuntime:
    """Runs services on a :class:`MessageBus` and shuts them down gracefully."""

    def __init__(
        self,
        bus: MessageBus | None = None,
        *,
        max_restarts: int = 5,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        maxsize: int = DEFAULT_MAXSIZE,
        policy: OverflowPolicy = "block",
    ) -> None:
        check_policy(policy, maxsize, where="ServiceRuntime")
        self.bus = bus if bus is not None else MessageBus()
        self.max_restarts = max_restarts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.maxsize = maxsize
        self.policy: OverflowPolicy = policy
        self.services: list[RunningService] = []
        self._stopping = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._sleepers: set[asyncio.Future[bool]] = set()
        self._shutdown_done: asyncio.Future[None] | None = None
        # Tasks awaiting a shutdown already under way (a service that asked for it too):
        # the shutdown neither waits for them nor cancels them.
        self._awaiting_shutdown: set[asyncio.Task[Any]] = set()
        self._shut_down = False
        self._subscriptions_closed = False  # shutdown closed them: see ServiceContext.emit

    async def __aenter__(self) -> ServiceRuntime:
        await self.bus.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # -- spawning ------------------------------------------------------------------------

    async def spawn_service(self, svc: object, *, name: str | None = None) -> RunningService:
        """Start ``svc``: its ``run(ctx)`` if it has one, else its handler methods.

        Subscriptions of a handler service exist on the bus when this returns, so nothing
        published afterwards in this process is missed. Over a network the engine learns of
        them a moment later: before a peer publishes, ``await runtime.bus.ready()`` once every
        service is spawned (a durable JetStream consumer keeps what arrives meanwhile).
        """
        if self._stopping.is_set():
            raise RuntimeError(
                f"spawn_service({type(svc).__qualname__}) during shutdown\n"
                "help: spawn every service before calling shutdown()/wait_for_shutdown()"
            )
        # A handler service (no run()) spawned again would be a second consumer of one
        # instance: every message twice. A MessageHandler has the same owner both times, so
        # attach_emitter lets it through; a plain @handles class has no owner at all (it may
        # serve several buses and runtimes), so it too is refused here, on this runtime.
        consumes = isinstance(svc, MessageHandler) or not inspect.iscoroutinefunction(
            getattr(svc, "run", None))
        for other in self.services:
            if other.instance is svc and consumes and not other.done:
                raise HandlerOwnedError(
                    f"{type(svc).__qualname__} instance at 0x{id(svc):x} is already running on "
                    f"this ServiceRuntime as service {other.name!r}; spawning it again would "
                    "give it every message twice\n"
                    "help: spawn a second instance if you want two consumers"
                )
        await self.bus.start()
        label = name or self._unique_name(type(svc).__name__)
        ctx = ServiceContext(self, label)
        attach_emitter(svc, ctx.emit_nowait)
        if inspect.iscoroutinefunction(getattr(svc, "run", None)):
            running = RunningService(label, svc, ctx, "run")
            running.task = asyncio.create_task(
                self._guard(running, self._supervise(running)), name=label
            )
        else:
            running = RunningService(label, svc, ctx, "handler")
            table = self._dispatch_table(running)
            sub = self.bus.subscribe_many(
                table, maxsize=self.maxsize, policy=self.policy, name=label
            )
            ctx._adopt(sub)
            running.task = asyncio.create_task(
                self._guard(running, self._consume(running, sub, table)), name=label
            )
        self.services.append(running)
        return running

    def _unique_name(self, base: str) -> str:
        taken = {s.name for s in self.services}
        if base not in taken:
            return base
        n = 2
        while f"{base}#{n}" in taken:
            n += 1
        return f"{base}#{n}"

    # -- run services: restart with backoff --------------------------------------------------

    async def _supervise(self, running: RunningService) -> None:
        run: Callable[[ServiceContext], Awaitable[None]] = getattr(running.instance, "run")  # noqa: B009
        while True:
            try:
                await run(running.context)
                return
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and cancelling():
                    raise
                if isinstance(exc, NEVER_A_FAILURE):
                    raise  # the process is stopping: _guard closes its subscriptions
                running.exceptions.append(exc)  # any other BaseException: restarted too
                if not await self._restart_after(running, exc):
                    return

    async def _restart_after(self, running: RunningService, exc: BaseException) -> bool:
        """Log the failure and sleep the backoff; False if the service should stay down."""
        if self._stopping.is_set():
            logger.warning(
                "service %s raised during shutdown; not restarting", running.name, exc_info=exc
            )
            running.failure = exc
            return False
        if running.restarts >= self.max_restarts:
            self._give_up(running, exc, f"raised and used up its {self.max_restarts} restarts")
            return False
        running.restarts += 1
        delay = min(self.backoff_initial * 2 ** (running.restarts - 1), self.backoff_max)
        logger.warning(
            "service %s raised %s; restart %d of %d in %.3fs",
            running.name,
            type(exc).__name__,
            running.restarts,
            self.max_restarts,
            delay,
            exc_info=exc,
        )
        return await self._sleep(delay)

    def _give_up(self, running: RunningService, exc: BaseException, why: str) -> None:
        """The service will not run again: close its subscriptions and say what it left."""
        # Nobody will read its subscriptions again: left open, a full "block" one would
        # stall every publisher of its types for good. Closed, publishers pass it by; what
        # it had queued stays in `running.context.subscriptions` (counted in the log).
        unread = sum(len(sub) for sub in running.context.subscriptions)
        for sub in running.context.subscriptions:
            sub.close()
        logger.error(
            "service %s %s; giving up (its subscriptions are closed, %d queued messages "
            "unhandled)",
            running.name,
            why,
            unread,
            exc_info=exc,
        )
        running.failure = exc

    async def _guard(self, running: RunningService, body: Awaitable[None]) -> None:
        """Run a service's task body; one that dies of what it does not catch is given up.

        A handler raising a ``BaseException`` that is no ``Exception`` (a library's
        ``KeyboardInterrupt``-like signal class) ended the task silently: no log until the
        task was collected, ``failure`` None, and its full "block" queue held every publisher
        of its types for good (tests/test_stranger8_runtime8.py). It is still re-raised
        (asyncio hands ``KeyboardInterrupt``/``SystemExit`` on to ``asyncio.run``).
        """
        try:
            await body
        except asyncio.CancelledError:
            self._ended(running, "was cancelled")  # shutdown closed them already, or a caller
            raise
        except GeneratorExit:
            raise  # its coroutine is being closed (the loop may be gone): touch nothing
        except BaseException as exc:
            self._give_up(running, exc, f"died of {type(exc).__name__}, which it did not catch")
            raise
        self._ended(running, "returned")

    def _ended(self, running: RunningService, how: str) -> None:
        """The service's task is over: nobody reads its subscriptions again, so close them.

        A ``run()`` that returned (a camera session whose camera went away) left its
        subscriptions open and unread: a full "block" one then held every publisher of its
        types for good, as one given up used to (tests/test_stranger9_bounds9.py). What they
        still hold stays receivable through ``running.context.subscriptions``.
        """
        subs = [sub for sub in running.context.subscriptions if not sub.closed]
        unread = sum(len(sub) for sub in subs)
        for sub in subs:
            sub.close()
        if unread and not self._stopping.is_set():  # a shutdown says what it left itself
            logger.warning(
                "service %s %s with %d queued messages unhandled; its subscriptions are "
                "closed", running.name, how, unread,
            )

    # -- handler services --------------------------------------------------------------------

    def _dispatch_table(self, running: RunningService) -> dict[type[Any], tuple[Any, bool]]:
        methods = handled_messages(type(running.instance))
        if not methods:
            raise TypeError(
                f"cannot spawn {type(running.instance).__qualname__}: it has no "
                "`async def run(self, ctx)` and handles no message\n"
                "help: subclass MessageHandler[YourMessage] with handle(), mark methods with "
                "@handles(YourMessage), or give it an async run(ctx)"
            )
        return {
            m.message: (getattr(running.instance, m.method), m.is_async) for m in methods.values()
        }

    async def _consume(
        self,
        running: RunningService,
        sub: Subscriber[Any],
        table: dict[type[Any], tuple[Any, bool]],
    ) -> None:
        """Wake once per batch, call the handler for each message, then honour back-pressure."""
        ctx = running.context
        while await sub.wait():
            batch = sub.drain()
            if ctx._held:  # held back by this very queue, which has room now
                await self._release_or_log(running, sub)
            for msg in batch:
                method, is_async = table[type(msg)]
                error: BaseException | None = None
                returned = False
                ctx._in_handler = True
                sub.began(msg)  # a no-op unless a transport awaits its settlement
                try:
                    if is_async:
                        await method(msg)
                    else:
                        method(msg)
                    returned = True
                    if ctx._held:  # what it emitted into full queues, before its next message
                        # In the try: a held emit the bus refuses (closed, a full "raise"
                        # subscriber) is this handler's failure. Outside it, it ended the
                        # service and the rest of its batch went unhandled, uncounted.
                        await ctx._release_held(self._own(sub))
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError) and cancelling():
                        raise  # the runtime (or a caller) cancels this service
                    if isinstance(exc, NEVER_A_FAILURE):
                        raise  # the process is stopping: _guard closes its subscriptions
                    # A handler's own CancelledError, or any BaseException of a library's
                    # (pytest.fail raises one), is its failure like any other: it used to end
                    # the service silently and strand everything queued for it.
                    error = exc
                    running.errors += 1
                    logger.error(
                        "service %s: %s.%s %s on %r",
                        running.name,
                        type(running.instance).__name__,
                        method.__name__,
                        "returned, but what it emitted was refused," if returned else "raised",
                        msg,
                        exc_info=exc,
                    )
                finally:
                    ctx._in_handler = False
                # Settled only now that the handler returned and its emits are published: an
                # acknowledging transport acks it, or (error) redelivers it (issue 12).
                sub.settle(msg, error)
                running.handled += 1
            await ctx._wait_for_space_except(sub)

    async def _release_or_log(self, running: RunningService, sub: Subscriber[Any]) -> None:
        """Publish what the last handler held back; a refusal is counted as its failure."""
        try:
            await running.context._release_held(self._own(sub))
        except Exception as exc:
            running.errors += 1
            logger.error("service %s: a held emit was not published", running.name,
                         exc_info=exc)

    @staticmethod
    def _own(sub: Subscriber[Any]) -> Subscriber[Any] | None:
        """The subscription a service's held emits may skip waiting for: its own, unless a
        transport awaits settlement of what it holds (those emits must be published first)."""
        return None if sub._in_hand or sub._marks else sub

    # -- shutdown ----------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Ask :meth:`wait_for_shutdown` to return and shut down (safe from signal handlers)."""
        self._stop_requested.set()

    async def wait_for_shutdown(
        self,
        *,
        timeout: float = 5.0,
        signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        """Run until SIGINT/SIGTERM (or :meth:`request_shutdown`), then shut down gracefully."""
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_shutdown)
        try:
            await self._stop_requested.wait()
            logger.info("shutdown requested; draining")
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        await self.shutdown(timeout=timeout)

    async def shutdown(self, timeout: float = 5.0, *, close_bus: bool = True) -> None:
        """Stop producers, let consumers drain what is queued, cancel after ``timeout`` s."""
        while (pending := self._shutdown_done) is not None:
            if self._shut_down:
                return
            me = asyncio.current_task()
            if me is not None:
                self._awaiting_shutdown.add(me)
            try:
                await asyncio.shield(pending)
            finally:
                self._awaiting_shutdown.discard(me)
            # Not finished: that shutdown was cut short (cancelled, or it raised). Loop:
            # take it up unless another waiter already has.
        self._shutdown_done = asyncio.get_running_loop().create_future()
        try:
            await self._shutdown(timeout, close_bus)
            self._shut_down = True
        finally:
            done = self._shutdown_done
            if not self._shut_down:
                # Cut short: the next shutdown() does it again (it used to return at once,
                # the bus open and services still running).
                self._shutdown_done = None
            done.set_result(None)

    async def _shutdown(self, timeout: float, close_bus: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stopping.set()
        self._stop_requested.set()
        for sleeper in list(self._sleepers):
            if not sleeper.done():
                sleeper.set_result(False)
        # shutdown() awaited inside a service's own task: that service is the one shutting
        # down, so it is neither waited for (it used to wait the whole timeout for itself)
        # nor cancelled (it used to cancel itself and await its own task forever).
        me = asyncio.current_task()
        if not await self._wait_quiescent(deadline, me):
            busy = [s.name for s in self.services if not self._settled(s, me)]
            logger.warning("shutdown: %s still busy after %.1fs; cancelling", busy, timeout)
            if own := self.bus.transport.own_in_flight():
                logger.warning(
                    "shutdown: %d of this process's own emits had not come back from the "
                    "stream (a work queue's other process may have taken them)", own
                )
        self._subscriptions_closed = True
        for running in self.services:
            for sub in running.context.subscriptions:
                sub.close()
        await self._finish_tasks(max(0.0, deadline - loop.time()), me)
        # The runtime owns nothing once it is down: a new runtime (or bus) may take the same
        # handler instances, as bus.detach() allows for a MonolithBus.
        for running in self.services:
            detach_emitter(running.instance, running.context)
        if close_bus:
            await self.bus.close()

    def _settled(self, running: RunningService, me: asyncio.Task[Any] | None) -> bool:
        task = running.task
        return (
            running.done
            or task is me
            or task in self._awaiting_shutdown
            or running.context._is_idle()
        )

    async def _wait_quiescent(self, deadline: float, me: asyncio.Task[Any] | None) -> bool:
        """Wait until every service has returned or sits idle in recv(); False on timeout.

        The state must hold across two loop turns: one turn lets a just-woken consumer
        take its messages before we look again.
        """
        loop = asyncio.get_running_loop()
        transport = self.bus.transport
        calm = 0
        while calm < 2:
            if loop.time() >= deadline:
                return False
            if all(self._settled(s, me) for s in self.services):
                # JetStream hands this process its own emits back from the stream: one
                # still on its way is a message some service here has yet to handle.
                if transport.own_in_flight():
                    calm = 0
                    await asyncio.sleep(0.002)
                    continue
                calm += 1
                await asyncio.sleep(0)
            else:
                calm = 0
                await asyncio.sleep(0.001)
        return True

    async def _finish_tasks(self, grace: float, me: asyncio.Task[Any] | None) -> None:
        tasks = [
            s.task
            for s in self.services
            if s.task is not me
            and s.task not in self._awaiting_shutdown
            and not s.task.done()
        ]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("shutdown: cancelled %s", sorted(t.get_name() for t in pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _sleep(self, seconds: float) -> bool:
        if self._stopping.is_set():
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        handle = loop.call_later(seconds, _resolve, fut, True)
        self._sleepers.add(fut)
        try:
            return await fut
        finally:
            handle.cancel()
            self._sleepers.discard(fut)


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)
