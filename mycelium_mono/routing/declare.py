"""What users write in a routing module: ``@routing_config`` and ``route(...)``.

With the import hook installed, the hook rewrites the decorated class before the module runs,
so these functions never see it. Without the hook, :func:`routing_config` builds the very
same bus at run time (no cache): pickling, ``spawn`` children and frozen apps keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

__all__ = ["Route", "route", "routing_config"]

C = TypeVar("C", bound=type)


@dataclass(frozen=True)
class Route:
    """A split route: ``sync`` handlers run inline, ``background`` ones on the event loop."""

    sync: tuple[type, ...]
    background: tuple[type, ...]
    malformed: bool = False


if TYPE_CHECKING:
    # What a checker sees: keywords only, so `route(Audit)` or `route(synch=[...])` is a mypy
    # error on its line. It passed before (`*args: Any, **unknown: Any` accept anything) and
    # failed only at import time, as a RoutingError E0007 from the routing checker.
    def route(*, sync: Sequence[type] = (), background: Sequence[type] = ()) -> Route: ...

else:
    # What runs: takes anything, so the routing checker can report a mistake with a caret.
    def route(*args: Any, sync: Sequence[type] = (), background: Sequence[type] = (),
              **unknown: Any) -> Route:
        """Split one message type's handlers into a sync critical path and a background path.

        The generated bus gets ``emit_<m>_sync(msg)`` (inline calls), ``async emit_<m>_async(msg)``
        (the background handlers, sync or ``async def``) and ``emit_<m>(msg)``, which runs the sync
        path and queues the background path on the bus's backlog.
        """
        # Never raise here: this runs in the class body, before the decorator can report the
        # mistake as a RoutingError with a caret. The checker validates what was given.
        return Route(_as_tuple(sync), _as_tuple(background), malformed=bool(args or unknown))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


@overload
def routing_config(cls: C, /) -> C: ...
@overload
def routing_config(*, inline: bool | None = None) -> Callable[[C], C]: ...
def routing_config(cls: Any = None, /, *args: Any, inline: Any = None, **unknown: Any) -> Any:
    """Turn a routing class into a generated ``MonolithBus``.

    The class body maps message class names to handler class lists::

        @routing_config
        class MonolithBus:
            V2Swap = [ArbitrageDetector, RiskManager, MetricsCollector]
            OrderExecution = route(sync=[AuditLogger], background=[DatabaseLogger])

    ``inline=True`` inlines handler bodies where that keeps their meaning; ``None`` takes the
    library default.
    """
    # The frame that runs the class statement: names in the routing table mean what they
    # mean there (a routing class inside a test function routes that function's classes).
    frame = sys._getframe(1)
    # Taken now, not when the class body has run: the line of this decorator tells two
    # classes of the same name in one file apart (issue 11.7).
    line = frame.f_lineno
    # Bad options are not a TypeError here: they are reported like every other routing
    # mistake (E0009, with a caret), by the same checker the import hook uses.
    bad_options = bool(args or unknown) or (cls is not None and not isinstance(cls, type))

    def build(target: C) -> C:
        from mycelium_mono.routing.runtime_build import build_at_runtime

        return build_at_runtime(  # type: ignore[return-value]
            target, inline=inline, frame=frame, line=line, bad_options=bad_options
        )

    if cls is None or bad_options:
        return build
    return build(cls)
