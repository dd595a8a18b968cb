"""The flexible-mode names Bandit uses from mycelium-mono, in one place.

They are public names of ``mycelium_mono``; until that package's ``__init__`` exports them
(reported to the lead), they are taken from the modules that define them.
"""

from __future__ import annotations

try:
    from mycelium_mono import LatencyTracker, MessageBus, ServiceRuntime  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only while the exports are pending
    from mycelium_mono.bus.bus import MessageBus
    from mycelium_mono.bus.latency import LatencyTracker
    from mycelium_mono.bus.runtime import ServiceRuntime

__all__ = ["LatencyTracker", "MessageBus", "ServiceRuntime"]
