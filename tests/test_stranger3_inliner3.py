"""A stranger's attack on the inliner: a restaurant kitchen-display system (KDS).

Orders come in, tickets are fired to stations (grill, fry, pass), timers bump them. Each
scenario writes a small ``kds`` package, imports its routing module by the four builds (import
hook or run time, ``inline=True``/``False``; ``helpers_shapes``) and compares what the bus
did with what plain hand-written code does: each routed handler called in order, an emit from
a handler running its receivers before the handler's next line, failures gathered into an
``ExceptionGroup``. The trace holds every side effect in order, the state of every station,
each failure's type and text, and ``sys.exception()`` as each handler saw it.

The one rule under test: the inliner never runs different code than calling the handler would.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build, write_package

from mycelium_mono.handlers import attach_emitter
from mycelium_mono.messages import snake_case
from mycelium_mono.pytest_plugin import forget_modules

PACKAGE = "kds"

MESSAGES = """from mycelium_mono import message, I64, U32

@message(type_id=64901, topic="kds.order")
class OrderPlaced:
    table: U32
    dish: U32

@message(type_id=64902, topic="kds.fired")
class TicketFired:
    ticket: U32
    station: U32

@message(type_id=64903, topic="kds.bumped")
class TicketBumped:
    ticket: U32
    secs: I64
"""


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


def load(tmp_path: Path, build: Build, handlers: str, routing: str,
         extra: dict[str, str] | None = None) -> ModuleType:
    modules = {"messages": MESSAGES, "handlers": handlers, "routing": routing, **(extra or {})}
    return load_build(tmp_path, PACKAGE, modules, build)


def handlers_module() -> ModuleType:
    return sys.modules[f"{PACKAGE}.handlers"]


class HandWritten:
    """Each routed handler's method called in order, failures gathered as the bus does."""

    def __init__(self, services: dict[str, Any], routes: dict[str, list[tuple[str, str]]],
                 bus_name: str) -> None:
        self.services = services
        self.routes = routes
        self.bus_name = bus_name
        for service in services.values():
            attach_emitter(service, self.emit)

    def emit(self, msg: Any) -> None:
        name = type(msg).__name__
        failures: list[tuple[str, Exception]] = []
        for attr, method in self.routes[name]:
            try:
                getattr(self.services[attr], method)(msg)
            except Exception as exc:
                failures.append((f"{attr}.{method}", exc))
        if failures:
            names = ", ".join(where for where, _ in failures)
            raise ExceptionGroup(f"{self.bus_name}.emit_{snake_case(name)}: {len(failures)} "
                                 f"handler(s) failed ({names})", [exc for _, exc in failures])


def describe(exc: BaseException) -> Any:
    if isinstance(exc, BaseExceptionGroup):
        return ("group", exc.message.split(".", 1)[-1],
                tuple(describe(e) for e in exc.exceptions))
    return (type(exc).__name__, str(exc))


# --- a station replaced or the bus detached while an emit is running ---------------------------

SWAP_HANDLERS = """
from mycelium_mono import MessageHandler
from kds.messages import OrderPlaced

LOG = []
BUS = []


class Expo(MessageHandler[OrderPlaced]):
    '''The expediter: a VIP table gets the training fryer swapped out for the senior one.'''
    def handle(self, order):
        LOG.append(("expo", order.table))
        if order.table == 7:
            BUS[0].fry = SeniorFry()
        if order.table == 86:          # kitchen closed mid-rush: the screen is handed back
            BUS[0].detach()


class Fry(MessageHandler[OrderPlaced]):
    def __init__(self):
        self.baskets = 0

    def handle(self, order):
        LOG.append(("fry", type(self).__name__, order.dish))
        self.baskets += 1


class SeniorFry(Fry):
    def handle(self, order):
        LOG.append(("senior fry", order.dish))
        self.baskets += 2
"""

