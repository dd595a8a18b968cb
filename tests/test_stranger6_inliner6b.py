"""A stranger's attack on the inliner's handler bodies: an emergency-room triage board.

(The ``b`` file: a second helper of the same name writes ``test_stranger6_inliner6.py`` in this
worktree, and two writers of one file would clobber each other.)

Each scenario writes small ``er6``/``ward6`` packages, imports the routing module by the four
builds (import hook or run time, ``inline=True``/``False``; ``helpers_shapes``) and compares
what the bus did with plain hand-written calls of the same methods: the log of side effects,
each failure's type and text. The rule: the inliner never runs different code than the call.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build, write_package
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.inline import module_alias

MESSAGES = """from mycelium_mono import message, I64

@message(type_id=64971, topic="er6.arrived")
class Arrived:
    acuity: I64
"""
WARD_MESSAGES = MESSAGES.replace("er6", "ward6").replace("64971", "64972")


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules("er6", "er6__night", "ward6")


def describe(exc: BaseException) -> Any:
    if isinstance(exc, BaseExceptionGroup):
        return ("group", exc.message.split(".", 1)[-1],
                tuple(describe(e) for e in exc.exceptions))
    return (type(exc).__name__, str(exc))


def by_hand(services: dict[str, Any], bus_name: str, msg: Any) -> Any:
    """Each routed handler's ``handle`` called in order, failures gathered as the bus does."""
    failures = []
    for attr, service in services.items():
        try:
            service.handle(msg)
        except Exception as exc:
            failures.append((f"{attr}.handle", exc))
    if not failures:
        return "ok"
    names = ", ".join(where for where, _ in failures)
    return describe(ExceptionGroup(f"{bus_name}.emit_arrived: {len(failures)} handler(s) "
                                   f"failed ({names})", [exc for _, exc in failures]))


def on_bus(bus: Any, msg: Any) -> Any:
    try:
        bus.emit_arrived(msg)
    except Exception as exc:
        return describe(exc)
    return "ok"


# --- two handler modules whose dotted names differ only in `.` against `__` ------------------

NIGHT = """
from mycelium_mono import MessageHandler
from er6.messages import Arrived

LOG = []
WARD = "night ward"


class NightNurse(MessageHandler[Arrived]):
    def handle(self, m):
        LOG.append((WARD, m.acuity))
"""

DAY = """
from mycelium_mono import MessageHandler
from er6.messages import Arrived

LOG = []
WARD = "day ward"


class DayNurse(MessageHandler[Arrived]):
    def handle(self, m):
        LOG.append((WARD, m.acuity))
"""

SHIFTS_ROUTING = """
from mycelium_mono import routing_config
from er6.messages import Arrived  # noqa: F401
from er6.night__shift import NightNurse
from er6__night.shift import DayNurse


@routing_config(inline=INLINE)
class Board:
    Arrived = [NightNurse, DayNurse]
"""


def test_handlers_in_er6_night__shift_and_er6__night_shift_read_their_own_modules_globals(
        tmp_path: Path, build: Build) -> None:
    # `er6.night__shift` and `er6__night.shift` are two modules; the generated module imported
    # both as `_mycelium_m_er6__night__shift`, the second import won, and the night nurse's
    # inlined body appended "day ward" to the *day* module's LOG.
    write_package(tmp_path / build.name, "er6__night", {"shift": DAY})
    routing = load_build(tmp_path, "er6", {"messages": MESSAGES, "night__shift": NIGHT,
                                           "routing": SHIFTS_ROUTING}, build)
    night, day = sys.modules["er6.night__shift"], sys.modules["er6__night.shift"]
    msg = sys.modules["er6.messages"].Arrived(3)
    bus = routing.Board(night_nurse=night.NightNurse(), day_nurse=day.DayNurse())
    assert inlined(routing.Board) == ({"night_nurse", "day_nurse"} if build.inline else set())
    assert on_bus(bus, msg) == "ok"
    got = (list(night.LOG), list(day.LOG))
    night.LOG.clear()
    day.LOG.clear()
    assert by_hand({"night_nurse": night.NightNurse(), "day_nurse": day.DayNurse()},
                   "Board", msg) == "ok"
    assert got == (list(night.LOG), list(day.LOG)) == ([("night ward", 3)], [("day ward", 3)])


