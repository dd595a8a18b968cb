"""A stranger's differential attack on monolith mode: a library-loan system.

Each scenario writes a small ``loanapp`` package, imports its routing module by the four
builds (import hook or run time, ``inline=True``/``False``; see ``helpers_shapes``) and
replays the same messages through the bus and through hand-written code calling the same
handlers in the same order (depth first, failures gathered into an ``ExceptionGroup`` as the
README describes). The log of side effects, the handlers' state and every failure (type,
text, the handler it is attributed to, its ``__context__``) must be the same.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build

from mycelium_mono.handlers import attach_emitter
from mycelium_mono.messages import snake_case
from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.errors import RoutingError

PACKAGE = "loanapp"

MESSAGES = """from mycelium_mono import message, I64, U32

@message(type_id=64701, topic="loan.checkout")
class Checkout:
    member: U32
    book: U32

@message(type_id=64702, topic="loan.returned")
class Returned:
    member: U32
    book: U32

@message(type_id=64703, topic="loan.overdue")
class Overdue:
    member: U32
    days: I64

@message(type_id=64704, topic="loan.notice")
class Notice:
    member: U32
    code: I64
"""

HANDLERS = """import abc
import contextlib
import functools
from dataclasses import dataclass, field

from mycelium_mono import MessageHandler, handles
from loanapp.messages import Checkout, Returned, Overdue, Notice

LOG = []
msg = "module-level msg"        # a global named like the emit's parameter
h1 = "module-level h1"          # ... and like the emit's handler locals
exc = "module-level exc"
COUNT = 0


@contextlib.contextmanager
def desk(name):
    LOG.append(("open", name))
    try:
        yield name.upper()
    finally:
        LOG.append(("close", name))


class Guard:
    def __init__(self, swallow):
        self.swallow = swallow
    def __enter__(self):
        LOG.append("guard-in")
        return self
    def __exit__(self, et, ev, tb):
        LOG.append(("guard-out", et.__name__ if et else None))
        return self.swallow


class Shapes(MessageHandler[Checkout]):
    '''A body with every statement kind the inliner may paste.'''
    def __init__(self):
        self.seen = []

    def handle(this, loan):
        self = this.seen                  # a local named self
        msg = loan.book                   # a local named msg
        errors = [loan.member]            # the generated code's own names as locals
        h2 = h1                           # global named h1
        returned_h1 = None
        _mycelium_builtins = len(errors)
        with desk("front") as d:
            self.append((d, msg))
        with Guard(True):
            if loan.book == 13:
                raise KeyError(loan.book)
        match loan.book:
            case 0:
                self.append("zero")
                return
            case int(n) if n > 100:
                self.append(("big", n))
            case _:
                pass
        if (w := loan.book % 7) == 3:
            self.append(("walrus", w))
        for i in range(loan.book % 4):
            if i == 2:
                break
        else:
            self.append("no-break")
        squares = [k * k for k in range(3) if k != loan.member]
        pairs = {k: msg for k in range(2)}
        total = sum(k for k in squares)
        self.append((f"{loan.member:03d}/{msg!r}", squares, pairs, total, h2, _mycelium_builtins))
        try:
            if loan.book == 7:
                1 / 0
        except ZeroDivisionError as exc:
            self.append(("caught", type(exc).__name__))
        finally:
            self.append("finally")
        del squares
        print_args = (*errors, *[msg])
        self.append(max(*print_args, 0))
        if loan.member == 99:
            return loan.member * 2
        LOG.append(("shapes", loan.member, loan.book, returned_h1))


class FinallyDesk(MessageHandler[Checkout]):
    def __init__(self):
        self.n = 0
    def handle(self, msg):
        for i in range(3):
            try:
                if i == msg.book % 3:
                    return
                self.n += 1
            finally:
                LOG.append(("fin", i))
                if msg.member == 5:
                    continue
        LOG.append(("after-loop", self.n))


class LoanPolicy(MessageHandler[Checkout]):
    '''A template: handle() asks helpers its subclasses override.'''
    limit = 2

    def __init__(self):
        self.loans = {}

    def handle(self, msg):
        if self.allowed(msg):
            self.loans[msg.member] = self.loans.get(msg.member, 0) + 1
            LOG.append((self.tag(), "lent", msg.member, self.loans[msg.member]))
            return
        LOG.append((self.tag(), "refused", msg.member))
        self.emit(Notice(msg.member, code=1))

    def allowed(self, msg):
        raise NotImplementedError

    @classmethod
    def tag(cls):
        return cls.__name__

    @staticmethod
    def rank(n):
        return n * 10


class StudentPolicy(LoanPolicy):
    def allowed(self, msg):
        return self.loans.get(msg.member, 0) < self.limit


class StaffPolicy(LoanPolicy):
    limit = 5

    def __init__(self):
        super().__init__()
        self.limit = 1            # the instance shadows the class attribute

    def allowed(self, msg):
        return self.loans.get(msg.member, 0) < self.limit


class Noticeboard(MessageHandler[Notice]):
    def __init__(self):
        self.posted = 0

    @property
    def label(self):
        return f"board#{self.posted}"

    def handle(self, note):
        self.posted += 1
        LOG.append(("notice", note.member, note.code, self.label))
        if note.code == 1 and note.member % 2:
            self.emit(Overdue(note.member, days=LoanPolicy.rank(note.member)))
        if note.code == 9:
            raise LookupError(f"no member {note.member}")


@dataclass
class FineDesk(MessageHandler[Overdue]):
    rate: int = 3
    fines: dict = field(default_factory=dict)

    def handle(self, od):
        global COUNT
        COUNT += 1
        fine = od.days * self.rate
        self.fines[od.member] = self.fines.get(od.member, 0) + fine
        LOG.append(("fine", od.member, fine, COUNT))
        if fine > 100:
            self.emit(Notice(od.member, code=9))


class ReturnsDesk:
    __slots__ = ("count",)

    def __init__(self):
        self.count = 0

    @handles(Returned)
    def back(self, r):
        self.count += 1
        LOG.append(("back", r.member, r.book, self.count))

    @handles(Overdue)
    def late(self, od):
        LOG.append(("late", od.member, od.days))
        if od.days < 0:
            raise ValueError("negative days")


class AuditMixin:
    def handle(self, msg):
        LOG.append(("audit", type(self).__name__, msg.book))
        super().handle(msg)


class ShelfBase(MessageHandler[Returned]):
    def __init__(self):
        self.shelved = []

    def handle(self, msg):
        self.shelved.append(msg.book)
        LOG.append(("shelved", self.__where(msg)))

    def __where(self, msg):              # private: mangled as _ShelfBase__where
        return f"row {msg.book % 3}"


