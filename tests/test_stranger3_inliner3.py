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
import os
import sys
from collections.abc import Callable
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


RETURN_HANDLERS = """
from mycelium_mono import MessageHandler
from kds.messages import OrderPlaced

LOG = []


class Ticket:
    def __init__(self, table):
        self.table = table

    def __del__(self):
        LOG.append(("spike", self.table))


class Rail:
    # the ticket rail: holds the ticket while a cook reads it
    def __enter__(self):
        LOG.append("on the rail")

    def __exit__(self, *exc_info):
        LOG.append("off the rail")


class Printer(MessageHandler[OrderPlaced]):
    def handle(self, order):
        spare = Ticket(-order.table)
        with Rail():
            return Ticket(order.table)       # the value is ignored by whoever called


class Screen(MessageHandler[OrderPlaced]):
    def handle(self, order):
        LOG.append("screen")
"""


def test_a_returned_value_outlives_the_with_block_and_the_locals_as_in_a_call(
        tmp_path: Path, build: Build) -> None:
    """Called, the returned ticket is held while Rail.__exit__ runs and dropped by the caller
    after the frame (its `spare`) is gone. Inlined, `return Ticket(...)` became a bare
    expression: the ticket was spiked before it left the rail."""
    routing = load(tmp_path, build, RETURN_HANDLERS, LIFETIME_ROUTING)
    module = handlers_module()
    if build.inline:
        assert inlined(routing.Line) == {"printer", "screen"}
    message = module.OrderPlaced(4, 1)
    module.Printer().handle(message)
    module.Screen().handle(message)
    expected = list(module.LOG)
    assert expected == ["on the rail", "off the rail", ("spike", -4), ("spike", 4), "screen"]
    module.LOG.clear()
    routing.Line(printer=module.Printer(), screen=module.Screen()).emit(message)
    assert expected == module.LOG


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


# --- a whole kitchen, by hand and by every build -----------------------------------------------

KITCHEN_HANDLERS = '''
import sys
from mycelium_mono import MessageHandler, handles
from kds.messages import OrderPlaced, TicketFired, TicketBumped
from kds import fryline

LOG = []
STATION = "grill"                 # fryline.py has a STATION of its own
msg = "module msg"                # globals named like the emit's locals
failure = "module failure"
h2 = "module h2"


def print(*args, **kwargs):       # shadows the builtin for this module only
    LOG.append(("print", args, tuple(sorted(kwargs.items()))))


class Elapsed:
    """A data descriptor: every read is logged."""
    def __set_name__(self, owner, name):
        self.name = "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        LOG.append(("read", self.name))
        return getattr(obj, self.name, 0)

    def __set__(self, obj, value):
        LOG.append(("write", self.name, value))
        setattr(obj, self.name, value)


class Grill(MessageHandler[OrderPlaced]):
    """Slotted, with a class attribute, a property and a descriptor."""
    __slots__ = ("tickets", "last", "_cook_secs")
    CAPACITY = 3
    cook_secs = Elapsed()

    def __init__(self):
        self.tickets = []
        self.last = None

    @property
    def full(self):
        LOG.append(("full?", len(self.tickets)))
        return len(self.tickets) >= self.CAPACITY

    def handle(self, order):
        LOG.append(("exc at grill", repr(sys.exception())))
        if self.full:
            print("grill full", order.table, sep="|")
            raise OverflowError(f"{order.table=} {STATION=}")
        self.last = order                       # keeps the message for later
        self.tickets.append(order.dish)
        self.cook_secs += 60 * order.dish
        assert order.dish != 13, f"{order.dish=!r} is not on the menu"
        len = sum(d for d in self.tickets if d != self.CAPACITY)   # a local named len
        type = [*self.tickets, *(order.table,)]                     # and one named type
        LOG.append(("grill", STATION, len, type, f"{self.cook_secs=:>5}"))
        self.emit(TicketFired(order.dish, 1))


class Expo:
    """The expediter: a plain class with @handles methods, emitting on its own bus."""
    def __init__(self, bus_ref):
        self.bus_ref = bus_ref
        self.fired = {}

    @handles(TicketFired)
    def on_fired(this, fired):
        LOG.append(("exc at pass", repr(sys.exception())))
        self = this.fired                        # a local named self
        exc = self.get(fired.ticket, 0)          # and one named exc
        self[fired.ticket] = exc + 1
        match fired:
            case TicketFired(station=1, ticket=t) if t % 2:
                this.bus_ref[0].emit(TicketBumped(t, -30))        # nested emit, same bus
            case TicketFired(ticket=0):
                return "nothing to fire"                           # ignored return value
            case TicketFired(ticket=t) if t > 9:
                raise LookupError(t)
            case _:
                pass
        LOG.append(("pass", sorted(self.items()), msg, failure, h2))

    @handles(TicketBumped)
    def on_bumped(self, bump):
        LOG.append(("exc at bump", repr(sys.exception())))
        count = 0
        while (count := count + 1) < 4:
            if bump.secs + 60 * count >= 0:
                break
        else:
            LOG.append("never caught up")
        args = (bump.ticket, count)
        kwargs = {"sep": "/"}
        print(*args, **kwargs)
        if bump.secs < -100:
            del args
            LOG.append(("deleted", args))          # UnboundLocalError, named `args`
        if bump.ticket % 3 == 0:
            self.bus_ref[0].emit(TicketBumped(bump.ticket + 1, bump.secs - 200))


class Fryer(fryline.FryBase):
    """Inherits its handle from another module, with its own STATION global."""
'''