def test_module_aliases_are_one_name_per_module() -> None:
    names = ["er6.night__shift", "er6__night.shift", "app._impl", "app_.impl", "a.b", "a__b",
             "a_.b", "a._b", "a.b_", "a_u.b", "a_.ub", "bandit.services.risk"]
    aliases = [module_alias(n) for n in names]
    assert len(set(aliases)) == len(names), dict(zip(names, aliases, strict=True))
    assert all(a.isidentifier() for a in aliases)


_MODULE = st.lists(st.sampled_from(["a", "u", "_", "."]), min_size=1, max_size=7).map(
    "".join).filter(lambda name: all(name.split(".")))


@settings(max_examples=400, deadline=None)
@given(_MODULE, _MODULE)
def test_two_module_names_never_share_an_alias(a: str, b: str) -> None:
    # Besides two drawn names, the names `a` turns into when a `.` is spelled `__` (or back),
    # or `_` and `.` trade places: the spellings an alias might confuse.
    variants = {b, a.replace(".", "__"), a.replace("__", "."), a.replace("_.", "._"),
                a.replace("._", "_."), a.replace("_", ".", 1)}
    for other in (v for v in variants if all(v.split("."))):
        assert (module_alias(a) == module_alias(other)) == (a == other), (a, other)


# --- `type X = ...` in a handler body (3.12+) ------------------------------------------------

TYPE_ALIAS_HANDLERS = """
from typing import TypeVar
from mycelium_mono import MessageHandler
from ward6.messages import Arrived

T = TypeVar("T")        # a module TypeVar named like the alias's own type parameter
LOG = []


class BedBoard(MessageHandler[Arrived]):
    def handle(self, m):
        type Bed = tuple[int, str]
        type Queue[T] = list[T]
        LOG.append((Bed.__name__, repr(Bed), Queue.__type_params__[0] is T,
                    repr(Queue.__value__), m.acuity))
"""

TYPE_ALIAS_ROUTING = """
from mycelium_mono import routing_config
from ward6.messages import Arrived  # noqa: F401
from ward6.handlers import BedBoard


@routing_config(inline=INLINE)
class Triage:
    Arrived = [BedBoard]
"""


def test_a_type_alias_statement_in_a_handler_keeps_its_name_and_its_type_parameter(
        tmp_path: Path, build: Build) -> None:
    # Inlined, `type Bed = ...` became `type h1_Bed = ...` (so `Bed.__name__` was "h1_Bed") and
    # the `T` in `type Queue[T] = list[T]` was read through the module as its TypeVar `T`.
    if sys.version_info < (3, 12):
        # `type X = ...` is syntax from 3.12 on: on 3.11 no handler can contain one.
        with pytest.raises(SyntaxError):
            ast.parse(TYPE_ALIAS_HANDLERS)
        return
    routing = load_build(tmp_path, "ward6", {"messages": WARD_MESSAGES,
                                             "handlers": TYPE_ALIAS_HANDLERS,
                                             "routing": TYPE_ALIAS_ROUTING}, build)
    handlers: ModuleType = sys.modules["ward6.handlers"]
    msg = handlers.Arrived(2)
    assert on_bus(routing.Triage(bed_board=handlers.BedBoard()), msg) == "ok"
    got = list(handlers.LOG)
    handlers.LOG.clear()
    assert by_hand({"bed_board": handlers.BedBoard()}, "Triage", msg) == "ok"
    assert got == handlers.LOG == [("Bed", "Bed", False, "list[T]", 2)]
    if build.inline:
        (note,) = routing.Triage.__mycelium_notes__
        assert note[3] == "call" and "type alias" in note[4], note


# --- an unbound local caught by `except*` ----------------------------------------------------

STAR_HANDLERS = """
from mycelium_mono import MessageHandler
from ward6.messages import Arrived

LOG = []


class Intake(MessageHandler[Arrived]):
    def handle(self, m):
        if m.acuity > 3:
            bay = m.acuity
        try:
            LOG.append(("bay", bay))
        except* UnboundLocalError as eg:
            LOG.append(("intake caught", [str(e) for e in eg.exceptions]))


class Nurse(MessageHandler[Arrived]):
    def handle(self, m):
        if m.acuity > 3:
            cot = m.acuity
        try:
            LOG.append(("cot", cot))
        except* NameError:
            LOG.append("nurse saw it")
            raise


class Porter(MessageHandler[Arrived]):
    def handle(self, m):
        try:
            LOG.append(("chair", chair))
        except* KeyError:
            pass
        chair = 1
"""

