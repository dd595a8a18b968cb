"""The one interface every transport implements.

The :class:`~mycelium_mono.bus.MessageBus` delivers to its local subscribers itself and hands
each published message to its transport for remote peers. A transport hands every message it
receives from a peer back through ``deliver`` (already decoded, on the event loop thread);
the bus fans it out to local subscribers exactly as if it had been published locally.

In-process mode uses :class:`NullTransport`: there are no peers. ZeroMQ and NATS live in
their own modules and are the only places that import an engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Deliver", "NullTransport", "Transport", "TransportStats"]

Deliver = Callable[[Any], None]
"""Called by a transport with each decoded message received from a peer."""


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

    @abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Bind/connect what the transport needs and begin delivering received messages."""

    @abstractmethod
    async def publish(self, msg: Any) -> None:
        """Send ``msg`` to every peer subscribed to its type (may wait under a no-drop policy)."""

    @abstractmethod
    def publish_nowait(self, msg: Any) -> None:
        """Send without awaiting; under back-pressure the transport's policy decides."""

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

    @abstractmethod
    async def close(self) -> None:
        """Flush what the policy requires and release sockets/connections."""


class NullTransport(Transport):
    """No peers: the in-process bus."""

    def __init__(self) -> None:
        self.stats = TransportStats()

    async def start(self, deliver: Deliver) -> None:
        return None

    async def publish(self, msg: Any) -> None:
        return None

    def publish_nowait(self, msg: Any) -> None:
        return None

    def subscribe(self, message_type: type[Any]) -> None:
        return None

    async def close(self) -> None:
        return None