FRYLINE = '''
from mycelium_mono import MessageHandler
from kds.messages import OrderPlaced

STATION = "fry"
LOG = []


class FryBase(MessageHandler[OrderPlaced]):
    def __init__(self):
        self.baskets = 0

    def handle(self, order):
        import_log().append(("exc at fry", repr(sys_exception())))
        try:
            if order.dish % 4 == 0:
                raise ValueError("basket stuck")
            self.baskets += 1
        except ValueError as exc:
            import_log().append(("fry caught", str(exc)))
            return
        else:
            import_log().append(("fry", STATION, self.baskets))
            return self.baskets
        finally:
            import_log().append("fry finally")


def import_log():
    from kds import handlers
    return handlers.LOG


def sys_exception():
    import sys
    return sys.exception()
'''

KITCHEN_ROUTING = """
from mycelium_mono import routing_config
from kds.messages import OrderPlaced, TicketFired, TicketBumped  # noqa: F401
from kds.handlers import Grill, Fryer, Expo


@routing_config(inline=INLINE)
class Kitchen:
    OrderPlaced = [Grill, Fryer]
    TicketFired = [Expo]
    TicketBumped = [Expo]
"""

KITCHEN_ROUTES = {"OrderPlaced": [("grill", "handle"), ("fryer", "handle")],
                  "TicketFired": [("expo", "on_fired")],
                  "TicketBumped": [("expo", "on_bumped")]}

KITCHEN_FEED = [("OrderPlaced", (1, 3)), ("OrderPlaced", (2, 4)), ("OrderPlaced", (3, 13)),
                ("TicketFired", (0, 2)), ("TicketFired", (12, 2)), ("TicketBumped", (3, -50)),
                ("TicketBumped", (5, -400)), ("OrderPlaced", (4, 1)), ("OrderPlaced", (5, 2)),
                ("OrderPlaced", (6, 6))]


def state_of(service: Any) -> Any:
    names = [*getattr(type(service), "__slots__", ()), *getattr(service, "__dict__", {})]
    return {n: repr(getattr(service, n)) for n in names
            if n not in ("emit", "bus_ref") and hasattr(service, n)}


def run_kitchen(module: ModuleType, make_target: Callable[[dict[str, Any], list[Any]], Any],
                in_except: bool) -> Any:
    """Replay the feed; ``in_except``: every emit is made inside an ``except`` block."""
    bus_ref: list[Any] = []
    services = {"grill": module.Grill(), "fryer": module.Fryer(), "expo": module.Expo(bus_ref)}
    target = make_target(services, bus_ref)
    bus_ref.append(target)
    module.LOG.clear()
    outcomes = []
    for name, args in KITCHEN_FEED:
        message = getattr(module, name)(*args)
        try:
            if in_except:
                try:
                    raise KeyError("rush hour")
                except KeyError:
                    target.emit(message)
            else:
                target.emit(message)
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(describe(exc))
    return outcomes, list(module.LOG), {a: state_of(s) for a, s in services.items()}


