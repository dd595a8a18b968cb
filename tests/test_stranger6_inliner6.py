"""A stranger's attack on the inliner: a hospital triage board.

Patients arrive (``Arrival``), and every station on the board handles each one: intake, a
nurse, a porter, the chart. Each scenario writes a small ``triage`` package, imports its
routing module by the four builds (import hook or run time, ``inline=True``/``False``;
``helpers_shapes``) and compares what the bus did with plain hand-written calls: each routed
handler called in order, failures gathered into an ``ExceptionGroup``, a handler's emit
running its receivers before the handler's next line. The trace holds every side effect in
order, each station's state, and each failure's type and text.

The rule under test: the inliner never runs different code than calling the handler would.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium_mono.handlers import attach_emitter
from mycelium_mono.messages import snake_case
from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing import inline

PACKAGE = "triage"

MESSAGES = """from mycelium_mono import message, I64

@message(type_id=64961, topic="triage.arrival")
class Arrival:
    acuity: I64
"""


def load(root: Path, build: Build, handlers: str, routing: str) -> tuple[ModuleType, Any]:
    import sys

    modules = {"messages": MESSAGES, "handlers": handlers, "routing": routing}
    routing_module = load_build(root, PACKAGE, modules, build)
    return routing_module, sys.modules[f"{PACKAGE}.handlers"]


class HandWritten:
    """Each routed handler's method called in order, failures gathered as the bus does."""

    def __init__(self, services: dict[str, Any], order: list[str], bus_name: str) -> None:
        self.services = services
        self.order = order
        self.bus_name = bus_name
        for service in services.values():
            attach_emitter(service, self.emit)

    def emit(self, msg: Any) -> None:
        failures: list[tuple[str, Exception]] = []
        for attr in self.order:
            try:
                self.services[attr].handle(msg)
            except Exception as exc:
                failures.append((f"{attr}.handle", exc))
        if failures:
            names = ", ".join(where for where, _ in failures)
            raise ExceptionGroup(
                f"{self.bus_name}.emit_{snake_case(type(msg).__name__)}: {len(failures)} "
                f"handler(s) failed ({names})", [exc for _, exc in failures])


def describe(exc: BaseException) -> Any:
    if isinstance(exc, BaseExceptionGroup):
        return ("group", exc.message, tuple(describe(e) for e in exc.exceptions))
    return (type(exc).__name__, str(exc))


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


# --- a service deleted from a built bus ------------------------------------------------------

BOARD_HANDLERS = """
from mycelium_mono import MessageHandler
from triage.messages import Arrival

LOG = []


class Intake(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("intake", patient.acuity))


class Nurse(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))


class Porter(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("porter", patient.acuity))
"""

BOARD_ROUTING = """
from mycelium_mono import routing_config
from triage.messages import Arrival  # noqa: F401
from triage.handlers import Intake, Nurse, Porter


@routing_config(inline=INLINE)
class Board:
    Arrival = [Intake, Nurse, Porter]
"""


@pytest.mark.parametrize("reported", ["group", "on_error"])
def test_a_service_deleted_from_a_built_bus_fails_as_that_handler_on_every_build(
        tmp_path: Path, build: Build, reported: str) -> None:
    """``del board.nurse``: called, the nurse's turn reads the empty slot inside its ``try``,
    so it is the nurse's failure (in the group, or to ``on_error``) and the porter still runs.
    Inlined, the guard was not run again on ``del``: the emit read ``h2 = self.nurse``
    outside every ``try``, a bare AttributeError left it and the porter never ran."""
    routing, module = load(tmp_path, build, BOARD_HANDLERS, BOARD_ROUTING)
    if build.inline:
        assert inlined(routing.Board) == {"intake", "nurse", "porter"}
    seen: list[Any] = []

    def on_error(exc: Exception, where: str, msg: Any) -> None:
        seen.append((where, describe(exc)))

    kwargs: dict[str, Any] = {"on_error": on_error} if reported == "on_error" else {}
    bus = routing.Board(intake=module.Intake(), nurse=module.Nurse(), porter=module.Porter(),
                        **kwargs)
    bus.emit(module.Arrival(2))
    nurse = bus.nurse
    del bus.nurse
    # Freed, as a replaced service is: another board may take her.
    other = routing.Board(intake=module.Intake(), nurse=nurse, porter=module.Porter())
    other.detach()
    with pytest.raises(AttributeError) as empty:  # what `self.nurse.handle(msg)` raises now
        bus.nurse.handle  # noqa: B018
    missing = ("AttributeError", str(empty.value))
    assert "has no attribute 'nurse'" in missing[1]
    if reported == "group":
        with pytest.raises(ExceptionGroup) as caught:
            bus.emit_arrival(module.Arrival(3))
        assert describe(caught.value) == (
            "group", "Board.emit_arrival: 1 handler(s) failed (nurse.handle)", (missing,))
    else:
        bus.emit_arrival(module.Arrival(3))
        assert seen == [("nurse.handle", missing)]
    assert module.LOG == [("intake", 2), ("nurse", 2), ("porter", 2),
                          ("intake", 3), ("porter", 3)]
    bus.nurse = module.Nurse()  # put back: the inlined path is taken again where it was
    if build.inline:
        assert bus._mycelium_inline_ok
    module.LOG.clear()
    bus.emit(module.Arrival(4))
    assert module.LOG == [("intake", 4), ("nurse", 4), ("porter", 4)]


