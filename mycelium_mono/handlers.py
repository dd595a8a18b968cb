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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_args, get_origin

__all__ = [
    "HandlerMethod",
    "MessageHandler",
    "NotAttachedError",
    "attach_emitter",
    "handled_messages",
    "handles",
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

    def handle(self, msg: M, /) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must define handle()")

    def emit(self, msg: Any, /) -> None:
        """Send ``msg`` downstream through whichever bus owns this handler."""
        raise NotAttachedError(
            f"{type(self).__qualname__}.emit() was called before any bus owns this handler\n"
            "help: pass the handler to a MonolithBus(...) or spawn it on a ServiceRuntime first"
        )


def handles(message_type: type[Any]) -> Callable[[F], F]:
    """Mark a method as the receiver of ``message_type`` (sync, or async on the background path).

    Stacked marks add up: ``@handles(A) @handles(B)`` receives both (a second mark used to
    replace the first silently, issue 11.5).
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
    generic = _generic_message(cls)
    if generic is not None and callable(getattr(cls, "handle", None)):
        found[generic] = HandlerMethod(generic, "handle", _is_async(cls.handle))
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            target = getattr(member, "__func__", member)
            for message_type in getattr(target, _HANDLES_ATTR, ()):
                found[message_type] = HandlerMethod(message_type, name, _is_async(target))
    return found


def _generic_message(cls: type[Any]) -> type[Any] | None:
    """The ``M`` of the nearest ``MessageHandler[M]`` base, if any."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if get_origin(base) is MessageHandler:
                args = get_args(base)
                if args and isinstance(args[0], type):
                    return args[0]
    return None


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)


def attach_emitter(handler: object, emit: Callable[[Any], Any]) -> None:
    """Bind ``handler.emit`` to ``emit`` if the handler emits downstream (a MessageHandler)."""
    if isinstance(handler, MessageHandler):
        handler.emit = emit  # type: ignore[method-assign]
