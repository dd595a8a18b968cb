"""Shared fixtures: a realistic handler package, imported with and without the import hook."""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from mycelium_mono.pytest_plugin import forget_modules

# An application with its own test suite, which test_wheel_fresh_venv.py runs inside a fresh
# venv holding the built wheel; collected here it would run against the checkout instead.
collect_ignore = ["wheelapp"]

MESSAGES = """
from mycelium_mono import message, U64, Address

@message(type_id=61001, topic="market_data")
class Swap:
    pool: Address
    amount: U64

@message(type_id=61002, topic="signals")
class Signal:
    amount: U64

@message(type_id=61003, topic="orders")
class Order:
    order_id: U64
"""

HANDLERS = """
from mycelium_mono import MessageHandler, handles
from PKG.messages import Swap, Signal, Order

UNLUCKY = 13


class Detector(MessageHandler[Swap]):
    def __init__(self):
        self.seen = 0

    def handle(self, swap):
        self.seen += 1
        if swap.amount > 10:
            self.emit(Signal(swap.amount))


class Risk(MessageHandler[Swap]):
    def __init__(self):
        self.seen = 0

    def handle(self, swap):
        self.seen += 1
        if swap.amount == UNLUCKY:
            raise ValueError(f"unlucky swap {swap.amount}")


class Metrics:
    def __init__(self):
        self.swaps = 0

    @handles(Swap)
    def on_swap(self, swap):
        self.swaps += 1


class Execution(MessageHandler[Signal]):
    def __init__(self):
        self.next_id = 1

    def handle(self, signal):
        self.emit(Order(self.next_id))
        self.next_id += 1


class Audit:
    def __init__(self):
        self.log = []

    @handles(Signal)
    def on_signal(self, signal):
        self.log.append(("signal", signal.amount))

    @handles(Order)
    def on_order(self, order):
        self.log.append(("order", order.order_id))


class Database:
    def __init__(self):
        self.rows = []

    @handles(Order)
    async def on_order(self, order):
        self.rows.append(order.order_id)
"""

ROUTING = """
from mycelium_mono import routing_config, route
from PKG.messages import Swap, Signal, Order
from PKG.handlers import Detector, Risk, Metrics, Execution, Audit, Database

@routing_config
class MonolithBus:
    Swap = [Detector, Risk, Metrics]
    Signal = [Audit, Execution]
    Order = [Audit]
"""

HYBRID_ROUTING = ROUTING.replace(
    "Order = [Audit]", "Order = route(sync=[Audit], background=[Database])"
)

LoadPackage = Callable[..., ModuleType]


def write_package(root: Path, package: str, modules: dict[str, str]) -> None:
    directory = root / package
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "__init__.py").write_text("")
    for name, text in modules.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(text).replace("PKG", package))


@pytest.fixture(params=["hook", "runtime"])
def load_routing(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> LoadPackage:
    """``load_routing(routing=..., handlers=..., messages=...)`` → the imported routing module.

    Runs every test twice: once rewritten by the import hook, once built by the decorator at run
    time. Both must behave the same — that is the contract of the no-hook path.
    """
    mode = request.param
    package = "mm_pkg"  # one name: message type ids are process-wide

    def load(routing: str = ROUTING, handlers: str = HANDLERS, messages: str = MESSAGES,
             **extra: str) -> ModuleType:
        forget_modules(package)
        write_package(tmp_path, package, {"messages": messages, "handlers": handlers,
                                          "routing": routing, **extra})
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
        if mode == "hook":
            hook = request.getfixturevalue("monolith_hook")
            hook(package)
        return importlib.import_module(f"{package}.routing")

    yield load  # type: ignore[misc]
    forget_modules(package)