class AuditedShelf(AuditMixin, ShelfBase):
    pass


class Lender(abc.ABC):
    '''An abstract template in the handler module: its subclasses fill in `fee`.'''
    @abc.abstractmethod
    def fee(self, msg): ...

    def handle(self, msg):
        LOG.append(("fee", type(self).__name__, self.fee(msg)))


class CardLender(Lender, MessageHandler[Returned]):
    def fee(self, msg):
        return msg.member * 2


def make_counter(label):
    class Counter(MessageHandler[Returned]):
        tag = label

        def handle(self, msg):
            self.__n = getattr(self, "_Counter__n", 0) + 1
            LOG.append((self.tag, self.__n))
    return Counter


MorningCounter = make_counter("morning")


class Borrowed(MessageHandler[Returned]):
    handle = ShelfBase.handle            # assigned from another class
    _ShelfBase__where = ShelfBase._ShelfBase__where   # what ShelfBase.handle's self.__where reads

    def __init__(self):
        self.shelved = []


def logged(fn):
    @functools.wraps(fn)
    def wrapper(self, msg):
        LOG.append(("wrapped", fn.__name__))
        return fn(self, msg)
    return wrapper


class Decorated(MessageHandler[Returned]):
    @logged
    def handle(self, msg):
        LOG.append(("decorated", msg.book))
"""

ROUTING = """from mycelium_mono import routing_config
from loanapp.messages import Checkout, Returned, Overdue, Notice  # noqa: F401
from loanapp.handlers import (
    AuditedShelf, Borrowed, CardLender, Decorated, FinallyDesk, FineDesk, MorningCounter,
    Noticeboard, ReturnsDesk, Shapes, StaffPolicy, StudentPolicy,
)


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Shapes, StudentPolicy, StaffPolicy, FinallyDesk]
    Notice = [Noticeboard]
    Overdue = [ReturnsDesk, FineDesk]
    Returned = [ReturnsDesk, AuditedShelf, CardLender, MorningCounter, Borrowed, Decorated]
"""

# What a person writes instead of the bus: message name → (handler attribute, method), in the
# routing class's order.
ROUTES: dict[str, list[tuple[str, str]]] = {
    "Checkout": [("shapes", "handle"), ("student_policy", "handle"),
                 ("staff_policy", "handle"), ("finally_desk", "handle")],
    "Notice": [("noticeboard", "handle")],
    "Overdue": [("returns_desk", "late"), ("fine_desk", "handle")],
    "Returned": [("returns_desk", "back"), ("audited_shelf", "handle"),
                 ("card_lender", "handle"), ("counter", "handle"),  # named by __name__
                 ("borrowed", "handle"), ("decorated", "handle")],
}


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


def load(tmp_path: Path, build: Build, handlers: str = HANDLERS, routing: str = ROUTING,
         extra: dict[str, str] | None = None) -> ModuleType:
    modules = {"messages": MESSAGES, "handlers": handlers, "routing": routing, **(extra or {})}
    return load_build(tmp_path, PACKAGE, modules, build)


def describe(exc: BaseException) -> Any:
    """A failure as data: type, text, the handler it is attributed to, its members."""
    where = next((n for n in getattr(exc, "__notes__", ()) if n.startswith("raised in ")), None)
    if where is not None:
        where = where.split(" by ")[-1]
    if isinstance(exc, BaseExceptionGroup):
        text = exc.message.split(".", 1)[-1]  # "LoanBus.emit_x: ..." → "emit_x: ..."
        return ("group", text, where, tuple(describe(e) for e in exc.exceptions))
    return (type(exc).__name__, str(exc), where)


class HandWritten:
    """Each routed handler's method called in order; an emit from a handler runs its
    receivers before the handler's next line; failures are gathered as the bus does."""

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
        for where, exc in failures:
            exc.add_note(f"raised in {self.bus_name} by {where}")
        if failures:
            names = ", ".join(where for where, _ in failures)
            raise ExceptionGroup(f"{self.bus_name}.emit_{snake_case(name)}: {len(failures)} "
                                 f"handler(s) failed ({names})", [exc for _, exc in failures])


def replay(module: ModuleType, target: Any, feed: Iterable[tuple[str, tuple[int, ...]]]
           ) -> list[Any]:
    log = module.LOG
    log.clear()
    module.COUNT = 0
    out: list[Any] = []
    for name, args in feed:
        msg = getattr(module, name)(*args)
        try:
            result = target.emit(msg)
        except Exception as exc:
            out.append(("raised", describe(exc)))
        else:
            out.append(("ok", result))
    return [*out, ("log", list(log))]


def state(services: dict[str, Any]) -> dict[str, Any]:
    def of(obj: Any) -> Any:
        slots = getattr(type(obj), "__slots__", ())
        values = {s: getattr(obj, s) for s in slots if hasattr(obj, s)}
        values.update({k: v for k, v in getattr(obj, "__dict__", {}).items() if k != "emit"})
        return values
    return {attr: of(service) for attr, service in services.items()}


def differential(routing: ModuleType, bus_name: str, feed: list[tuple[str, tuple[int, ...]]],
                 routes: dict[str, list[tuple[str, str]]],
                 make: Callable[[type], Any] = lambda cls: cls()) -> tuple[Any, Any]:
    """(what the bus did, what hand-written calls did) on fresh services each."""
    bus_cls = getattr(routing, bus_name)
    services_cls: dict[str, type] = bus_cls.__mycelium_services__
    handlers = sys.modules[f"{PACKAGE}.handlers"]
    on_bus = {attr: make(cls) for attr, cls in services_cls.items()}
    bus = bus_cls(**on_bus)
    got = [replay(handlers, bus, feed), state(on_bus)]
    by_hand = {attr: make(cls) for attr, cls in services_cls.items()}
    expected = [replay(handlers, HandWritten(by_hand, routes, bus_name), feed), state(by_hand)]
    return got, expected


FEED: list[tuple[str, tuple[int, ...]]] = [
    ("Checkout", (1, 0)), ("Checkout", (1, 3)), ("Checkout", (1, 7)), ("Checkout", (3, 13)),
    ("Checkout", (3, 101)), ("Checkout", (5, 10)), ("Checkout", (5, 4)), ("Checkout", (99, 2)),
    ("Checkout", (3, 5)), ("Checkout", (7, 6)), ("Checkout", (7, 8)), ("Checkout", (7, 9)),
    ("Returned", (1, 0)), ("Overdue", (2, -1)), ("Overdue", (4, 50)), ("Notice", (6, 9)),
    ("Notice", (11, 1)),
]