# --- a warning the handler raises is its module's ----------------------------------------------

WARN_HANDLERS = """
import warnings
from warnings import warn
from mycelium_mono import MessageHandler
from triage.messages import Arrival

LOG = []


class Intake(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("intake", patient.acuity))
        warnings.warn("paper intake form", DeprecationWarning)
        LOG.append(("intake", "filed"))


class Nurse(MessageHandler[Arrival]):
    def handle(self, patient):
        if patient.acuity > 3:
            warn("acuity over 3 on the legacy scale", UserWarning)
        LOG.append(("nurse", patient.acuity))


class Porter(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("porter", patient.acuity))
"""


def test_a_warning_filter_on_the_handler_module_applies_on_every_build(
        tmp_path: Path, build: Build) -> None:
    """``filterwarnings("error", module="triage.handlers")`` (pytest's
    ``error::DeprecationWarning:triage.handlers``): called, the handler's warning is raised
    in it and the emit fails with it. Inlined, ``warnings.warn`` saw the emit's frame: the
    warning belonged to ``triage.routing``, the filter never matched, and the intake went
    on to file the form."""
    routing, module = load(tmp_path, build, WARN_HANDLERS, BOARD_ROUTING)
    if build.inline:
        assert inlined(routing.Board) == {"porter"}
        reasons = {attr: reason for _, attr, _, mode, reason in routing.Board.__mycelium_notes__}
        assert "warn()" in reasons["intake"] and "warn()" in reasons["nurse"]
    bus = routing.Board(intake=module.Intake(), nurse=module.Nurse(), porter=module.Porter())
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        warnings.filterwarnings("error", module=r"triage\.handlers")
        with pytest.raises(ExceptionGroup) as caught:
            bus.emit(module.Arrival(5))
    assert describe(caught.value) == (
        "group", "Board.emit_arrival: 2 handler(s) failed (intake.handle, nurse.handle)",
        (("DeprecationWarning", "paper intake form"),
         ("UserWarning", "acuity over 3 on the legacy scale")))
    assert recorded == []
    assert module.LOG == [("intake", 5), ("porter", 5)]
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        bus.emit(module.Arrival(4))
    assert [(Path(w.filename).name, str(w.message)) for w in recorded] == [
        ("handlers.py", "paper intake form"), ("handlers.py", "acuity over 3 on the legacy scale")]


# --- a station that changes its own behaviour (the state pattern) ---------------------------

STATE_HANDLERS = """
from mycelium_mono import MessageHandler
from triage.messages import Arrival

LOG = []


class Intake(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("intake", patient.acuity))
        if patient.acuity > 2:
            self.__class__ = BusyIntake       # the next patient meets the busy desk


class BusyIntake(Intake):
    def handle(self, patient):
        LOG.append(("intake busy", patient.acuity))


class Nurse(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))
        if patient.acuity > 2:
            self.handle = self.on_break


    def on_break(self, patient):
        LOG.append(("nurse on break", patient.acuity))


class Porter(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("porter", patient.acuity))
        if patient.acuity > 3:
            setattr(self, "handle", self.off_shift)

    def off_shift(self, patient):
        LOG.append(("porter off shift", patient.acuity))
"""