@pytest.mark.parametrize("in_except", [False, True], ids=["plain", "in-except"])
def test_a_kitchen_behaves_like_hand_written_calls(tmp_path: Path, build: Build,
                                                   in_except: bool) -> None:
    routing = load(tmp_path, build, KITCHEN_HANDLERS, KITCHEN_ROUTING, {"fryline": FRYLINE})
    module = handlers_module()
    if build.inline:
        notes = {(n[1], n[2]): (n[3], n[4]) for n in routing.Kitchen.__mycelium_notes__}
        assert inlined(routing.Kitchen) == {"grill", "fryer", "expo"}, notes
    got = run_kitchen(module, lambda services, _: routing.Kitchen(**services), in_except)
    expected = run_kitchen(
        module, lambda services, _: HandWritten(services, KITCHEN_ROUTES, "Kitchen"), in_except)
    assert got == expected
    outcomes, log, _ = got
    assert ("print", (3, 1), (("sep", "/"),)) in log           # the module's own print
    assert ("exc at fry", "KeyError('rush hour')" if in_except else "None") in log
    assert sum(1 for o in outcomes if o != "ok") >= 4            # the failures are exercised


# --- differential: generated station bodies -----------------------------------------------------
#
# What the earlier rounds' grammar did not draw: locals holding objects whose finaliser logs,
# sys.exception() read at every point, nested emits that fail (caught or not), a station
# replacing another (or itself) on the live bus by a subclass or a fresh instance, a lazy
# generator expression over locals kept on `self` and consumed by a later message, reads
# through a descriptor and a property, assert, star-args, f-strings with `=`, return values
# that are objects, loops with else, a suppressing `with`; and a third station from another
# module whose globals have the same names.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DIFF_COMMON = '''
import sys
from mycelium_mono import MessageHandler
from kds.messages import OrderPlaced, TicketFired

LOG = []
BUS = []
LABEL = "line"


class Ticket:
    def __init__(self, n):
        self.n = n
        LOG.append(("print", n))

    def __del__(self):
        LOG.append(("spike", self.n))


class Gauge:
    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        LOG.append(("gauge", obj.k))
        return obj.k


class Swallow:
    def __enter__(self):
        LOG.append(("enter", ex()))
        return self

    def __exit__(self, et, ev, tb):
        LOG.append(("exit", et.__name__ if et else None, ex()))
        return True


def ex():
    e = sys.exception()
    return None if e is None else type(e).__name__


def kw(*args, **kwargs):
    return sum(args) + sum(kwargs.values())


class Base(MessageHandler[OrderPlaced]):
    gauge = Gauge()

    def __init__(self):
        self.k = 0
        self.pending = None

    @property
    def load(self):
        LOG.append(("load", self.k))
        return self.k * 2


class Sink(MessageHandler[TicketFired]):
    def __init__(self):
        self.k = 0

    def handle(self, fired):
        LOG.append(("sink", fired.ticket, ex()))
        self.k += 1
        if fired.ticket % 5 == 3:
            raise KeyError(fired.ticket)