def test_a_loan_desk_behaves_like_hand_written_calls(tmp_path: Path, build: Build) -> None:
    routing = load(tmp_path, build)
    if build.inline:  # the bodies under test really are pasted in
        assert {"shapes", "student_policy", "staff_policy", "noticeboard",
                "returns_desk"} <= inlined(routing.LoanBus)
    got, expected = differential(routing, "LoanBus", FEED, ROUTES)
    assert got == expected


KEYWORD_HANDLERS = """
from mycelium_mono import MessageHandler
from loanapp.messages import Returned

LOG = []


class Return(MessageHandler[Returned]):   # a returns desk, named as the domain names it
    def handle(self, msg):
        LOG.append(msg.book)
"""

KEYWORD_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Returned  # noqa: F401
from loanapp.handlers import Return


@routing_config(inline=INLINE)
class LoanBus:
    Returned = [Return]
"""


def test_a_handler_class_whose_attribute_would_be_a_keyword_is_a_routing_error(
        tmp_path: Path, build: Build) -> None:
    """`class Return` would be stored as `return`: the bus could take no `return=` argument.
    It used to be a SyntaxError from inside the generator (`h1 = self.return`)."""
    with pytest.raises(RoutingError) as caught:
        load(tmp_path, build, KEYWORD_HANDLERS, KEYWORD_ROUTING)
    error = caught.value
    assert error.code == "E0011"
    assert "`return`" in str(error) and "keyword" in str(error)
    assert error.text is not None
    assert error.text[error.offset - 1 : error.end_offset - 1] == "Return"
    assert "^^^^^^" in str(error) and "rename the handler class" in str(error)


FINALLY_HANDLERS = """
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout

LOG = []


class Retry(MessageHandler[Checkout]):
    def handle(self, msg):
        for attempt in range(3):
            try:
                if attempt == msg.book:
                    return                      # cancelled by the `continue` below
            finally:
                LOG.append(("attempt", attempt))
                if msg.member:
                    continue
        LOG.append("after the loop")


class Sweep(MessageHandler[Checkout]):
    def handle(self, msg):
        while True:
            try:
                return                          # cancelled by the `break` below
            finally:
                if msg.member:
                    break
        LOG.append("swept")
"""

FINALLY_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout  # noqa: F401
from loanapp.handlers import Retry, Sweep


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Retry, Sweep]
"""


def test_a_break_or_continue_in_finally_that_cancels_a_return_is_honoured(
        tmp_path: Path, build: Build) -> None:
    """`continue` in a `finally` cancels the `return` in its `try` (Python's rule until 3.14
    warns about it). Inlined, the return had already set its flag: the code after the loop
    was skipped."""
    routing = load(tmp_path, build, FINALLY_HANDLERS, FINALLY_ROUTING)
    feed = [("Checkout", (1, 0)), ("Checkout", (1, 2)), ("Checkout", (0, 1)),
            ("Checkout", (1, 5))]
    routes = {"Checkout": [("retry", "handle"), ("sweep", "handle")]}
    got, expected = differential(routing, "LoanBus", feed, routes)
    assert got == expected
    assert "after the loop" in got[0][-1][1] and "swept" in got[0][-1][1]


LOCAL_ROUTING = """
from mycelium_mono import MessageHandler, handles, routing_config
from loanapp.messages import Checkout, Returned  # noqa: F401

LOG = []


class Counter(MessageHandler[Checkout]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += msg.book * BONUS          # BONUS is bound below the routing class
        LOG.append(("counted", self.n, describe(msg)))


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Counter]


BONUS = 3


def describe(msg):
    return f"{msg.member}:{msg.book}"
"""


def test_a_routing_module_class_reading_names_bound_below_the_bus(
        tmp_path: Path, build: Build) -> None:
    """Python reads a method's globals when it runs, so names bound later in the module work;
    the hook sees the module before any of it ran."""
    routing = load(tmp_path, build, "LOG = []\\n", LOCAL_ROUTING)
    bus = routing.LoanBus(counter=routing.Counter())
    bus.emit(routing.Checkout(2, 5))
    assert routing.LOG == [("counted", 15, "2:5")]
    assert bus.counter.n == 15


CONTEXT_HANDLERS = """
import sys

from mycelium_mono import MessageHandler
from loanapp.messages import Checkout

LOG = []


class Fines(MessageHandler[Checkout]):
    def handle(self, msg):
        raise KeyError("fines ledger offline")


class Mailer(MessageHandler[Checkout]):
    def handle(self, msg):
        try:
            {}["smtp"]
        except KeyError:
            raise ConnectionError("mail relay down")


class Shelf(MessageHandler[Checkout]):
    def handle(self, msg):
        raise ValueError(f"shelf {msg.book} unknown")
"""

CONTEXT_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout  # noqa: F401
from loanapp.handlers import Fines, Mailer, Shelf


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Fines, Mailer, Shelf]
"""


def chain(exc: BaseException | None) -> list[str]:
    out = []
    while exc is not None:
        out.append(type(exc).__name__)
        exc = exc.__context__
    return out


def test_a_later_failure_is_not_chained_to_an_earlier_handlers_failure(
        tmp_path: Path, build: Build) -> None:
    """The handlers after a failed one used to run inside the emit's `except`: each later
    failure carried the first handler's exception as its `__context__`, and the printed group
    opened with that failure and "During handling of the above exception, another exception
    occurred". Hand-written calls of independent handlers chain nothing."""
    import traceback

    routing = load(tmp_path, build, CONTEXT_HANDLERS, CONTEXT_ROUTING)
    bus = routing.LoanBus(fines=routing.Fines(), mailer=routing.Mailer(), shelf=routing.Shelf())
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit_checkout(routing.Checkout(1, 2))
    group = caught.value
    assert [chain(e) for e in group.exceptions] == [
        ["KeyError"], ["ConnectionError", "KeyError"], ["ValueError"]]
    assert group.exceptions[1].__context__ is not group.exceptions[0]
    assert group.__context__ is None or group.__suppress_context__
    printed = "".join(traceback.format_exception(group))
    assert "During handling of the above exception" in printed  # Mailer's own chain only
    assert printed.count("During handling of the above exception") == 1
    assert printed.count("KeyError: 'fines ledger offline'") == 1


