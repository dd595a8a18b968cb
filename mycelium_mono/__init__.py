"""mycelium-mono: message passing between decoupled services as cheap as a direct call.

Public names only; everything else lives in private-by-convention submodules.

The flexible-mode names (``MessageBus``, ``ServiceRuntime``, ...) and the import hook are
loaded on first use (PEP 562): a monolith-only program never imports asyncio through us,
which keeps ``import mycelium_mono`` to a few milliseconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Defined before the imports below: the routing pipeline reads it while they run.
__version__ = "0.1.0"

from mycelium_mono.handlers import HandlerOwnedError, MessageHandler, NotAttachedError, handles
from mycelium_mono.messages import (
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    U128,
    U256,
    Address,
    Bool,
    Bytes,
    Bytes32,
    Message,
    MessageError,
    Text,
    message,
)
from mycelium_mono.routing.declare import Route, route, routing_config
from mycelium_mono.routing.errors import RoutingError

if TYPE_CHECKING:
    from mycelium_mono import cli as cli  # loaded on first use, see _LAZY_SUBMODULES
    from mycelium_mono.bus import (
        BackgroundBacklog,
        BacklogFull,
        LatencyTracker,
        MessageBus,
        QueueFullError,
        QueueOverflowError,
        ServiceContext,
        ServiceRuntime,
        SubscriptionClosed,
        service,
    )
    from mycelium_mono.routing.hook import (
        ImportHookManager,
        MyceliumHookWarning,
        install_import_hook,
    )

_LAZY = {
    "BackgroundBacklog": "mycelium_mono.bus",
    "BacklogFull": "mycelium_mono.bus.hybrid",
    "LatencyTracker": "mycelium_mono.bus",
    "MessageBus": "mycelium_mono.bus",
    "QueueFullError": "mycelium_mono.bus",
    "QueueOverflowError": "mycelium_mono.bus",
    "ServiceContext": "mycelium_mono.bus",
    "ServiceRuntime": "mycelium_mono.bus",
    "SubscriptionClosed": "mycelium_mono.bus",
    "service": "mycelium_mono.bus",
    "ImportHookManager": "mycelium_mono.routing.hook",
    "install_import_hook": "mycelium_mono.routing.hook",
    "MyceliumHookWarning": "mycelium_mono.routing.hook",
}


_LAZY_SUBMODULES = frozenset({"cli"})
"""``mycelium_mono.cli.doctor.report(...)`` after a bare ``import mycelium_mono`` (issue 15)."""


def _load_lazily(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        # Importing the submodule binds it as an attribute of this package.
        return importlib.import_module(f"{__name__}.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mycelium_mono' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


# Bound at run time only: a type checker that sees a module `__getattr__` returning Any takes
# every name as defined, so `from mycelium_mono import MesageBus` (a typo) passed mypy --strict
# as Any. The lazy names are declared for checkers by the TYPE_CHECKING imports above instead.
if not TYPE_CHECKING:
    __getattr__ = _load_lazily


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "F32",
    "F64",
    "I8",
    "I16",
    "I32",
    "I64",
    "U8",
    "U16",
    "U32",
    "U64",
    "U128",
    "U256",
    "Address",
    "BackgroundBacklog",
    "BacklogFull",
    "Bool",
    "Bytes",
    "Bytes32",
    "HandlerOwnedError",
    "ImportHookManager",
    "LatencyTracker",
    "Message",
    "MessageBus",
    "MessageError",
    "MessageHandler",
    "MyceliumHookWarning",
    "NotAttachedError",
    "QueueFullError",
    "QueueOverflowError",
    "Route",
    "RoutingError",
    "ServiceContext",
    "ServiceRuntime",
    "SubscriptionClosed",
    "Text",
    "__version__",
    "handles",
    "install_import_hook",
    "message",
    "route",
    "routing_config",
    "service",
]