'''

DIFF_OTHER_HEAD = '''
from kds.handlers import LOG, BUS, Base, Ticket, Swallow, ex, kw, TicketFired
LABEL = "other module"
'''

DIFF_ROUTING = """
from mycelium_mono import routing_config
from kds.messages import OrderPlaced, TicketFired  # noqa: F401
from kds.handlers import H0, H1, Sink
from kds.other import H2


@routing_config(inline=INLINE)
class Line:
    OrderPlaced = [H0, H1, H2]
    TicketFired = [Sink]
"""

DIFF_ROUTES = {"OrderPlaced": [("h0", "handle"), ("h1", "handle"), ("h2", "handle")],
               "TicketFired": [("sink", "handle")]}

INT_ATOMS = ["a", "b", "S.k", "M.dish", "M.table", "1", "2", "7", "len(LOG) % 4", "S.gauge",
             "S.load"]


def diff_expr() -> st.SearchStrategy[str]:
    return st.recursive(
        st.sampled_from(INT_ATOMS),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "%"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(inner, inner).map(lambda t: f"kw(*[{t[0]}], b={t[1]})"),
            inner.map(lambda e: f"sum(x * S.k for x in range(abs({e}) % 3))"),
        ),
        max_leaves=3,
    )


@st.composite
def diff_statement(draw: st.DrawFn, depth: int, in_loop: bool) -> list[str]:
    e = diff_expr()
    kinds = ["int", "ticket", "ticket", "untie", "k", "ex", "fstring", "emit", "emit_caught",
             "swap", "lazy", "consume", "return", "raise", "assert", "del", "label", "walrus"]
    if depth < 2:
        kinds += ["if", "for", "try", "with"]
    if in_loop:
        kinds += ["break", "continue"]
    kind = draw(st.sampled_from(kinds))
    tag = draw(st.integers(0, 99))
    cond = f"{draw(e)} {draw(st.sampled_from(['<', '>', '==', '!=']))} {draw(e)}"

    def sub(loop: bool = in_loop) -> list[str]:
        return ["    " + line for line in draw(diff_block(depth + 1, loop))]

    ticket = draw(st.sampled_from(["t1", "t2"]))
    if kind == "int":
        return [f"{draw(st.sampled_from(['a', 'b']))} = {draw(e)}"]
    if kind == "ticket":
        return [f"{ticket} = Ticket({tag})"]
    if kind == "untie":
        return [f"{ticket} = {draw(st.sampled_from(['None', 't1', 't2', '[t1]']))}"]
    if kind == "k":
        return [f"S.k += {draw(e)}"]
    if kind == "ex":
        return [f"LOG.append(('ex', {tag}, ex()))"]
    if kind == "fstring":
        return ["LOG.append(f'{a=} {S.k=:>3} {M.dish=!r}')"]
    if kind == "emit":
        return [f"S.emit(TicketFired(abs({draw(e)}) % 10, {tag}))"]
    if kind == "emit_caught":
        return ["try:", f"    S.emit(TicketFired(abs({draw(e)}) % 10, {tag}))",
                "except ExceptionGroup as g:",
                "    LOG.append(('caught', len(g.exceptions), ex()))"]
    if kind == "swap":
        target = draw(st.sampled_from(["h0", "h1", "h2"]))
        cls = draw(st.sampled_from(["Sub", "Same"]))
        return [f"BUS[0].{target} = BUS[0].make_{cls.lower()}('{target}')"]
    if kind == "lazy":
        return [f"S.pending = (x + a + b for x in range({tag % 3}))"]
    if kind == "consume":
        return ["if S.pending is not None:", "    LOG.append(('pending', list(S.pending)))",
                "    S.pending = None"]
    if kind == "return":
        return [draw(st.sampled_from(["return", f"return {draw(e)}", f"return Ticket({tag})",
                                      f"return {ticket}"]))]
    if kind == "raise":
        return [f"if {cond}:", f"    raise ValueError({tag})"]
    if kind == "assert":
        return [f"assert {cond}, f'{{M.dish=}} {tag}'"]
    if kind == "del":
        return [f"del {ticket}"]
    if kind == "label":
        return ["LOG.append(('label', LABEL))"]
    if kind == "walrus":
        return [f"if (c := {draw(e)}) > {tag % 5}:", "    LOG.append(('walrus', c))"]
    if kind in ("break", "continue"):
        return [f"if {cond}:", f"    {kind}"]
    if kind == "if":
        return [f"if {cond}:", *sub(), "else:", *sub()]
    if kind == "for":
        lines = [f"for i in range({tag % 3}):", *sub(True)]
        return lines + (["else:", *sub()] if draw(st.booleans()) else [])
    if kind == "with":
        return ["with Swallow():", *sub()]
    lines = ["try:", *sub(), "except (ValueError, AssertionError) as err:",
             "    LOG.append(('in except', type(err).__name__, ex()))", *sub()]
    if draw(st.booleans()):
        lines += ["else:", *sub()]
    if draw(st.booleans()):
        lines += ["finally:", "    LOG.append(('finally', ex()))"]
    return lines


@st.composite
def diff_block(draw: st.DrawFn, depth: int, in_loop: bool) -> list[str]:
    statements = draw(st.lists(diff_statement(depth, in_loop), min_size=1, max_size=3))
    return [line for stmt in statements for line in stmt]


def diff_class(name: str, body: list[str]) -> str:
    lines = ["a = M.dish", "b = 1", "t1 = t2 = None", *body, "LOG.append(('end', a, b, S.k))"]
    method = "\n".join("        " + line.replace("S.", "self.").replace("M.", "order.")
                       for line in lines)
    return (f"\n\nclass {name}(Base):\n    def handle(self, order):\n{method}\n"
            f"\n\nclass Sub{name}({name}):\n    def handle(self, order):\n"
            f"        LOG.append(('sub {name}', order.dish, ex()))\n"
            "        self.k += 100\n")


class SwappableBus:
    """What a station replacing another does, written by hand: ``bus.h1 = Sub()`` puts it
    where the next call reads from, the newcomer emits here, the old one is freed."""

    def __init__(self, target: Any, services: dict[str, Any]) -> None:
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "services", services)

    def make_sub(self, attr: str) -> Any:
        return getattr(sys.modules[self._module(attr)], f"Sub{attr.upper()}")()

    def make_same(self, attr: str) -> Any:
        return getattr(sys.modules[self._module(attr)], attr.upper())()

    @staticmethod
    def _module(attr: str) -> str:
        return f"{PACKAGE}.other" if attr == "h2" else f"{PACKAGE}.handlers"

    def emit(self, msg: Any) -> None:
        self.target.emit(msg)


class HandWrittenLine(HandWritten):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in getattr(self, "services", {}):
            from mycelium_mono.handlers import detach_emitter
            old = self.services[name]
            attach_emitter(value, self.emit)
            self.services[name] = value
            if all(s is not old for s in self.services.values()):
                detach_emitter(old, self)
        else:
            object.__setattr__(self, name, value)


def diff_observe(handlers: ModuleType, make: Callable[[dict[str, Any]], Any],
                 feed: list[tuple[int, int]]) -> Any:
    other = sys.modules[f"{PACKAGE}.other"]
    services = {"h0": handlers.H0(), "h1": handlers.H1(), "h2": other.H2(),
                "sink": handlers.Sink()}
    target = make(services)
    handlers.BUS[:] = [SwappableBus(target, services)]
    handlers.LOG.clear()
    outcomes = []
    for table, dish in feed:
        try:
            target.emit(handlers.OrderPlaced(table, dish))
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(describe(exc))
    final = {a: (type(getattr(target, a) if hasattr(target, a) else target.services[a]).__name__,
                 (getattr(target, a) if hasattr(target, a) else target.services[a]).k)
             for a in services}
    handlers.BUS.clear()
    return outcomes, list(handlers.LOG), final


@settings(max_examples=int(os.environ.get("KDS_EXAMPLES", "40")), deadline=None,
          derandomize=not os.environ.get("KDS_EXAMPLES"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bodies=st.lists(diff_block(0, False), min_size=3, max_size=3),
       feed=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 20)), min_size=1, max_size=5))
def test_generated_station_bodies_behave_like_hand_written_calls_on_every_build(
        tmp_path_factory: pytest.TempPathFactory, bodies: list[list[str]],
        feed: list[tuple[int, int]]) -> None:
    handlers_text = DIFF_COMMON + diff_class("H0", bodies[0]) + diff_class("H1", bodies[1])
    other_text = DIFF_OTHER_HEAD + diff_class("H2", bodies[2])
    root = tmp_path_factory.mktemp("kds")
    expected = None
    try:
        for build in BUILDS:
            routing = load(root, build, handlers_text, DIFF_ROUTING, {"other": other_text})
            if build.inline:
                assert inlined(routing.Line) == {"h0", "h1", "h2", "sink"}, \
                    routing.Line.__mycelium_notes__
            handlers = handlers_module()
            got = diff_observe(handlers, lambda s, r=routing: r.Line(**s), feed)
            if expected is None:
                expected = diff_observe(
                    handlers, lambda s: HandWrittenLine(s, DIFF_ROUTES, "Line"), feed)
            assert got == expected, (build.name, handlers_text, other_text)
            forget_modules(PACKAGE)
    finally:
        forget_modules(PACKAGE)