FROZEN_HANDLERS = """
from dataclasses import dataclass, field

from mycelium_mono import MessageHandler
from loanapp.messages import Checkout, Notice

LOG = []


@dataclass(frozen=True)
class LoanRules(MessageHandler[Checkout]):
    '''Configuration as a frozen dataclass; its state lives in a mutable field.'''
    limit: int = 2
    loans: dict = field(default_factory=dict)

    def handle(self, msg):
        count = self.loans.get(msg.member, 0)
        if count >= self.limit:
            self.emit(Notice(msg.member, code=1))
            return
        self.loans[msg.member] = count + 1


class Board(MessageHandler[Notice]):
    def handle(self, msg):
        LOG.append(("notice", msg.member, msg.code))
"""

FROZEN_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout, Notice  # noqa: F401
from loanapp.handlers import Board, LoanRules


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [LoanRules]
    Notice = [Board]
"""


def test_a_frozen_dataclass_handler_is_given_its_emit(tmp_path: Path, build: Build) -> None:
    """`handler.emit = bus.emit` raised FrozenInstanceError from inside the bus constructor;
    a frozen dataclass is an ordinary way to write a configured service."""
    routing = load(tmp_path, build, FROZEN_HANDLERS, FROZEN_ROUTING)
    rules = routing.LoanRules(limit=1)
    bus = routing.LoanBus(loan_rules=rules, board=routing.Board())
    for book in (1, 2, 3):
        bus.emit(routing.Checkout(7, book))
    handlers = sys.modules[f"{PACKAGE}.handlers"]
    assert handlers.LOG == [("notice", 7, 1), ("notice", 7, 1)]
    assert rules == routing.LoanRules(limit=1, loans={7: 1})  # emit is no field
    bus.detach()
    other = routing.LoanBus(loan_rules=rules, board=routing.Board())
    other.emit(routing.Checkout(7, 4))
    assert handlers.LOG[-1] == ("notice", 7, 1) and len(handlers.LOG) == 3


def test_the_bus_keeps_the_classes_it_was_built_from_when_the_module_drops_or_patches_them(
        tmp_path: Path, build: Build) -> None:
    """A class statement evaluates its names once. The generated constructor read the routing
    module's globals `Desk` and `Checkout` at every construction: after `del Desk, Checkout`
    it raised NameError, and under `mock.patch("loanapp.routing.Desk")` (patch where it is
    used) it checked the service against the mock."""
    from unittest import mock

    handlers = """
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout

LOG = []


class Desk(MessageHandler[Checkout]):
    def handle(self, msg):
        LOG.append(msg.book)
"""
    routing_text = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout
from loanapp.handlers import Desk


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Desk]


def make_bus():
    return LoanBus(desk=Desk())


desk_class = Desk
del Desk, Checkout  # the module exports the bus, not what it was built from
"""
    routing = load(tmp_path, build, handlers, routing_text)
    desk_class = routing.desk_class
    message = sys.modules[f"{PACKAGE}.messages"].Checkout
    bus = routing.LoanBus(desk=desk_class())
    bus.emit(message(1, 5))
    bus.emit_checkout(message(1, 6))
    with mock.patch.object(routing, "Desk", create=True), \
            mock.patch.object(routing, "Checkout", create=True):
        patched = routing.LoanBus(desk=desk_class())
        patched.emit(message(2, 7))
        with pytest.raises(TypeError, match="must be a Desk instance"):
            routing.LoanBus(desk=object())
    assert sys.modules[f"{PACKAGE}.handlers"].LOG == [5, 6, 7]


def test_self_stays_the_service_that_received_the_message_when_the_bus_swaps_it(
        tmp_path: Path, build: Build) -> None:
    """Inlined, a body that uses `self` once read `self.counter` off the bus at that use (the
    alias `h1 = self.counter` dropped), so a handler whose work swaps the bus's service first
    counted on the new service. Called, `self` is the one the message was given to."""
    handlers = """
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout

BUS = []


def rotate_shift():
    BUS[0].counter = Counter()        # the admin desk hands the counter to the next shift


class Counter(MessageHandler[Checkout]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        if msg.book == 0:
            rotate_shift()
        self.n += 1


class Tally(MessageHandler[Checkout]):
    def __init__(self):
        self.total = 0

    def handle(self, msg):
        self.total = tally_after_rotating(msg)


def tally_after_rotating(msg):
    BUS[0].tally = Tally()
    return msg.book + 10
"""
    routing_text = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout  # noqa: F401
from loanapp.handlers import Counter, Tally


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Counter, Tally]
"""
    routing = load(tmp_path, build, handlers, routing_text)
    module = sys.modules[f"{PACKAGE}.handlers"]
    first, tally = module.Counter(), module.Tally()
    bus = routing.LoanBus(counter=first, tally=tally)
    module.BUS.append(bus)
    bus.emit(module.Checkout(1, 0))
    assert (first.n, bus.counter.n) == (1, 0)
    assert (tally.total, bus.tally.total) == (10, 0)
    second = bus.counter
    bus.emit(module.Checkout(1, 4))
    assert (second.n, bus.counter is second) == (1, True)


SHARED_HANDLERS = """
from mycelium_mono import MessageHandler, handles
from loanapp.messages import Checkout, Returned, Notice

LOG = []


class Catalogue:
    '''A plain class (no self.emit): the README lets it serve several buses.'''
    def __init__(self):
        self.out = set()

    @handles(Checkout)
    def lend(self, msg):
        self.out.add(msg.book)
        LOG.append(("lend", msg.book, sorted(self.out)))

    @handles(Returned)
    def back(self, msg):
        self.out.discard(msg.book)
        LOG.append(("back", msg.book, sorted(self.out)))


class Reminder(MessageHandler[Returned]):
    def __init__(self, branch):
        self.branch = branch

    def handle(self, msg):
        LOG.append(("remind", self.branch, msg.member))
        self.emit(Notice(msg.member, code=len(self.branch)))


class Board(MessageHandler[Notice]):
    def handle(self, msg):
        LOG.append(("board", msg.code))
"""

SHARED_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout, Notice, Returned  # noqa: F401
from loanapp.handlers import Board, Catalogue, Reminder


@routing_config(inline=INLINE)
class FrontDesk:
    Checkout = [Catalogue]
    Returned = [Catalogue, Reminder]
    Notice = [Board]


@routing_config(inline=OTHER)
class NightDrop:
    Returned = [Reminder, Catalogue]
    Notice = [Board]
"""

SECOND_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Returned, Notice  # noqa: F401
from loanapp.handlers import Board, Catalogue, Reminder


@routing_config(inline=INLINE)
class Branch:
    Returned = [Reminder, Catalogue]
    Notice = [Board]