STAR_ROUTING = """
from mycelium_mono import routing_config
from ward6.messages import Arrived  # noqa: F401
from ward6.handlers import Intake, Nurse, Porter


@routing_config(inline=INLINE)
class Triage:
    Arrived = [Intake, Nurse, Porter]
"""


def test_an_unbound_local_caught_by_except_star_names_the_local_as_the_handler_wrote_it(
        tmp_path: Path, build: Build) -> None:
    # A plain `except` block of an inlined body mends an UnboundLocalError's text ('h1_bay' ->
    # 'bay'); an `except*` block did not: its group's leaves said 'h1_bay', and a group
    # re-raised from it carried 'h2_cot' out of the emit.
    routing = load_build(tmp_path, "ward6", {"messages": WARD_MESSAGES,
                                             "handlers": STAR_HANDLERS,
                                             "routing": STAR_ROUTING}, build)
    handlers: ModuleType = sys.modules["ward6.handlers"]
    names = ("intake", "nurse", "porter")
    classes = (handlers.Intake, handlers.Nurse, handlers.Porter)
    assert inlined(routing.Triage) == (set(names) if build.inline else set())
    unbound = "cannot access local variable '{}' where it is not associated with a value"
    for acuity in (1, 5):
        msg = handlers.Arrived(acuity)
        handlers.LOG.clear()
        got = on_bus(routing.Triage(**{n: c() for n, c in zip(names, classes, strict=True)}),
                     msg)
        got_log = list(handlers.LOG)
        handlers.LOG.clear()
        expected = by_hand({n: c() for n, c in zip(names, classes, strict=True)}, "Triage", msg)
        assert (got, got_log) == (expected, handlers.LOG), acuity
    # Spelled out: a warm arrival (5) binds every local; a cold one (1) leaves three unbound.
    assert got_log[:2] == [("bay", 5), ("cot", 5)]
    msg = handlers.Arrived(1)
    handlers.LOG.clear()
    outcome = on_bus(routing.Triage(**{n: c() for n, c in zip(names, classes, strict=True)}), msg)
    assert [("intake caught", [unbound.format("bay")]), "nurse saw it"] == handlers.LOG
    assert outcome == ("group", "emit_arrived: 2 handler(s) failed (nurse.handle, porter.handle)",
                       (("group", "", (("UnboundLocalError", unbound.format("cot")),)),
                        ("UnboundLocalError", unbound.format("chair"))))


# --- frame functions imported by name --------------------------------------------------------

FRAME_HANDLERS = """
import traceback
from inspect import currentframe
from sys import _getframe
from mycelium_mono import MessageHandler
from ward6.messages import Arrived

LOG = []


class Chart(MessageHandler[Arrived]):
    def handle(self, m):
        LOG.append(("chart", _getframe().f_code.co_name, currentframe().f_code.co_name))


class Porter(MessageHandler[Arrived]):
    def handle(self, m):
        LOG.append(("porter", traceback.extract_stack(limit=1)[0].name, m.acuity))
"""

FRAME_ROUTING = """
from mycelium_mono import routing_config
from ward6.messages import Arrived  # noqa: F401
from ward6.handlers import Chart, Porter


@routing_config(inline=INLINE)
class Triage:
    Arrived = [Chart, Porter]
"""


def test_a_body_reading_its_frame_through_a_bare_name_keeps_the_call(
        tmp_path: Path, build: Build) -> None:
    # `.f_back`, `sys._getframe` and `inspect.stack` kept the call; `from sys import _getframe`
    # and `traceback.extract_stack` did not: inlined, the frame was the emit's ("emit_arrived").
    routing = load_build(tmp_path, "ward6", {"messages": WARD_MESSAGES,
                                             "handlers": FRAME_HANDLERS,
                                             "routing": FRAME_ROUTING}, build)
    handlers: ModuleType = sys.modules["ward6.handlers"]
    msg = handlers.Arrived(4)
    assert on_bus(routing.Triage(chart=handlers.Chart(), porter=handlers.Porter()), msg) == "ok"
    got = list(handlers.LOG)
    handlers.LOG.clear()
    assert by_hand({"chart": handlers.Chart(), "porter": handlers.Porter()}, "Triage",
                   msg) == "ok"
    assert got == handlers.LOG == [("chart", "handle", "handle"), ("porter", "handle", 4)]
    assert inlined(routing.Triage) == set()