SWAP_ROUTING = """
from mycelium_mono import routing_config
from kds.messages import OrderPlaced  # noqa: F401
from kds.handlers import Expo, Fry


@routing_config(inline=INLINE)
class Pass:
    OrderPlaced = [Expo, Fry]
"""


def test_a_station_swapped_for_a_subclass_mid_emit_runs_the_subclass_method(
        tmp_path: Path, build: Build) -> None:
    """Called, the fryer slot is read when its turn comes: the SeniorFry put there by the
    expediter runs its own handle. Inlined, the emit had checked its guard once on entry
    and pasted Fry's body onto the SeniorFry: ('fry', 'SeniorFry', 3)."""
    routing = load(tmp_path, build, SWAP_HANDLERS, SWAP_ROUTING)
    module = handlers_module()
    if build.inline:
        assert inlined(routing.Pass) == {"expo", "fry"}
    bus = routing.Pass(expo=module.Expo(), fry=module.Fry())
    module.BUS.append(bus)
    bus.emit_order_placed(module.OrderPlaced(7, 3))
    assert module.LOG == [("expo", 7), ("senior fry", 3)]
    assert bus.fry.baskets == 2
    module.LOG.clear()
    bus.emit_order_placed(module.OrderPlaced(1, 4))     # from now on the guard says: call
    assert module.LOG == [("expo", 1), ("senior fry", 4)]


def test_a_bus_detached_mid_emit_runs_no_statement_of_a_later_handler(
        tmp_path: Path, build: Build) -> None:
    """Called, the next handler's method is looked up on the detached slot and the emit
    raises BusDetachedError before any of its code runs. Inlined, Fry's first line ran on
    the slot ('fry', '_DetachedSlot', 5) before its `self.baskets` raised."""
    from mycelium_mono.handlers import BusDetachedError

    routing = load(tmp_path, build, SWAP_HANDLERS, SWAP_ROUTING)
    module = handlers_module()
    bus = routing.Pass(expo=module.Expo(), fry=module.Fry())
    module.BUS.append(bus)
    with pytest.raises(BusDetachedError):
        bus.emit(module.OrderPlaced(86, 5))
    assert module.LOG == [("expo", 86)]


# --- a handler's locals die when it returns ------------------------------------------------------

LIFETIME_HANDLERS = """
import weakref
from mycelium_mono import MessageHandler
from kds.messages import OrderPlaced

LOG = []
OPEN = weakref.WeakSet()           # the tickets on the screen: alive while someone holds one


class Ticket:
    def __init__(self, table):
        self.table = table
        OPEN.add(self)
        LOG.append(("print", table))

    def __del__(self):
        LOG.append(("spike", self.table))   # the paper ticket goes on the spike


class Printer(MessageHandler[OrderPlaced]):
    def handle(self, order):
        ticket = Ticket(order.table)
        copies = [ticket, ticket]
        if order.dish == 0:
            return                       # an early return frees them too
        LOG.append(("printed", len(copies)))


class Screen(MessageHandler[OrderPlaced]):
    def handle(self, order):
        LOG.append(("screen shows", sorted(t.table for t in OPEN)))
"""

LIFETIME_ROUTING = """
from mycelium_mono import routing_config
from kds.messages import OrderPlaced  # noqa: F401
from kds.handlers import Printer, Screen


@routing_config(inline=INLINE)
class Line:
    OrderPlaced = [Printer, Screen]
"""