"""


def test_one_plain_handler_serves_buses_of_one_and_of_two_modules(
        tmp_path: Path, build: Build) -> None:
    """Three buses (two routing classes in one module, inlined and called, one in another
    module) share one Catalogue; each MessageHandler belongs to one bus. The log is what
    calling the same methods in the same order by hand gives."""
    import importlib

    routing = load(tmp_path, build, SHARED_HANDLERS,
                   SHARED_ROUTING.replace("OTHER", str(not build.inline)),
                   extra={"branch": SECOND_ROUTING.replace("INLINE", str(build.inline))})
    if build.path == "hook":
        from mycelium_mono.routing.hook import install_import_hook
        with install_import_hook([PACKAGE]):
            second = importlib.import_module(f"{PACKAGE}.branch")
    else:
        second = importlib.import_module(f"{PACKAGE}.branch")
    module = sys.modules[f"{PACKAGE}.handlers"]
    catalogue = module.Catalogue()
    front = routing.FrontDesk(catalogue=catalogue, reminder=module.Reminder("front"),
                              board=module.Board())
    night = routing.NightDrop(reminder=module.Reminder("night"), catalogue=catalogue,
                              board=module.Board())
    branch = second.Branch(reminder=module.Reminder("branch"), catalogue=catalogue,
                           board=module.Board())
    Checkout, Returned = module.Checkout, module.Returned
    front.emit(Checkout(1, 10))
    front.emit(Checkout(2, 11))
    night.emit(Returned(1, 10))
    front.emit_returned(Returned(2, 11))
    branch.emit(Returned(3, 12))
    assert module.LOG == [
        ("lend", 10, [10]), ("lend", 11, [10, 11]),
        ("remind", "night", 1), ("board", 5), ("back", 10, [11]),
        ("back", 11, []), ("remind", "front", 2), ("board", 5),
        ("remind", "branch", 3), ("board", 6), ("back", 12, []),
    ]
    assert second.Branch.__mycelium_origin__ == routing.FrontDesk.__mycelium_origin__


def test_a_method_patched_after_the_bus_is_built_is_seen_as_the_readme_says(
        tmp_path: Path, build: Build) -> None:
    """README, "Why inline defaults to False": with inline=True "a method patched on a live
    handler after the bus is built is not seen"; called, it is (the call looks the method up).
    Setting the service again re-runs the guard, and the patch is then seen inlined too."""
    from unittest import mock

    handlers = """
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout

LOG = []


class Desk(MessageHandler[Checkout]):
    def handle(self, msg):
        LOG.append(("real", msg.book))
"""
    routing_text = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout  # noqa: F401
from loanapp.handlers import Desk


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Desk]
"""
    routing = load(tmp_path, build, handlers, routing_text)
    module = sys.modules[f"{PACKAGE}.handlers"]
    desk = module.Desk()
    bus = routing.LoanBus(desk=desk)
    assert ("desk" in inlined(routing.LoanBus)) == build.inline

    def fake(msg: Any) -> None:
        module.LOG.append(("patched", msg.book))

    with mock.patch.object(desk, "handle", fake):
        bus.emit(module.Checkout(1, 1))
        bus.desk = desk  # the guard runs again
        bus.emit(module.Checkout(1, 2))
    bus.desk = desk
    bus.emit(module.Checkout(1, 3))
    expected = [("real" if build.inline else "patched", 1), ("patched", 2), ("real", 3)]
    log = module.LOG
    assert log == expected



def test_an_unbound_local_is_named_as_the_handler_wrote_it(tmp_path: Path, build: Build) -> None:
    """Inlined, the handler's locals are renamed `h1_<name>`: an UnboundLocalError said
    "cannot access local variable 'h1_due'", a name nobody wrote."""
    handlers = """
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout

LOG = []


class Due(MessageHandler[Checkout]):
    def handle(self, msg):
        if msg.book > 10:
            due = msg.book * 2
        LOG.append(due)


class Helper(MessageHandler[Checkout]):
    def handle(self, msg):
        LOG.append(compute(msg.book))


def compute(n):
    if n > 10:
        h1_total = n
    return h1_total       # a callee's own local, which really is called h1_total
"""
    routing_text = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout  # noqa: F401
from loanapp.handlers import Due, Helper


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Due, Helper]
"""
    routing = load(tmp_path, build, handlers, routing_text)
    assert inlined(routing.LoanBus) == ({"due", "helper"} if build.inline else set())
    module = sys.modules[f"{PACKAGE}.handlers"]
    bus = routing.LoanBus(due=module.Due(), helper=module.Helper())
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit(module.Checkout(1, 2))
    due, helper = caught.value.exceptions
    assert type(due) is UnboundLocalError and type(helper) is UnboundLocalError
    assert "local variable 'due'" in str(due)
    assert "local variable 'h1_total'" in str(helper)



def test_a_comprehension_in_a_generator_expressions_first_iterable_is_inlined(
        tmp_path: Path, build: Build) -> None:
    """A generator expression's first iterable runs in the enclosing function, so on 3.12+
    (PEP 709) a list or dict comprehension there puts its variable among the method's
    locals. The inliner skipped every generator expression when listing those names, could
    not prove the locals and kept such a handler a call on 3.12 and 3.13 only."""
    handlers = """
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout

LOG = []


class Shelves(MessageHandler[Checkout]):
    def handle(self, msg):
        rows = sum(n for n in range(len([r for r in range(msg.book) if r % 2])))
        LOG.append((rows, max(len({k: v for k, v in enumerate("ab")}) for _ in "x")))
"""
    routing_text = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout  # noqa: F401
from loanapp.handlers import Shelves


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Shelves]
"""
    routing = load(tmp_path, build, handlers, routing_text)
    assert inlined(routing.LoanBus) == ({"shelves"} if build.inline else set()), \
        routing.LoanBus.__mycelium_notes__
    module = sys.modules[f"{PACKAGE}.handlers"]
    routing.LoanBus(shelves=module.Shelves()).emit(module.Checkout(1, 7))
    assert module.LOG == [(3, 2)]



FACTORY_HANDLERS = """
from mycelium_mono import handles
from loanapp.messages import Checkout, Returned

LOG = []


def make_counter(label, rename):
    class Counter:
        tag = label

        @handles(Returned)
        def back(self, msg):
            LOG.append((self.tag, "back", msg.book))

        @handles(Checkout)
        def out(self, msg):
            LOG.append((self.tag, "out", msg.book))

    if rename:
        Counter.__name__ = Counter.__qualname__ = f"{label.title()}Counter"
    return Counter


MorningCounter = make_counter("morning", RENAME)
EveningCounter = make_counter("evening", RENAME)
"""

FACTORY_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout, Returned  # noqa: F401
from loanapp.handlers import EveningCounter, MorningCounter