# --- a handler module that swapped its module class ------------------------------------------

SWAPPED_HANDLERS = """
import sys
import types
from mycelium_mono import MessageHandler
from ward6.messages import Arrived

LOG = []
BEDS = 4
READS = []


class _Ward(types.ModuleType):
    # What `ward6.handlers.X` says from outside: a deprecated name, and every read counted.
    @property
    def BEDS(self):
        return 99

    def __getattribute__(self, name):
        if name == "LOG":
            READS.append(name)
        return super().__getattribute__(name)


if SWAP:
    sys.modules[__name__].__class__ = _Ward


class Beds(MessageHandler[Arrived]):
    def handle(self, m):
        LOG.append(("beds", BEDS, m.acuity))


class Chart(MessageHandler[Arrived]):
    def handle(self, m):
        LOG.append(("chart", m.acuity))
"""

SWAPPED_ROUTING = """
from mycelium_mono import routing_config
from ward6.messages import Arrived  # noqa: F401
from ward6.handlers import Beds, Chart


@routing_config(inline=INLINE)
class Triage:
    Arrived = [Beds, Chart]
"""


def _swapped(tmp_path: Path, build: Build, swap: bool) -> tuple[ModuleType, ModuleType]:
    routing = load_build(tmp_path, "ward6", {
        "messages": WARD_MESSAGES, "handlers": SWAPPED_HANDLERS.replace("SWAP", str(swap)),
        "routing": SWAPPED_ROUTING}, build)
    return routing, sys.modules["ward6.handlers"]


def test_a_handler_module_with_its_own_module_class_is_read_as_its_globals_are(
        tmp_path: Path, build: Build) -> None:
    # Inlined, globals were read as `<module alias>.BEDS`: through the module's class, whose
    # property said 99 and whose __getattribute__ saw every read, where the method's own
    # global lookup reads the module's dict (4, and nothing counted).
    routing, handlers = _swapped(tmp_path, build, swap=True)
    log, reads = vars(handlers)["LOG"], vars(handlers)["READS"]   # not counted as reads
    msg = handlers.Arrived(2)
    assert on_bus(routing.Triage(beds=handlers.Beds(), chart=handlers.Chart()), msg) == "ok"
    got = (list(log), list(reads))
    log.clear()
    reads.clear()
    assert by_hand({"beds": handlers.Beds(), "chart": handlers.Chart()}, "Triage", msg) == "ok"
    assert got == (log, reads) == ([("beds", 4, 2), ("chart", 2)], [])
    assert inlined(routing.Triage) == set()


def test_a_module_class_swapped_after_the_bus_was_generated_makes_the_bus_call(
        tmp_path: Path, build: Build) -> None:
    # The hook's cache may hold a bus generated in a process where the module kept its plain
    # class: the guard, run when a bus is built, must see the swap too.
    routing, handlers = _swapped(tmp_path, build, swap=False)
    assert inlined(routing.Triage) == ({"beds", "chart"} if build.inline else set())
    log, reads = handlers.LOG, handlers.READS
    handlers.__class__ = handlers._Ward
    msg = vars(handlers)["Arrived"](3)
    beds, chart = vars(handlers)["Beds"](), vars(handlers)["Chart"]()
    assert on_bus(routing.Triage(beds=beds, chart=chart), msg) == "ok"
    assert (log, reads) == ([("beds", 4, 3), ("chart", 3)], [])


# --- a nurse covering for a colleague: her bound method on his instance ----------------------

COVER_HANDLERS = """
from mycelium_mono import MessageHandler
from ward6.messages import Arrived


class Nurse(MessageHandler[Arrived]):
    def __init__(self):
        self.patients = []

    def handle(self, m):
        self.patients.append(m.acuity)


def covering(nurse, colleague):
    nurse.handle = colleague.handle   # her list gets the patients while he covers
    return nurse


class Porter(MessageHandler[Arrived]):
    def __init__(self):
        self.trips = 0

    def handle(self, m):
        self.trips += 1
"""