def test_a_station_that_swaps_its_own_class_or_method_is_seen_by_the_next_emit(
        tmp_path: Path, build: Build) -> None:
    """``self.__class__ = BusyIntake`` / ``self.handle = self.on_break``: called, the next
    patient is handled by the new method. Inlined, the guard (run when the bus is built)
    never looked again and the next emit pasted the old body onto the busy desk."""
    routing, module = load(tmp_path, build, STATE_HANDLERS, BOARD_ROUTING)
    if build.inline:
        reasons = {attr: reason for _, attr, _, mode, reason in routing.Board.__mycelium_notes__}
        assert "__class__" in reasons["intake"] and ".handle" in reasons["nurse"]
        assert "sets .handle" in reasons["porter"]
    bus = routing.Board(intake=module.Intake(), nurse=module.Nurse(), porter=module.Porter())
    for acuity in (1, 3, 4, 5):
        bus.emit(module.Arrival(acuity))
    assert module.LOG == [
        ("intake", 1), ("nurse", 1), ("porter", 1),
        ("intake", 3), ("nurse", 3), ("porter", 3),
        ("intake busy", 4), ("nurse on break", 4), ("porter", 4),
        ("intake busy", 5), ("nurse on break", 5), ("porter off shift", 5)]


HELPER_STATE = """
class Intake(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("intake", patient.acuity))
        if patient.acuity > 2:
            self.go_busy()

    def go_busy(self):
        self.__class__ = BusyIntake


class BusyIntake(Intake):
    def handle(self, patient):
        LOG.append(("intake busy", patient.acuity))


class Shift:
    def hand_over(self):
        setattr(self, "handle", self.on_break)


class Nurse(Shift, MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))
        if patient.acuity > 2:
            self.hand_over()

    def on_break(self, patient):
        LOG.append(("nurse on break", patient.acuity))


class Porter(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("porter", patient.acuity))
"""

HELPER_HEADER = """
from mycelium_mono import MessageHandler, routing_config
from triage.messages import Arrival

LOG = []
"""


def load_where(tmp_path: Path, build: Build, where: str, classes: str
               ) -> tuple[ModuleType, Any]:
    """The board over ``classes`` written in the handler module (a compiled module the
    swap check reads from bytecode) or in the routing module itself (read from source)."""
    import sys

    if where == "handler module":
        return load(tmp_path, build, HELPER_HEADER + classes, BOARD_ROUTING)
    text = (HELPER_HEADER + classes + "\n\n@routing_config(inline=INLINE)\n"
            "class Board:\n    Arrival = [Intake, Nurse, Porter]\n")
    routing = load_build(tmp_path, PACKAGE, {"messages": MESSAGES, "routing": text}, build)
    return routing, sys.modules[f"{PACKAGE}.routing"]


@pytest.mark.parametrize("where", ["handler module", "routing module"])
def test_a_station_that_swaps_its_class_through_a_helper_method_is_seen_by_the_next_emit(
        tmp_path: Path, build: Build, where: str) -> None:
    """The state pattern through a helper: ``self.go_busy()`` sets ``self.__class__``, a
    mixin's ``hand_over()`` sets ``handle`` on the instance. The body itself assigns nothing,
    so only a look at every method of the class's MRO tells that the next patient may meet
    other code. Inlined without it, the next emit pasted the idle desk's body again."""
    routing, module = load_where(tmp_path, build, where, HELPER_STATE)
    if build.inline:
        assert inlined(routing.Board) == {"porter"}
        reasons = {attr: reason for _, attr, _, mode, reason in routing.Board.__mycelium_notes__}
        assert "go_busy sets .__class__" in reasons["intake"]
        assert "hand_over sets .handle" in reasons["nurse"]
    bus = routing.Board(intake=module.Intake(), nurse=module.Nurse(), porter=module.Porter())
    for acuity in (1, 3, 4):
        bus.emit(module.Arrival(acuity))
    assert module.LOG == [
        ("intake", 1), ("nurse", 1), ("porter", 1),
        ("intake", 3), ("nurse", 3), ("porter", 3),
        ("intake busy", 4), ("nurse on break", 4), ("porter", 4)]


# --- what handler bodies contain: many shapes against hand-written calls ---------------------