@routing_config(inline=INLINE)
class LoanBus:
    Returned = [MorningCounter]
    Checkout = [EveningCounter]
"""


def test_two_classes_from_one_factory_are_not_taken_for_one_class(
        tmp_path: Path, build: Build) -> None:
    """Two classes a factory function made share `module.qualname`, which was the handler's
    key: the second was taken for the first, and Checkout went to the MorningCounter instance
    (the bus had one `counter` slot), silently. The two share a bus attribute name, so it is
    a routing error; named apart in the factory, each receives its own messages."""
    with pytest.raises(RoutingError) as caught:
        load(tmp_path, build, FACTORY_HANDLERS.replace("RENAME", "False"), FACTORY_ROUTING)
    error = caught.value
    assert error.code == "E0011"
    assert "MorningCounter" in str(error) and "EveningCounter" in str(error)
    assert error.text is not None
    assert error.text[error.offset - 1 : error.end_offset - 1] == "EveningCounter"
    forget_modules(PACKAGE)

    routing = load(tmp_path / "renamed", build, FACTORY_HANDLERS.replace("RENAME", "True"),
                   FACTORY_ROUTING)
    module = sys.modules[f"{PACKAGE}.handlers"]
    bus = routing.LoanBus(morning_counter=module.MorningCounter(),
                          evening_counter=module.EveningCounter())
    bus.emit(module.Returned(1, 1))
    bus.emit(module.Checkout(1, 2))
    assert module.LOG == [("morning", "back", 1), ("evening", "out", 2)]



CATALOG_MESSAGES = """
from mycelium_mono import U32, message


@message(type_id=64720, topic="catalog.notice")
class Notice:                       # another module's Notice: the catalogue's, not a member's
    shelf: U32


def make_event(type_id, topic, rename):
    class Event:
        n: U32

    if rename:
        Event.__name__ = Event.__qualname__ = topic.split(".")[-1].title()
    return message(type_id=type_id, topic=topic)(Event)


Opened = make_event(64721, "desk.opened", RENAME)
Closed = make_event(64722, "desk.closed", RENAME)
"""

BOARD_HANDLERS = """
from mycelium_mono import handles
from loanapp.catalog import Closed, Opened
from loanapp.catalog import Notice as ShelfNotice
from loanapp.messages import Notice

LOG = []


class Board:
    @handles(Notice)
    def member(self, msg):
        LOG.append(("member", msg.member))

    @handles(ShelfNotice)
    def shelf(self, msg):
        LOG.append(("shelf", msg.shelf))

    @handles(Opened)
    def opened(self, msg):
        LOG.append(("opened", msg.n))

    @handles(Closed)
    def closed(self, msg):
        LOG.append(("closed", msg.n))
"""

BOARD_ROUTING = """
from mycelium_mono import routing_config
from loanapp.catalog import Closed, Opened  # noqa: F401
from loanapp.catalog import Notice as ShelfNotice  # noqa: F401
from loanapp.messages import Notice  # noqa: F401
from loanapp.handlers import Board


@routing_config(inline=INLINE)
class LoanBus:
    ROUTES
"""


@pytest.mark.parametrize("routes", [
    pytest.param(("Notice = [Board]", "ShelfNotice = [Board]"), id="two-modules"),
    pytest.param(("Opened = [Board]", "Closed = [Board]"), id="one-factory"),
])
def test_two_message_classes_of_one_name_are_a_routing_error_not_one_emit_method(
        tmp_path: Path, build: Build, routes: tuple[str, str]) -> None:
    """`loanapp.messages.Notice` and `loanapp.catalog.Notice` (imported as ShelfNotice) both
    got `emit_notice`: the second method replaced the first, and a member's Notice went to
    `board.shelf` (AttributeError inside the group). Two events a factory made were "routed
    twice" (E0006, help: merge the lines). Named apart, every one is delivered."""
    def routing_for(rename: bool) -> tuple[str, str]:
        table = "\n    ".join(routes)
        catalog = CATALOG_MESSAGES.replace("RENAME", str(rename))
        if rename:  # type ids are registered per class name for the whole process
            catalog = catalog.replace("6472", "6473")
        return BOARD_ROUTING.replace("ROUTES", table), {"catalog": catalog}

    text, extra = routing_for(False)
    with pytest.raises(RoutingError) as caught:
        load(tmp_path, build, BOARD_HANDLERS, text, extra)
    error = caught.value
    first, second = (line.split(" = ")[0] for line in routes)
    assert error.code == "E0006", str(error)
    assert first in str(error) and second in str(error)
    assert error.text is not None
    assert error.text[error.offset - 1 : error.end_offset - 1] == second
    forget_modules(PACKAGE)
    if routes[0].startswith("Notice"):
        return  # two modules' classes called Notice: one bus cannot name both emit_notice
    text, extra = routing_for(True)
    routing = load(tmp_path / "renamed", build, BOARD_HANDLERS, text, extra)
    module = sys.modules[f"{PACKAGE}.handlers"]
    bus = routing.LoanBus(board=module.Board())
    bus.emit(module.Opened(1))
    bus.emit_closed(module.Closed(2))
    assert module.LOG == [("opened", 1), ("closed", 2)]


PIPELINE_HANDLERS = """
from mycelium_mono import MessageHandler, handles
from loanapp.messages import Checkout, Notice, Overdue


class Policy(MessageHandler[Checkout]):
    '''Lends up to two books a member; a third is refused with a Notice.'''
    def __init__(self):
        self.loans, self.log = {}, []

    def handle(self, msg):
        held = self.loans.get(msg.member, 0)
        self.log.append((msg.member, msg.book, held))
        if held >= 2:
            self.emit(Notice(msg.member, code=held))
            return
        self.loans[msg.member] = held + 1


class Board(MessageHandler[Notice]):
    def __init__(self):
        self.log = []

    def handle(self, note):
        self.log.append((note.member, note.code))
        if note.member % 2:
            self.emit(Overdue(note.member, days=note.code * 7))


class Fines(MessageHandler[Overdue]):
    def __init__(self):
        self.total, self.log = 0, []

    def handle(self, od):
        self.total += od.days
        self.log.append((od.member, self.total))


class Audit:
    def __init__(self):
        self.log = []

    @handles(Checkout)
    def out(self, msg):
        self.log.append(("out", msg.member, msg.book))

    @handles(Notice)
    def noted(self, msg):
        self.log.append(("notice", msg.member))

    @handles(Overdue)
    def late(self, msg):
        self.log.append(("late", msg.member, msg.days))
"""

PIPELINE_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout, Notice, Overdue  # noqa: F401
from loanapp.handlers import Audit, Board, Fines, Policy


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [Policy, Audit]
    Notice = [Board, Audit]
    Overdue = [Audit, Fines]