COVER_ROUTING = """
from mycelium_mono import routing_config
from ward6.messages import Arrived  # noqa: F401
from ward6.handlers import Nurse, Porter


@routing_config(inline=INLINE)
class Triage:
    Arrived = [Porter, Nurse]
"""


def test_a_service_whose_handle_is_a_colleagues_bound_method_is_handled_by_the_colleague(
        tmp_path: Path, build: Build) -> None:
    # The guard compared only the function behind `bob.handle`: the same `Nurse.handle`, so the
    # bus ran the inlined body with `self` = bob, where the call runs it on ann.
    routing = load_build(tmp_path, "ward6", {"messages": WARD_MESSAGES,
                                             "handlers": COVER_HANDLERS,
                                             "routing": COVER_ROUTING}, build)
    handlers: ModuleType = sys.modules["ward6.handlers"]
    assert inlined(routing.Triage) == ({"porter", "nurse"} if build.inline else set())
    states = []
    for use_bus in (True, False):
        ann = handlers.Nurse()
        services = {"porter": handlers.Porter(),
                    "nurse": handlers.covering(handlers.Nurse(), ann)}
        bus = routing.Triage(**services) if use_bus else None
        for acuity in (2, 5):
            msg = handlers.Arrived(acuity)
            outcome = on_bus(bus, msg) if bus else by_hand(services, "Triage", msg)
            assert outcome == "ok"
        states.append((ann.patients, services["nurse"].patients, services["porter"].trips))
    assert states[0] == states[1] == ([2, 5], [], 2)
    # Its own bound method (an instance attribute that changes nothing) is still inlined.
    nurse = handlers.Nurse()
    nurse.handle = nurse.handle
    bus = routing.Triage(porter=handlers.Porter(), nurse=nurse)
    assert getattr(bus, "_mycelium_inline_ok", False) is build.inline


# --- one exception object raised on every message ----------------------------------------------

FULL_HANDLERS = """
from mycelium_mono import MessageHandler
from ward6.messages import Arrived

BAY_FULL = RuntimeError("resus bay full")   # one object, raised again and again


class Resus(MessageHandler[Arrived]):
    def handle(self, m):
        raise BAY_FULL


class Chart(MessageHandler[Arrived]):
    def __init__(self):
        self.rows = 0

    def handle(self, m):
        self.rows += 1
"""

FULL_ROUTING = """
from mycelium_mono import routing_config
from ward6.messages import Arrived  # noqa: F401
from ward6.handlers import Chart, Resus


@routing_config(inline=INLINE)
class Triage:
    Arrived = [Resus, Chart]
"""


def test_an_exception_object_raised_on_every_emit_does_not_gain_a_note_per_emit(
        tmp_path: Path, build: Build) -> None:
    # Every failed emit added "raised in Triage by resus.handle" (and, inlined, "inlined
    # Resus.handle raised at ...") to the one BAY_FULL object: after a night of arrivals its
    # traceback printed thousands of notes. The calls it stands for add none.
    routing = load_build(tmp_path, "ward6", {"messages": WARD_MESSAGES,
                                             "handlers": FULL_HANDLERS,
                                             "routing": FULL_ROUTING}, build)
    handlers: ModuleType = sys.modules["ward6.handlers"]
    chart = handlers.Chart()
    bus = routing.Triage(resus=handlers.Resus(), chart=chart)
    notes = []
    for acuity in range(5):
        outcome = on_bus(bus, handlers.Arrived(acuity))
        assert outcome == ("group", "emit_arrived: 1 handler(s) failed (resus.handle)",
                           (("RuntimeError", "resus bay full"),))
        notes.append(list(getattr(handlers.BAY_FULL, "__notes__", [])))
    assert chart.rows == 5
    assert all(n == notes[0] for n in notes), notes
    assert len(notes[0]) == (2 if build.inline else 1), notes[0]


# --- generated: what a service instance carries when the bus is built ------------------------

