"""The one interface every transport implements.

The :class:`~mycelium_mono.bus.MessageBus` delivers to its local subscribers itself and hands
each published message to its transport for remote peers. A transport hands every message it
receives from a peer to the bus's :class:`Inlet` (already decoded, on the event loop thread);
the bus fans it out to local subscribers exactly as if it had been published locally.

Issue 12: the interface used to be ``deliver(msg) -> None``, fire-and-forget, so a transport
could neither wait for queue space nor learn when the application was done with a message —
JetStream acked on enqueue (a SIGKILL lost what was queued) and peers overfilled every bound.
Delivery now carries both halves, like an asyncio/trio stream or a Kafka consumer:

- :meth:`Inlet.offer` queues the message for every local subscriber *or for none*: it returns
  ``False`` while a ``policy="block"`` subscriber of that type is full. The transport keeps
  the message, stops reading its socket / pulling its batch (so the engine's own flow control
  pushes back on the publisher), awaits :meth:`Inlet.space`, and offers it again.
- ``settle``, when given, is called exactly once, when the last local subscriber finished
  with the message: ``None`` if every one was done, else the error one of them reported
  (a handler that raised, a subscriber that refused it). A transport that acknowledges
  (JetStream) acks, naks or dead-letters from there.

In-process mode uses :class:`NullTransport`: there are no peers. ZeroMQ and NATS live in
their own modules and are the only places that import an engine.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["CallbackInlet", "Inlet", "NullTransport", "Settle", "Transport", "TransportStats"]

Settle = Callable[[BaseException | None], None]
"""Called once when every local subscriber finished with a message: ``None`` if all were
done with it, else the (last) error reported for it. A settle callable may also have a
``began()`` method: the bus calls it once, when the first handler starts on the message
(JetStream uses it to know which of its outputs that handler can have emitted)."""


class Inlet(Protocol):
    """The bus, as a transport sees it: where received messages go."""

    def offer(self, msg: Any, settle: Settle | None = None) -> bool:
        """Queue ``msg`` for every local subscriber of its type now, or for none.

        ``False``: a ``"block"`` subscriber of ``type(msg)`` is full and nothing was queued;
        await :meth:`space` and offer it again. A message no subscriber wants is taken and
        counted (``no_local_subscriber``) without a ``settle``; with one (the transport
        would acknowledge it) it is refused, and :meth:`space` waits until someone
        subscribes: nobody handled it, so it must not be acknowledged.
        """
        ...

    async def space(self, message_type: type[Any]) -> None:
        """Wait until ``message_type`` has a subscriber and every ``"block"`` one has room."""
        ...

    def wants(self, message_type: type[Any]) -> bool:
        """Whether any subscription of ``message_type`` is open now.

        Tells a refused offer's two causes apart: a full queue is room to wait for, no
        subscriber may never come (JetStream then stops keeping the message in progress).
        """
        ...


class CallbackInlet:
    """An inlet for a transport driven without a bus: calls ``fn`` with each message.

    Every offer is taken and settled as done at once (a JetStream message is acked as soon
    as ``fn`` returned); for tools, benchmarks and tests of a transport alone.
    """

    def __init__(self, fn: Callable[[Any], object]) -> None:
        self.fn = fn

    def offer(self, msg: Any, settle: Settle | None = None) -> bool:
        self.fn(msg)
        if settle is not None:
            settle(None)
        return True

    async def space(self, message_type: type[Any]) -> None:
        return None

    def wants(self, message_type: type[Any]) -> bool:
        return True  # fn takes every message


@dataclass
class TransportStats:
    """Counters every transport keeps; engines may add their own in ``extra``."""

    sent: int = 0
    received: int = 0
    dropped_malformed: int = 0
    dropped_unknown_type: int = 0
    dropped_overflow: int = 0
    sequence_gaps: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Transport(ABC):
    """Moves encoded messages between processes."""

    stats: TransportStats

    delivers_own_messages: bool = False
    """True when this process's own publishes come back to it from the engine (JetStream's
    stored copies): the bus then does not also deliver them locally. A local copy lives only
    in memory, and acknowledging the stored one as a duplicate of it lost, on a crash, every
    message the local subscribers had not finished."""

    def own_in_flight(self) -> int:
        """With ``delivers_own_messages``: how many of this process's own publishes its own
        subscribers are still to receive (a graceful shutdown waits for them)."""
        return 0

    @abstractmethod
    async def start(self, inlet: Inlet) -> None:
        """Bind/connect what the transport needs and begin offering received messages."""

    @abstractmethod
    async def publish(self, msg: Any) -> None:
        """Send ``msg`` to every peer subscribed to its type (may wait under a no-drop policy)."""

    @abstractmethod
    def publish_nowait(self, msg: Any) -> None:
        """Send without awaiting; under back-pressure the transport's policy decides."""

    def full(self) -> bool:
        """True while ``publish_nowait`` would queue past this transport's own bound.

        The bus then refuses ``publish_nowait`` with ``QueueFullError`` before delivering
        anywhere (issue 12: a lossless ZeroMQ backlog grew without limit). Default: never.
        """
        return False

    async def wait_for_space(self) -> None:
        """Wait until :meth:`full` is False (its sender drains the queue on this loop)."""
        while self.full():
            await asyncio.sleep(0.001)

    @abstractmethod
    def subscribe(self, message_type: type[Any]) -> None:
        """Declare interest in ``message_type`` from peers (idempotent, does not wait).

        ``MessageBus.subscribe`` is synchronous, so this is too: register the interest now
        where the engine allows it, or schedule it and make :meth:`ready` wait for it.
        """

    async def ready(self) -> None:
        """Wait until every interest declared so far is in effect at the engine."""
        return None

    async def wait_for_subscribers(
        self, n: int, message_type: type[Any], timeout: float
    ) -> None:
        """Wait until ``n`` peers subscribed to ``message_type`` (where the engine can tell)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot count the peers subscribed to "
            f"{message_type.__name__}"
        )

    async def connect_to(self, address: str) -> None:
        """Connect to a peer's address (transports without peers refuse)."""
        raise NotImplementedError(f"{type(self).__name__} has no peers to connect to")

    async def disconnect_from(self, address: str) -> None:
        """Forget a peer given to :meth:`connect_to` (transports without peers refuse)."""
        raise NotImplementedError(f"{type(self).__name__} has no peers to disconnect from")

    @abstractmethod
    async def close(self) -> None:
        """Flush what the policy requires and release sockets/connections."""


class NullTransport(Transport):
    """No peers: the in-process bus."""

    def __init__(self) -> None:
        self.stats = TransportStats()

    async def start(self, inlet: Inlet) -> None:
        return None

    async def publish(self, msg: Any) -> None:
        return None

    def publish_nowait(self, msg: Any) -> None:
        return None

    def subscribe(self, message_type: type[Any]) -> None:
        return None

    async def close(self) -> None:
        return None