def test_a_handlers_locals_are_freed_before_the_next_handler_runs(
        tmp_path: Path, build: Build) -> None:
    """Called, the printer's frame (its `ticket`, its `copies`) is gone when it returns, so
    the screen sees no open ticket and the ticket is spiked first. Inlined, `h1_ticket`
    lived on in the emit's frame until the emit returned: the screen still showed it."""
    routing = load(tmp_path, build, LIFETIME_HANDLERS, LIFETIME_ROUTING)
    module = handlers_module()
    if build.inline:
        assert inlined(routing.Line) == {"printer", "screen"}
    routes = {"OrderPlaced": [("printer", "handle"), ("screen", "handle")]}
    hand = HandWritten({"printer": module.Printer(), "screen": module.Screen()}, routes, "Line")
    expected = []
    for dish in (1, 0):
        module.LOG.clear()
        hand.emit(module.OrderPlaced(4, dish))
        expected.append(list(module.LOG))
    assert expected[0] == [("print", 4), ("printed", 2), ("spike", 4), ("screen shows", [])]
    got = []
    bus = routing.Line(printer=module.Printer(), screen=module.Screen())
    for dish in (1, 0):
        module.LOG.clear()
        bus.emit_order_placed(module.OrderPlaced(4, dish))
        got.append(list(module.LOG))
    assert got == expected


# --- a station written in the routing module reads its globals as it does itself -------------

BRANCH_ROUTING = """
import os
from mycelium_mono import MessageHandler, routing_config
from kds.messages import TicketBumped
from kds.handlers import LOG

if os.environ.get("KDS_WHOLE_MINUTES_{token}"):   # never set: the builtin round is the one
    def round(x, n=None):
        return int(x)
if os.environ.get("KDS_LATE_{token}"):
    LATE_AFTER = 5


class Timer(MessageHandler[TicketBumped]):
    def handle(self, bump):
        LOG.append(("minutes", round(bump.secs / 60, 1)))
        try:
            LOG.append(("late after", LATE_AFTER))
        except NameError as exc:
            LOG.append(("no threshold", type(exc).__name__))


@routing_config(inline=INLINE)
class Pass:
    TicketBumped = [Timer]
"""


def test_a_routing_module_station_reads_a_builtin_its_module_shadows_on_one_branch_only(
        tmp_path: Path, build: Build) -> None:
    """The module binds `round` and `LATE_AFTER` only if an environment variable is set. The
    method, called, finds the builtin round and raises NameError for LATE_AFTER. Inlined, the
    body read both through the module: AttributeError: module 'kds.routing' has no attribute
    'round'."""
    routing = load(tmp_path, build, "LOG = []\n",
                   BRANCH_ROUTING.replace("{token}", "3f9c1d"))
    module = handlers_module()
    if build.inline:
        assert inlined(routing.Pass) == {"timer"}
    bus = routing.Pass(timer=routing.Timer())
    bump = sys.modules[f"{PACKAGE}.messages"].TicketBumped(12, 150)
    bus.emit_ticket_bumped(bump)
    got = list(module.LOG)
    module.LOG.clear()
    routing.Timer().handle(bump)
    assert got == module.LOG == [("minutes", 2.5), ("no threshold", "NameError")]


IN_FUNCTION_ROUTING = """
from mycelium_mono import MessageHandler, routing_config
from kds.messages import TicketBumped

LOG = []
RATE = 1


class Timer(MessageHandler[TicketBumped]):
    def handle(self, bump):
        LOG.append(RATE * bump.secs)


def make_pass():
    @routing_config(inline=True)
    class Pass:
        TicketBumped = [Timer]
    return Pass
"""


def test_a_routing_class_built_in_a_function_sees_a_global_rebound_after_the_build(
        tmp_path: Path) -> None:
    """Built in a function, the bus runs in a copy of the module's globals: the routing
    module's own station still reads them through the module, live."""
    write_package(tmp_path, PACKAGE, {"messages": MESSAGES, "routing": IN_FUNCTION_ROUTING})
    sys.path.insert(0, str(tmp_path))
    try:
        routing = importlib.import_module(f"{PACKAGE}.routing")
    finally:
        sys.path.remove(str(tmp_path))
        importlib.invalidate_caches()
    try:
        bus_cls = routing.make_pass()
        assert inlined(bus_cls) == {"timer"}
        bus = bus_cls(timer=routing.Timer())
        routing.RATE = 10
        bus.emit(sys.modules[f"{PACKAGE}.messages"].TicketBumped(1, 3))
        assert routing.LOG == [30]
    finally:
        forget_modules(PACKAGE)