GUARD_HANDLERS = """
import functools
import types
from mycelium_mono import MessageHandler
from ward6.messages import Arrived

LOG = []


class Station(MessageHandler[Arrived]):
    def __init__(self, name):
        self.name = name
        self.seen = []


class Nurse(Station):
    def handle(self, m):
        self.seen.append(m.acuity)
        LOG.append(("nurse", self.name, m.acuity))


class Porter(Station):
    def handle(self, m):
        self.seen.append(-m.acuity)
        LOG.append(("porter", self.name, m.acuity))


class Chart(Station):
    def handle(self, m):
        if m.acuity == 4:
            raise LookupError(f"no chart for {self.name}")
        self.seen.append(m.acuity * 10)
        LOG.append(("chart", self.name, m.acuity))


class SubNurse(Nurse):
    def handle(self, m):
        LOG.append(("sub nurse", self.name, m.acuity))


def tweak(service, how, colleague):
    '''What a service instance may carry in its __dict__ when the bus is built.'''
    cls = type(service)
    if how == "own bound":
        service.handle = service.handle
    elif how == "colleague's bound":
        service.handle = colleague.handle
    elif how == "partial on colleague":
        service.handle = functools.partial(cls.handle, colleague)
    elif how == "method type on colleague":
        service.handle = types.MethodType(cls.handle, colleague)
    elif how == "lambda":
        service.handle = lambda m: LOG.append(("lambda", service.name, m.acuity))
    elif how == "subclass" and cls is Nurse:
        service.__class__ = SubNurse
"""

GUARD_ROUTING = """
from mycelium_mono import routing_config
from ward6.messages import Arrived  # noqa: F401
from ward6.handlers import Chart, Nurse, Porter


@routing_config(inline=INLINE)
class Triage:
    Arrived = [Nurse, Porter, Chart]
"""

TWEAKS = ("none", "own bound", "colleague's bound", "partial on colleague",
          "method type on colleague", "lambda", "subclass")
STATIONS = (("nurse", "Nurse"), ("porter", "Porter"), ("chart", "Chart"))


@pytest.fixture(scope="module")
def guard_builds(tmp_path_factory: pytest.TempPathFactory) -> Any:
    loaded = {}
    for build in BUILDS:
        root = tmp_path_factory.mktemp(f"guard-{build.name}")
        routing = load_build(root, "ward6", {"messages": WARD_MESSAGES,
                                             "handlers": GUARD_HANDLERS,
                                             "routing": GUARD_ROUTING}, build)
        loaded[build.name] = (routing, sys.modules["ward6.handlers"])
        forget_modules("ward6")
    return loaded


@settings(max_examples=60, deadline=None)
@given(st.tuples(*(st.sampled_from(TWEAKS) for _ in STATIONS)),
       st.lists(st.integers(1, 6), min_size=1, max_size=4),
       st.sampled_from(["constructor", "reassigned"]))
def test_generated_service_instances_behave_like_hand_written_calls_on_every_build(
        guard_builds: Any, tweaks: tuple[str, ...], feed: list[int], when: str) -> None:
    # The inline guard decides, when the bus is built or a service is reassigned, whether
    # the pasted bodies may run: whatever the instances carry, the bus must do what calling
    # `service.handle(msg)` does, on every build.
    results = []
    for build in BUILDS:
        routing, handlers = guard_builds[build.name]
        for use_bus in (True, False):
            handlers.LOG.clear()
            services, colleagues = {}, {}
            for (attr, cls_name), how in zip(STATIONS, tweaks, strict=True):
                cls = getattr(handlers, cls_name)
                services[attr] = cls(attr)
                colleagues[attr] = cls(f"{attr}'s colleague")
                if when == "constructor" or not use_bus:
                    handlers.tweak(services[attr], how, colleagues[attr])
            bus = routing.Triage(**services) if use_bus else None
            if bus is not None and when == "reassigned":
                for (attr, _), how in zip(STATIONS, tweaks, strict=True):
                    fresh = type(services[attr])(attr)
                    handlers.tweak(fresh, how, colleagues[attr])
                    setattr(bus, attr, fresh)       # the guard runs again
                    services[attr] = fresh
            outcomes = [on_bus(bus, handlers.Arrived(a)) if bus is not None
                        else by_hand(services, "Triage", handlers.Arrived(a)) for a in feed]
            state = {name: (s.name, type(s).__name__, s.seen)
                     for name, s in [*services.items(),
                                     *((f"{k}'s colleague", c) for k, c in colleagues.items())]}
            results.append((build.name, use_bus, outcomes, list(handlers.LOG), state))
    expected = results[1][2:]
    for name, use_bus, *got in results:
        assert tuple(got) == expected, (name, use_bus, tweaks, when)
