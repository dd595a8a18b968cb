"""Handlers: which method of a class receives which message type.

Two ways to say it, both plain Python that works without any bus:

- ``class RiskManager(MessageHandler[V2Swap])`` with ``def handle(self, swap)``, for one type;
- ``@handles(ArbitrageSignal)`` on any number of methods, for several.

A handler emits downstream messages with ``self.emit(msg)``. The bus that owns the instance
binds ``emit``: a :class:`MonolithBus` binds its own generic ``emit`` (straight to the right
``emit_*`` method), the flexible runtime binds a publisher. The handler's code is the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args, get_origin

__all__ = [
    "BusDetachedError",
    "EmitCycleError",
    "HandlerMethod",
    "HandlerOwnedError",
    "MessageHandler",
    "NotAttachedError",
    "attach_emitter",
    "detach_emitter",
    "generic_message",
    "generic_parameter",
    "handled_messages",
    "handles",
    "owner_description",
]

M = TypeVar("M")
F = TypeVar("F", bound=Callable[..., Any])

_HANDLES_ATTR = "__mycelium_handles__"


class NotAttachedError(RuntimeError):
    """``self.emit`` was called on a handler that no bus owns yet."""


class MessageHandler(Generic[M]):
    """Base class for services that receive messages.

    Subclass ``MessageHandler[V2Swap]`` and define ``handle(self, msg)`` to receive one type;
    subclass plain ``MessageHandler`` and mark methods with :func:`handles` to receive several.
    """

    def handle(self, msg: M, /) -> Awaitable[None] | None:
        """Receive one message: ``def handle(...) -> None`` on the sync path, or
        ``async def handle(...) -> None`` on a background route.

        The return type admits both so that either override passes ``mypy --strict`` (an
        ``async def handle`` was an ``[override]`` error against ``-> None``, issue 15.15).
        """
        raise NotImplementedError(f"{type(self).__qualname__} must define handle()")

    def __getstate__(self) -> Any:
        """Pickle without the owner's ``emit`` binding: an unpickled handler belongs to no bus
        until one is built with it (a pickled bus rebuilds itself around its services)."""
        state = super().__getstate__()
        if isinstance(state, dict) and "emit" in state:
            return {k: v for k, v in state.items() if k != "emit"}
        if isinstance(state, tuple) and state and isinstance(state[0], dict):
            return ({k: v for k, v in state[0].items() if k != "emit"}, *state[1:])
        return state

    def emit(self, msg: Any, /) -> None:
        """Send ``msg`` downstream through whichever bus owns this handler."""
        raise NotAttachedError(
            f"{type(self).__qualname__}.emit() was called while no bus owns this handler "
            "(before one did, or after its bus was detached, it was replaced on its bus "
            "(bus.<service> = ...) or its runtime shut down)\n"
            "help: pass the handler to a MonolithBus(...) or spawn it on a ServiceRuntime first"
        )


def handles(message_type: type[Any]) -> Callable[[F], F]:
    """Mark a method as the receiver of ``message_type`` (sync, or async on the background path).

    Stacked marks add up: ``@handles(A) @handles(B)`` receives both (a second mark used to
    replace the first silently, issue 11.5).

    mypy does not compare ``message_type`` with the method's parameter: ``@handles(A)`` over
    ``def on(self, m: B)`` passes ``mypy --strict``. Checking it needs the parameter split out
    of the method's type (``Callable[Concatenate[S, T, P], R]``), and mypy then solves ``T`` to
    ``A``: the marked method's parameter narrows to ``A`` (the outer ``@handles(A)`` of a stacked
    ``@handles(B)`` is refused) and its ``self``/message names are lost (``h.on(m=x)`` refused).
    A ``MessageHandler[A]`` subclass is checked: a wrong ``handle`` is an ``[override]`` error.
    """

    def mark(fn: F) -> F:
        target = getattr(fn, "__func__", fn)  # a staticmethod/classmethod holds the function
        marked: tuple[type[Any], ...] = getattr(target, _HANDLES_ATTR, ())
        if message_type not in marked:
            setattr(target, _HANDLES_ATTR, (*marked, message_type))
        return fn

    return mark


@dataclass(frozen=True)
class HandlerMethod:
    """One (message type → method) pair of a handler class."""

    message: type[Any]
    method: str
    is_async: bool


def handled_messages(cls: type[Any]) -> dict[type[Any], HandlerMethod]:
    """Every message type ``cls`` receives, and the method that receives it.

    ``@handles`` marks win over a generic ``handle``; subclasses override their bases.
    """
    found: dict[type[Any], HandlerMethod] = {}
    generic = generic_message(cls)
    if generic is not None and defines_handle(cls):
        found[generic] = HandlerMethod(generic, "handle", _is_async(cls.handle))
    # The member each name resolves to (nearest in the MRO), then their marks from the
    # farthest class to the nearest: a subclass's mark for a message beats its base's (the
    # base's used to win, while the import hook's static reading let the subclass win).
    # `object` is skipped: it marks nothing and is last in every MRO, so it is nobody's
    # nearest definition of a marked name. Only the marked members are sorted. The import
    # hook runs this for every routed class on a cache hit, where it was the largest cost.
    nearest: dict[str, tuple[int, Any]] = {}
    for depth, klass in enumerate(cls.__mro__[:-1]):
        for name, member in vars(klass).items():
            if name not in nearest:
                nearest[name] = (depth, member)
    marked = []
    for name, (depth, member) in nearest.items():
        target = getattr(member, "__func__", member)
        messages = getattr(target, _HANDLES_ATTR, None)
        if messages:
            marked.append((depth, name, target, messages))
    marked.sort(key=lambda item: -item[0])  # stable: names of one class keep their order
    for _, name, target, messages in marked:
        for message_type in messages:
            found[message_type] = HandlerMethod(message_type, name, _is_async(target))
    return found


def defines_handle(cls: type[Any]) -> bool:
    """Whether a class of ``cls``'s own hierarchy defines ``handle``. MessageHandler's own
    placeholder does not count: a ``MessageHandler[A]`` subclass without ``handle`` receives
    nothing, so routing it is an import-time error instead of a NotImplementedError at the
    first message (and the import hook reads the class statements the same way)."""
    handle = getattr(cls, "handle", None)
    return callable(handle) and handle is not MessageHandler.handle


def generic_message(cls: type[Any]) -> type[Any] | None:
    """The ``M`` of the nearest ``MessageHandler[M]`` base, if any (see generic_parameter)."""
    found = generic_parameter(cls)
    return found if isinstance(found, type) else None


def generic_parameter(cls: type[Any]) -> Any:
    """The ``M`` of the nearest ``MessageHandler[M]`` base, with the type variables that
    subscripted bases bind substituted: ``class Tap(Relay[Swap])`` over
    ``class Relay(MessageHandler[T])`` receives ``Swap``. Before, only a literal
    ``MessageHandler[Swap]`` base counted and ``Tap`` was routed nowhere ("handles: nothing").
    A ``TypeVar`` is returned when nothing binds it (one of ``cls``'s own parameters); None
    when there is no ``MessageHandler[...]`` base at all."""
    bindings: dict[type, dict[Any, Any]] = {}
    unbound: Any = None
    for klass in cls.__mro__:
        own = bindings.get(klass, {})
        for base in vars(klass).get("__orig_bases__", ()):
            origin = get_origin(base)
            args = tuple(own.get(a, a) if isinstance(a, TypeVar) else a for a in get_args(base))
            if origin is MessageHandler:
                if args and isinstance(args[0], type):
                    return args[0]
                if args and isinstance(args[0], TypeVar) and unbound is None:
                    unbound = args[0]
            elif isinstance(origin, type):
                params = getattr(origin, "__parameters__", ())
                bindings.setdefault(origin, dict(zip(params, args, strict=False)))
    return unbound


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)


class HandlerOwnedError(RuntimeError):
    """A handler instance was given to a second bus or runtime while another one owns it.

    ``self.emit`` can reach only one bus: with two owners it went to whichever bound it last,
    so emitting on bus ``a`` reached bus ``b``'s services (issue 11.4). Finding the bus that
    delivered each message would cost every emit a context switch; one owner costs nothing.
    """


class BusDetachedError(RuntimeError):
    """An emit on a bus after ``bus.detach()``: it gave its handlers away and delivers nothing.

    Before, a detached bus kept calling the handlers it had freed, and their ``self.emit``
    reached whichever bus owned them next. ``source`` is what raised it (one per bus).
    """

    def __init__(self, message: str, source: object = None) -> None:
        super().__init__(message)
        self.source = source


class EmitCycleError(RecursionError):
    """Handlers of one monolith bus emit each other's messages in a cycle that never ends.

    The monolith calls depth first, so ``A -> handler emits B -> handler emits A -> ...`` is a
    recursion: it used to end in Python's ``RecursionError`` wrapped in one ExceptionGroup per
    nested emit (hundreds; a traceback prints ten, so the RecursionError itself never showed).
    ``cycle`` is the loop as ``("emit_a", "handler.handle", "emit_b", ...)``.
    """

    def __init__(self, message: str, cycle: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.cycle = cycle


def owner_description(handler: object) -> str:
    """Who owns ``handler`` now, for messages: "Bus at 0x...", "a ServiceRuntime (...)", or
    "no bus" (free, or a plain class, which never emits and so is never owned)."""
    if not isinstance(handler, MessageHandler):
        return "no bus"
    current = getattr(handler.emit, "__self__", None)
    return "no bus" if current is None or current is handler else _describe(current)


def attach_emitter(handler: object, emit: Callable[[Any], Any]) -> None:
    """Bind ``handler.emit`` to ``emit`` if the handler emits downstream (a MessageHandler).

    ``emit``'s owner (the object it is bound to: a bus, a service context) becomes the
    handler's owner. Another owner already holding the handler is refused with
    :class:`HandlerOwnedError`, naming both; :func:`detach_emitter` (``bus.detach()``) frees it.
    """
    if not isinstance(handler, MessageHandler):
        return
    # `handler.emit`, not `vars(handler)`: on 3.11 touching __dict__ slows every later
    # attribute access on the instance (see routing/inline.py, guard_failures).
    current = getattr(handler.emit, "__self__", None)
    new = getattr(emit, "__self__", None)
    if current is not None and current is not handler and _domain(current) is not _domain(new):
        raise HandlerOwnedError(
            f"{type(handler).__qualname__} instance at 0x{id(handler):x} is already owned by "
            f"{_describe(current)}; it cannot also be given to {_describe(new)}: its "
            "self.emit would reach only one of them\n"
            "help: give each bus or runtime its own handler instance, or free it from the "
            f"first one with {_release_call(current)}"
        )
    # Past the class's own __setattr__: a frozen dataclass refuses `handler.emit = ...`.
    object.__setattr__(handler, "emit", emit)


def detach_emitter(handler: object, owner: object | None = None) -> None:
    """Undo :func:`attach_emitter` (only if ``owner`` is the handler's owner, when given)."""
    if not isinstance(handler, MessageHandler):
        return
    current = getattr(handler.emit, "__self__", None)
    if current is handler or (owner is not None and _domain(current) is not _domain(owner)):
        return
    object.__delattr__(handler, "emit")


def _domain(owner: object) -> object:
    """The owner that counts: every service context of one runtime is that runtime."""
    return getattr(owner, "_runtime", owner)


def _release_call(owner: object) -> str:
    """The call that frees a handler from ``owner``: a runtime has no ``detach()``.

    A bus the caller dropped is not collected while its handlers live (each one's
    ``self.emit`` is bound to it), so "bus.detach()" named a bus the caller could no longer
    reach (a rebuilt bus, a re-run notebook cell): the handler's own ``emit`` reaches it.
    """
    if getattr(owner, "_runtime", None) is not None:
        return "`await runtime.shutdown()`"
    return ("bus.detach() (a bus you dropped still lives in its handlers and owns them: "
            "<handler>.emit.__self__.detach() reaches it)")


def _describe(owner: object) -> str:
    runtime = getattr(owner, "_runtime", None)
    if runtime is not None:
        return f"a ServiceRuntime (service {getattr(owner, 'name', '?')!r})"
    if owner is None:
        return "a plain function"
    return f"{type(owner).__qualname__} at 0x{id(owner):x}"