"""


def test_one_producer_per_message_type_the_monolith_and_the_message_bus_agree(
        tmp_path: Path, build: Build) -> None:
    """README, "What differs between the monolith and the bus": with one producer per message
    type every subscriber sees the same messages in the same order on the asyncio MessageBus
    (queued, first in first out) as on the monolith (depth first)."""
    import asyncio

    from mycelium_mono import MessageBus, ServiceRuntime

    routing = load(tmp_path, build, PIPELINE_HANDLERS, PIPELINE_ROUTING)
    module = sys.modules[f"{PACKAGE}.handlers"]
    feed = [module.Checkout(member, book) for book in range(5) for member in (1, 2, 3)]

    def fresh() -> dict[str, Any]:
        return {"policy": module.Policy(), "audit": module.Audit(), "board": module.Board(),
                "fines": module.Fines()}

    def logs(services: dict[str, Any]) -> dict[str, Any]:
        audit = services["audit"].log
        return {**{name: s.log for name, s in services.items() if name != "audit"},
                **{f"audit-{kind}": [e for e in audit if e[0] == kind]
                   for kind in ("out", "notice", "late")},
                "fines-total": services["fines"].total}

    on_monolith = fresh()
    bus = routing.LoanBus(**on_monolith)
    for msg in feed:
        bus.emit(msg)

    async def on_the_message_bus() -> dict[str, Any]:
        services = fresh()
        runtime = ServiceRuntime(MessageBus())
        for service in services.values():
            await runtime.spawn_service(service)
        publisher = runtime.bus.publisher(module.Checkout)
        for msg in feed:
            await publisher.publish(msg)
        await runtime.shutdown()  # graceful: every queue drained first
        return services

    flexible = asyncio.run(asyncio.wait_for(on_the_message_bus(), 30))
    assert logs(on_monolith) == logs(flexible)
    assert logs(on_monolith)["fines-total"] > 0 and len(logs(on_monolith)["board"]) == 9


@pytest.mark.parametrize("name", ["Self", "Object", "Isinstance", "Getattr"])
def test_a_handler_class_named_like_a_name_the_constructor_uses_is_a_routing_error(
        tmp_path: Path, build: Build, name: str) -> None:
    """The constructor takes one argument per handler class and uses `self`, `object`,
    `isinstance` and `getattr`: `class Object` shadowed `object.__setattr__` ("expected 2
    arguments, got 3" from the routing line), `class Self` was a SyntaxError (duplicate
    argument) from inside the library."""
    handlers = f"""
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout


class {name}(MessageHandler[Checkout]):
    def handle(self, msg):
        pass
"""
    routing_text = f"""
from mycelium_mono import routing_config
from loanapp.messages import Checkout  # noqa: F401
from loanapp.handlers import {name}


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [{name}]
"""
    with pytest.raises(RoutingError) as caught:
        load(tmp_path, build, handlers, routing_text)
    error = caught.value
    assert error.code == "E0011"
    assert f"`{name.lower()}`" in str(error) and "rename the handler class" in str(error)
    assert error.text is not None
    assert error.text[error.offset - 1 : error.end_offset - 1] == name


# -- hypothesis: handler bodies a person writes, inlined, called and by hand -----------------
#
# tests/test_inline_hypothesis.py draws assignments, loops, returns and try blocks; this grammar
# adds what it leaves out: `with` (a manager that may swallow), `match`, the walrus,
# comprehensions and generator expressions reading locals, `self` and the message, f-strings,
# star-args and keyword-only calls, `del`, try/except/else/finally with returns anywhere (a
# return in finally included), `self.emit` of a downstream message whose handler may raise
# (caught by the body or not), and locals named like the generated code's own (`exc`,
# `errors`, `h2`, and with a renamed signature `def handle(this, loan)`, `self` and `msg`).

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HYP_HEADER = """
from mycelium_mono import MessageHandler
from loanapp.messages import Checkout, Notice

K = 3


def f(v):
    return v * 2 - K


def kw(*, a, b=1):
    return a - b


class Guard:
    def __init__(self, log, swallow):
        self.log = log
        self.swallow = swallow

    def __enter__(self):
        self.log.append("enter")
        return 5

    def __exit__(self, kind, value, tb):
        self.log.append(("exit", kind.__name__ if kind else None))
        return self.swallow


class Board(MessageHandler[Notice]):
    def __init__(self):
        self.log = []

    def handle(self, msg):
        self.log.append(("board", msg.code))
        if msg.code == 3:
            raise LookupError(f"code {msg.code}")