SHAPE_HANDLERS = """
import dataclasses
import functools
from mycelium_mono import MessageHandler
from triage.messages import Arrival

LOG = []
BOARD = []
total = 100          # a module global named like locals below
exc = "module exc"   # and like the emit's own locals
h2 = "module h2"


def audited(fn):
    @functools.wraps(fn)
    def wrapper(self, patient):
        LOG.append(("audit", fn.__name__))
        return fn(self, patient)
    return wrapper


def stamped(fn):
    fn.stamped = True     # a decorator handing back the very function
    return fn


class Station(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("station", type(self).__name__, patient.acuity))


class Resus(Station):
    def handle(self, patient):
        LOG.append(("resus", __class__.__name__))
        super().handle(patient)
        if patient.acuity == 1:
            raise RuntimeError("resus bay full")


class Audited(MessageHandler[Arrival]):
    @audited
    def handle(self, patient):
        LOG.append(("audited", patient.acuity))


class Stamped(MessageHandler[Arrival]):
    @stamped
    def handle(self, patient):
        LOG.append(("stamped", patient.acuity, self.handle.stamped))


class Defaults(MessageHandler[Arrival]):
    def handle(self, patient, scale=3, *, floor=2):
        LOG.append(("defaults", max(patient.acuity * scale, floor)))


class Shadow(MessageHandler[Arrival]):
    def handle(self, msg):
        exc = msg.acuity + 1
        h1 = exc * 2
        failure = [h1, h2]
        total = len(failure) + exc
        LOG.append(("shadow", exc, h1, failure, total))
        len = total          # a local shadowing a builtin: every `len` above is this local
        LOG.append(("shadow len", len))


class Returns(MessageHandler[Arrival]):
    def handle(this, patient):
        for bed in range(5):
            try:
                if bed == patient.acuity % 4:
                    return
                if bed == 3:
                    raise ValueError(f"bed {bed} closed")
            finally:
                LOG.append(("returns", bed))
        else:
            LOG.append(("returns", "no bed"))
        LOG.append(("returns", "end"))


class Walrus(MessageHandler[Arrival]):
    def handle(self, patient):
        if (level := patient.acuity % 5) > 2:
            match level:
                case 3:
                    LOG.append(("walrus", "three"))
                case other:
                    LOG.append(("walrus", other))
        elif level == 0:
            del level
            LOG.append(("walrus", level))
        else:
            LOG.append(("walrus", [k for k in range(level)], tuple(k * level for k in range(3))))


class Closure(MessageHandler[Arrival]):
    def handle(self, patient):
        base = patient.acuity
        fns = [lambda k: k + base for _ in range(2)]
        LOG.append(("closure", [f(1) for f in fns]))


class Locals(MessageHandler[Arrival]):
    def handle(self, patient):
        ward = patient.acuity % 2
        LOG.append(("locals", ward, sorted(locals())))


class Slotted(MessageHandler[Arrival]):
    __slots__ = ("seen",)

    def __init__(self):
        self.seen = 0

    def handle(self, patient):
        self.seen += patient.acuity
        LOG.append(("slotted", self.seen))


class Lookup(MessageHandler[Arrival]):
    def __getattr__(self, name):
        LOG.append(("getattr", name))
        return 7

    @property
    def level(self):
        return self.base_level * 2

    def handle(self, patient):
        LOG.append(("lookup", self.level, patient.acuity + self.ward))


@dataclasses.dataclass
class Chart(MessageHandler[Arrival]):
    entries: list = dataclasses.field(default_factory=list)

    def handle(self, patient):
        self.entries.append(patient.acuity)
        LOG.append(("chart", len(self.entries), sum(e for e in self.entries)))


class Raises(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("raises", patient.acuity))
        if patient.acuity % 3 == 0:
            raise KeyError(f"no bed for {patient.acuity}")
        try:
            unknown = {}[patient.acuity]
        except KeyError as exc:
            LOG.append(("raises caught", repr(exc)))
        else:
            LOG.append(("raises", unknown))


class Recurse(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("recurse", patient.acuity))
        if patient.acuity > 0 and patient.acuity % 2 == 0:
            self.emit(Arrival(patient.acuity - 1))
        LOG.append(("recurse done", patient.acuity))
"""

ORDER = ["station", "resus", "audited", "stamped", "defaults", "shadow", "returns", "walrus",
         "closure", "locals", "slotted", "lookup", "chart", "raises", "recurse"]
