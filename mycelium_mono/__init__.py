"""mycelium-mono: message passing between decoupled services as cheap as a direct call.

Public names only; everything else lives in private-by-convention submodules.
"""

# Defined before the imports below: the routing pipeline reads it while they run.
__version__ = "0.1.0"

from mycelium_mono.bus import (
    BackgroundBacklog,
    LatencyTracker,
    MessageBus,
    QueueOverflowError,
    ServiceContext,
    ServiceRuntime,
    SubscriptionClosed,
    service,
)
from mycelium_mono.handlers import MessageHandler, NotAttachedError, handles
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
    MessageError,
    message,
)
from mycelium_mono.routing.declare import Route, route, routing_config
from mycelium_mono.routing.errors import RoutingError
from mycelium_mono.routing.hook import ImportHookManager, install_import_hook

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
    "Bool",
    "Bytes",
    "Bytes32",
    "ImportHookManager",
    "LatencyTracker",
    "MessageBus",
    "MessageError",
    "MessageHandler",
    "NotAttachedError",
    "QueueOverflowError",
    "Route",
    "RoutingError",
    "ServiceContext",
    "ServiceRuntime",
    "SubscriptionClosed",
    "__version__",
    "handles",
    "install_import_hook",
    "message",
    "route",
    "routing_config",
    "service",
]