"""

HYP_LOCALS = ("a", "b", "exc", "errors", "h2")


def hyp_atoms(local_names: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from([*local_names, "S.x", "M.book", "M.member", "K", "len(S.log)",
                            "0", "1", "2", "-1", "7"])


def hyp_expressions(local_names: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.recursive(
        hyp_atoms(local_names),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "//", "%"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda e: f"f({e})"),
            inner.map(lambda e: f"abs({e}) % 9"),
            st.tuples(inner, inner).map(lambda t: f"max(*[{t[0]}, {t[1]}], 0)"),
            st.tuples(inner, inner).map(lambda t: f"kw(a={t[0]}, b={t[1]})"),
            st.tuples(inner, inner).map(
                lambda t: f"sum([v * {t[0]} for v in range(abs({t[1]}) % 4) if v != 1])"),
            inner.map(lambda e: f"sum(v + S.x for v in range(abs({e}) % 3))"),
            inner.map(lambda e: f"len({{v: M.member for v in range(abs({e}) % 3)}})"),
        ),
        max_leaves=4,
    )


@st.composite
def hyp_statement(draw: st.DrawFn, names: tuple[str, ...], depth: int, in_loop: bool
                  ) -> list[str]:
    expr = hyp_expressions(names)
    local = st.sampled_from(names)
    kinds = ["assign", "augment", "append", "fstring", "return", "raise", "walrus", "del",
             "emit", "emit"]
    if depth < 3:
        kinds += ["if", "for", "while", "try", "with", "match", "emit_caught"]
    if in_loop:
        kinds += ["break", "continue"]
    kind = draw(st.sampled_from(kinds))
    condition = f"{draw(expr)} {draw(st.sampled_from(['<', '>', '==', '!=']))} {draw(expr)}"
    nested = depth + 1

    def sub(loop: bool = in_loop) -> list[str]:
        return hyp_indent(draw(hyp_block(names, nested, loop)))

    if kind == "assign":
        return [f"{draw(local)} = {draw(expr)}"]
    if kind == "augment":
        return [f"S.x += {draw(expr)}"]
    if kind == "append":
        return [f"S.log.append({draw(expr)})"]
    if kind == "fstring":
        return [f"S.log.append(f'{{{draw(local)}}}/{{M.book!r:>4}}')"]
    if kind == "return":
        return [draw(st.sampled_from(["return", f"return {draw(expr)}"]))]
    if kind == "raise":
        return [f"if {condition}:", f"    raise ValueError({draw(expr)})"]
    if kind == "walrus":
        name = draw(local)
        return [f"if ({name} := {draw(expr)}) > 2:", f"    S.log.append(('w', {name}))"]
    if kind == "del":
        name = draw(local)
        return [f"del {name}", f"{name} = {draw(expr)}"]
    if kind == "emit":
        return [f"S.emit(Notice(M.member, code=abs({draw(expr)}) % 5))"]
    if kind == "emit_caught":
        return ["try:", f"    S.emit(Notice(M.member, code=abs({draw(expr)}) % 5))",
                "except ExceptionGroup as group:",
                "    S.log.append(('caught', [str(e) for e in group.exceptions]))"]
    if kind in ("break", "continue"):
        return [f"if {condition}:", f"    {kind}"]
    if kind == "if":
        lines = [f"if {condition}:", *sub()]
        return lines + (["else:", *sub()] if draw(st.booleans()) else [])
    if kind == "for":
        var = draw(st.sampled_from(["i", *names]))
        lines = [f"for {var} in range({draw(st.integers(0, 3))}):",
                 f"    S.log.append(('loop', {var}))", *sub(True)]
        return lines + (["else:", *sub()] if draw(st.booleans()) else [])
    if kind == "while":
        counter = f"w{depth}"
        lines = [f"{counter} = 0", f"while {counter} < {draw(st.integers(0, 3))}:",
                 f"    {counter} += 1", *sub(True)]
        return lines + (["else:", *sub()] if draw(st.booleans()) else [])
    if kind == "with":
        swallow = draw(st.booleans())
        target = draw(st.sampled_from(["", f" as {draw(local)}"]))
        return [f"with Guard(S.log, {swallow}){target}:", *sub()]
    if kind == "match":
        lines = [f"match {draw(expr)} % 3:", "    case 0:", *hyp_indent(sub()),
                 "    case 1 | -1:", *hyp_indent(sub())]
        if draw(st.booleans()):
            lines += ["    case _:", *hyp_indent(sub())]
        return lines
    # try: every clause, a return possible in each (the finally's own loops only)
    lines = ["try:", *sub(), "except ZeroDivisionError:", *sub()]
    if draw(st.booleans()):
        lines += ["else:", *sub()]
    if draw(st.booleans()):
        lines += ["finally:", "    S.log.append('finally')", *sub(False)]
    return lines


@st.composite
def hyp_block(draw: st.DrawFn, names: tuple[str, ...], depth: int, in_loop: bool
              ) -> list[str]:
    statements = draw(st.lists(hyp_statement(names, depth, in_loop), min_size=1, max_size=3))
    return [line for stmt in statements for line in stmt]


def hyp_indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


@st.composite
def hyp_handler(draw: st.DrawFn) -> tuple[bool, list[str]]:
    renamed = draw(st.booleans())  # def handle(this, loan) with locals `self` and `msg`
    names = (*HYP_LOCALS, "self", "msg") if renamed else HYP_LOCALS
    return renamed, draw(hyp_block(names, 0, False))


def hyp_class(name: str, renamed: bool, body: list[str]) -> str:
    s, m = ("this", "loan") if renamed else ("self", "msg")
    names = (*HYP_LOCALS, "self", "msg") if renamed else HYP_LOCALS
    prologue = [f"{n} = {k}" for k, n in enumerate(names)] + ["i = 0"]
    epilogue = [f"S.log.append(('end', {', '.join(names)}, i))"]
    lines = [line.replace("S.", f"{s}.").replace("M.", f"{m}.")
             for line in [*prologue, *body, *epilogue]]
    method = "\n".join("        " + line for line in lines)
    return (f"\n\nclass {name}(MessageHandler[Checkout]):\n"
            "    def __init__(self):\n        self.x = 0\n        self.log = []\n\n"
            f"    def handle({s}, {m}):\n{method}\n")


HYP_ROUTING = """
from mycelium_mono import routing_config
from loanapp.messages import Checkout, Notice  # noqa: F401
from loanapp.handlers import Board, H0, H1


@routing_config(inline=INLINE)
class LoanBus:
    Checkout = [H0, H1]
    Notice = [Board]
"""

HYP_ROUTES = {"Checkout": [("h0", "handle"), ("h1", "handle")], "Notice": [("board", "handle")]}


def hyp_observe(routing: ModuleType, target_for: Callable[[dict[str, Any]], Any],
                values: list[tuple[int, int]]) -> Any:
    services = {attr: cls() for attr, cls in routing.LoanBus.__mycelium_services__.items()}
    target = target_for(services)
    handlers = sys.modules[f"{PACKAGE}.handlers"]
    outcomes = []
    for member, book in values:
        try:
            target.emit(handlers.Checkout(member, book))
            outcomes.append(None)
        except ExceptionGroup as group:
            outcomes.append(describe(group))
    return outcomes, {a: (getattr(s, "x", None), s.log) for a, s in services.items()}


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(handlers=st.lists(hyp_handler(), min_size=2, max_size=2),
       values=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 20)), min_size=1,
                       max_size=6))
def test_hypothesis_bodies_behave_like_hand_written_calls_on_every_build(
        tmp_path_factory: pytest.TempPathFactory, handlers: list[tuple[bool, list[str]]],
        values: list[tuple[int, int]]) -> None:
    text = HYP_HEADER + "".join(hyp_class(f"H{n}", renamed, body)
                                for n, (renamed, body) in enumerate(handlers))
    root = tmp_path_factory.mktemp("hyp")
    expected = None
    try:
        for build in BUILDS:
            routing = load(root, build, text, HYP_ROUTING)
            if build.inline:  # nothing in the grammar needs a fallback
                assert inlined(routing.LoanBus) == {"h0", "h1", "board"}, \
                    routing.LoanBus.__mycelium_notes__
            got = hyp_observe(routing, lambda s, r=routing: r.LoanBus(**s), values)
            if expected is None:
                expected = hyp_observe(
                    routing, lambda s: HandWritten(s, HYP_ROUTES, "LoanBus"), values)
            assert got == expected, (build.name, text)
            forget_modules(PACKAGE)
    finally:
        forget_modules(PACKAGE)