NAMES = {"station": "Station", "resus": "Resus", "audited": "Audited", "stamped": "Stamped",
         "defaults": "Defaults", "shadow": "Shadow", "returns": "Returns", "walrus": "Walrus",
         "closure": "Closure", "locals": "Locals", "slotted": "Slotted", "lookup": "Lookup",
         "chart": "Chart", "raises": "Raises", "recurse": "Recurse"}
SHAPE_ROUTING = """
from mycelium_mono import routing_config
from triage.messages import Arrival  # noqa: F401
from triage.handlers import (Station, Resus, Audited, Stamped, Defaults, Shadow, Returns,
                             Walrus, Closure, Locals, Slotted, Lookup, Chart, Raises, Recurse)


@routing_config(inline=INLINE)
class Board:
    Arrival = [{}]


@routing_config(inline=INLINE)
class NightBoard:
    Arrival = [{}]
""".format(", ".join(NAMES[a] for a in ORDER), ", ".join(NAMES[a] for a in ORDER[::-1]))

# The bodies the inliner may paste; every other one must keep its call (super(), a wrapper or
# any decorator, defaults, a lambda, locals()).
INLINABLE = {"station", "shadow", "returns", "walrus", "slotted", "lookup", "chart",
             "raises", "recurse"}


@pytest.fixture(scope="module")
def shape_builds(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("shapes")
    loaded = [(b, *load(root, b, SHAPE_HANDLERS, SHAPE_ROUTING)) for b in BUILDS]
    yield loaded
    forget_modules(PACKAGE)


def run(emit: Any, module: Any, services: dict[str, Any], acuities: list[int]) -> Any:
    trace = []
    for acuity in acuities:
        module.LOG.clear()
        try:
            emit(module.Arrival(acuity))
            outcome: Any = "ok"
        except Exception as exc:
            outcome = describe(exc)
        trace.append((list(module.LOG), outcome))
    state = (services["slotted"].seen, list(services["chart"].entries))
    return trace, state


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(acuities=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6))
def test_handler_bodies_of_every_shape_behave_like_hand_written_calls_on_every_build(
        shape_builds: Any, acuities: list[int]) -> None:
    """Fifteen stations whose bodies hold zero-arg super() and __class__, a functools.wraps
    wrapper and a decorator returning the function itself, defaults and keyword-only
    parameters, locals named like the emit's (``msg``, ``exc``, ``h1``, ``failure``), like
    module globals and like a builtin, early returns in a loop's try/finally, walrus and
    match, ``del`` of a local then reading it, lambdas and generator expressions closing over
    locals, ``locals()``, ``__slots__``, ``__getattr__`` behind a property, a dataclass, a
    body raising midway and one emitting the type it handles. Every build leaves the trace,
    failures and state hand-written calls leave."""
    results = {}
    for build, routing, module in shape_builds:
        for board, order in (("Board", ORDER), ("NightBoard", ORDER[::-1])):
            bus_cls = getattr(routing, board)
            if build.inline:
                assert inlined(bus_cls) == INLINABLE, build.name
            hand_services = {a: getattr(module, NAMES[a])() for a in ORDER}
            hand = HandWritten(hand_services, order, board)
            expected = run(hand.emit, module, hand_services, acuities)
            services = {a: getattr(module, NAMES[a])() for a in ORDER}
            bus = bus_cls(**services)
            assert getattr(bus, "_mycelium_inline_ok", False) is build.inline, build.name
            got = run(bus.emit, module, services, acuities)
            assert got == expected, (build.name, board)
            results[build.name, board] = got
    assert len({repr(r) for (_, board), r in results.items() if board == "Board"}) == 1
# --- inliner6-A (the other helper appends below this line) ---------------------------------


# --- a swap by a name computed at run time ---------------------------------------------------

COMPUTED_STATE = """
class Intake(MessageHandler[Arrival]):
    def __init__(self):
        self.slot = "".join(["han", "dle"])     # "handle", but no literal says so

    def handle(self, patient):
        LOG.append(("intake", patient.acuity))
        if patient.acuity > 2:
            setattr(self, self.slot, self.on_break)

    def on_break(self, patient):
        LOG.append(("intake on break", patient.acuity))


class Shift:
    def hand_over(self):
        object.__setattr__(self, self.slot, self.off_shift)


class Nurse(Shift, MessageHandler[Arrival]):
    def __init__(self):
        self.slot = "_".join(["", "", "class", "", ""]).replace("__c", "__c")

    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))
        if patient.acuity > 3:
            self.slot = "handle"
            self.hand_over()

    def off_shift(self, patient):
        LOG.append(("nurse off shift", patient.acuity))


class Porter(MessageHandler[Arrival]):
    def __init__(self, **settings):
        for key, value in {"trolleys": 2, **settings}.items():
            setattr(self, key, value)       # names from the caller, before the bus checks

    def handle(self, patient):
        LOG.append(("porter", patient.acuity, self.trolleys))
"""


