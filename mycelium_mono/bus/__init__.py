"""Flexible mode: the asyncio MessageBus, ServiceRuntime, hybrid backlog, latency tracking.

``latency`` imports the optional ``hdrhistogram`` only when a tracker is created.
"""

from mycelium_mono.bus.bus import (
    BusClosedError,
    BusStats,
    MessageBus,
    Publisher,
    QueueFullError,
    QueueOverflowError,
    Subscriber,
    SubscriberStats,
    SubscriptionClosed,
)
from mycelium_mono.bus.hybrid import (
    BackgroundBacklog,
    BacklogFull,
    BacklogStats,
    NoEventLoopError,
    OtherEventLoopError,
    default_backlog,
)
from mycelium_mono.bus.latency import LatencyReport, LatencyTracker
from mycelium_mono.bus.policy import OverflowPolicy
from mycelium_mono.bus.runtime import RunningService, ServiceContext, ServiceRuntime, service

__all__ = [
    "BackgroundBacklog",
    "BacklogFull",
    "BacklogStats",
    "BusClosedError",
    "BusStats",
    "LatencyReport",
    "LatencyTracker",
    "MessageBus",
    "NoEventLoopError",
    "OtherEventLoopError",
    "OverflowPolicy",
    "Publisher",
    "QueueFullError",
    "QueueOverflowError",
    "RunningService",
    "ServiceContext",
    "ServiceRuntime",
    "Subscriber",
    "SubscriberStats",
    "SubscriptionClosed",
    "default_backlog",
    "service",
]