@pytest.mark.parametrize("where", ["handler module", "routing module"])
def test_a_station_that_swaps_its_method_by_a_computed_name_is_seen_by_the_next_emit(
        tmp_path: Path, build: Build, where: str) -> None:
    """``setattr(self, self.slot, ...)`` with ``slot == "handle"``: no string literal names the
    method, so a check that looked for ``"handle"`` let the body be inlined, and the next
    patient met the old body. A computed name counts as a possible swap, in the body and in
    every method of the class, except in ``__init__`` (it ran before the bus checked the
    service): the porter, who sets his settings by name there, is still inlined."""
    routing, module = load_where(tmp_path, build, where, COMPUTED_STATE)
    if build.inline:
        assert inlined(routing.Board) == {"porter"}, routing.Board.__mycelium_notes__
        reasons = {attr: reason for _, attr, _, mode, reason in routing.Board.__mycelium_notes__}
        assert "named at run time" in reasons["intake"]
        assert "hand_over sets an attribute named at run time" in reasons["nurse"]
    bus = routing.Board(intake=module.Intake(), nurse=module.Nurse(), porter=module.Porter())
    for acuity in (1, 3, 4, 5):
        bus.emit(module.Arrival(acuity))
    assert module.LOG == [
        ("intake", 1), ("nurse", 1), ("porter", 1, 2),
        ("intake", 3), ("nurse", 3), ("porter", 3, 2),
        ("intake on break", 4), ("nurse", 4), ("porter", 4, 2),
        ("intake on break", 5), ("nurse off shift", 5), ("porter", 5, 2)]


# --- a handler module imported again ---------------------------------------------------------

REIMPORTED = """
from mycelium_mono import MessageHandler
from triage.messages import Arrival

LOG = []


class Intake(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("intake", len(str(patient.acuity)), patient.acuity))
"""

ONE_STATION = """
from mycelium_mono import routing_config
from triage.messages import Arrival  # noqa: F401
from triage.handlers import Intake


@routing_config(inline=INLINE)
class Board:
    Arrival = [Intake]
"""


def test_a_re_imported_handler_module_is_judged_by_the_globals_the_routed_class_reads(
        tmp_path: Path, build: Build) -> None:
    """The routing module keeps the classes it imported; the handler module is then imported
    again (``sys.modules`` now holds a new module object). The guard looked its names up in
    ``sys.modules``: it passed while the *old* module, the one the routed method reads, binds
    ``len`` (the inlined body read the builtin: 2 where the method says -1), and it refused to
    inline when the new module no longer binds ``LOG`` though the old one, the one read, does.
    Both are judged by the method's own globals now."""
    import importlib
    import sys

    routing, old = load(tmp_path, build, REIMPORTED, ONE_STATION)
    (tmp_path / build.name / PACKAGE / "handlers.py").write_text(
        "from mycelium_mono import MessageHandler\n")
    del sys.modules[f"{PACKAGE}.handlers"]
    new = importlib.import_module(f"{PACKAGE}.handlers")
    assert new is not old and not hasattr(new, "LOG")

    bus = routing.Board(intake=old.Intake())
    if build.inline:
        assert inline.guard_failures(bus) == []
    bus.emit(old.Arrival(10))

    old.len = lambda value: -1   # the module the routed method reads now shadows a builtin
    bus = routing.Board(intake=old.Intake())
    if build.inline:
        assert inline.guard_failures(bus) == [
            "Intake.handle: triage.handlers now binds 'len', which the inlined body reads as "
            "the builtin: its method is called"]
    bus.emit(old.Arrival(7))
    hand_written = old.Intake()
    hand_written.handle(old.Arrival(7))
    assert old.LOG == [("intake", 2, 10), ("intake", -1, 7), ("intake", -1, 7)]
