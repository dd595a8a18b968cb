"""A stranger's attack on the inliner's behaviour-swap check: a ward whose nurse goes on break.

The rule under test: the inliner never runs different code than calling the handler would. A
handler that swaps its own ``handle`` (or its ``__class__``) changes which code the next
message runs; the run-time guard looks only when the bus is built, so such a handler must keep
its call. The check reads the handler's class statically, and these are the shapes a user
writes that it did not read: a helper method writing into ``self.__dict__`` or ``vars(self)``,
``setattr`` looked up by name (``getattr(builtins, "setattr")``), a module-level alias
(``SET = setattr``), a plain function of the handler module (``rotate(self)``), one imported
from a third module of the package, a static method of another class of the module; each in a
handler module and in the routing module itself. Every scenario imports the ``ward`` package
by the four builds (``helpers_shapes``: import hook or run time, ``inline=True``/``False``)
and compares the log with the handler's own method called by hand.

And the cost side: the handlers people write every day (dataclasses, frozen dataclasses, an
``__init__`` looping over ``setattr``, a ``__setattr__`` writing ``self.__dict__[name]``,
``__setstate__``, a pure helper function) must still be inlined.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build, write_package

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.hook import Outcome, import_records, install_import_hook

PACKAGE = "ward"

MESSAGES = """from mycelium_mono import message, I64

@message(type_id=64981, topic="ward.arrival")
class Arrival:
    acuity: I64
"""

HEADER = """
import builtins
from mycelium_mono import MessageHandler, routing_config
from ward.messages import Arrival
from ward.util import rotate_elsewhere

LOG = []
SET = setattr
"""

NURSE = """
class Nurse(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))
        if patient.acuity > 2:
            {swap}

    def on_break(self, patient):
        LOG.append(("nurse on break", patient.acuity))
{methods}

def rotate(nurse):
    nurse.handle = nurse.on_break


class Rota:
    @staticmethod
    def assign(nurse):
        nurse.handle = nurse.on_break
"""

UTIL = """
def rotate_elsewhere(nurse):
    _hand_over(nurse)


def _hand_over(nurse):
    setattr(nurse, "handle", nurse.on_break)
"""

ROUTING_TABLE = """
@routing_config(inline=INLINE)
class Ward:
    Arrival = [Nurse]
"""

ROUTING = """
from mycelium_mono import routing_config
from ward.messages import Arrival  # noqa: F401
from ward.handlers import Nurse
""" + ROUTING_TABLE

# (the handler's swapping line, extra methods of the class)
SWAPS = {
    "helper writes self.__dict__[...]": (
        "self.rest()",
        "    def rest(self):\n        self.__dict__['handle'] = self.on_break\n"),
    "helper writes vars(self)[...]": (
        "self.rest()",
        "    def rest(self):\n        vars(self)['handle'] = self.on_break\n"),
    "helper calls self.__dict__.update": (
        "self.rest()",
        "    def rest(self):\n        self.__dict__.update(handle=self.on_break)\n"),
    "setattr looked up by name": (
        'getattr(builtins, "set" + "attr")(self, "handle", self.on_break)', ""),
    "module alias SET = setattr": ('SET(self, "handle", self.on_break)', ""),
    "module function rotate(self)": ("rotate(self)", ""),
    "function of a third module": ("rotate_elsewhere(self)", ""),
    "static method of another class": ("Rota.assign(self)", ""),
}

EXPECTED = [("nurse", 1), ("nurse", 3), ("nurse on break", 4), ("nurse on break", 5)]


def by_hand(module: Any) -> list[Any]:
    """The handler's own method called for each patient, as a person would write it."""
    module.LOG.clear()
    nurse = module.Nurse()
    for acuity in (1, 3, 4, 5):
        nurse.handle(module.Arrival(acuity))
    log = list(module.LOG)
    module.LOG.clear()
    return log


def load_ward(root: Path, build: Build, classes: str, where: str) -> tuple[Any, Any]:
    if where == "handler module":
        modules = {"messages": MESSAGES, "util": UTIL, "handlers": HEADER + classes,
                   "routing": ROUTING}
        routing = load_build(root, PACKAGE, modules, build)
        return routing, sys.modules[f"{PACKAGE}.handlers"]
    modules = {"messages": MESSAGES, "util": UTIL,
               "routing": HEADER + classes + ROUTING_TABLE}
    routing = load_build(root, PACKAGE, modules, build)
    return routing, routing


def reasons(bus_cls: type) -> dict[str, str]:
    return {attr: reason for _, attr, _, _, reason in bus_cls.__mycelium_notes__}


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


@pytest.mark.parametrize("where", ["handler module", "routing module"])
@pytest.mark.parametrize("shape", list(SWAPS))
def test_a_nurse_that_goes_on_break_by_any_route_is_seen_by_the_next_emit(
        tmp_path: Path, build: Build, shape: str, where: str) -> None:
    """A user expects the bus to behave as ``nurse.handle(patient)`` called by hand: after
    the nurse swaps ``handle`` for ``on_break``, the next patient meets the nurse on break.
    Found: each of these routes got past the swap check (it read only literal
    ``self.handle =``/``setattr(self, "handle")`` in the class's own methods), the body was
    inlined, and the inlined bus logged ``("nurse", 4)``, ``("nurse", 5)``: two patients
    handled by code that calling would not have run."""
    swap, methods = SWAPS[shape]
    classes = NURSE.format(swap=swap, methods=methods)
    routing, module = load_ward(tmp_path, build, classes, where)
    assert by_hand(module) == EXPECTED
    if build.inline:
        assert inlined(routing.Ward) == set(), reasons(routing.Ward)
        assert "other code" in reasons(routing.Ward)["nurse"]
    bus = routing.Ward(nurse=module.Nurse())
    for acuity in (1, 3, 4, 5):
        bus.emit(module.Arrival(acuity))
    assert module.LOG == EXPECTED


# --- the cost side: everyday handlers are still inlined ---------------------------------------

EVERYDAY = """
import dataclasses
from mycelium_mono import MessageHandler
from ward.messages import Arrival
from ward.util import rotate_elsewhere  # noqa: F401  (imported, never called)

LOG = []


@dataclasses.dataclass(frozen=True)
class Bed:
    number: int
    ward: str = "A"


def triage_band(acuity):
    scale = {}
    scale["low"] = acuity < 3
    return "low" if scale["low"] else "high"


@dataclasses.dataclass
class Nurse(MessageHandler[Arrival]):
    seen: int = 0

    def handle(self, patient):
        self.seen += 1
        LOG.append(("nurse", patient.acuity, self.seen, Bed(patient.acuity).ward,
                    triage_band(patient.acuity)))


@dataclasses.dataclass(frozen=True)
class Chart(MessageHandler[Arrival]):
    title: str = "chart"

    def handle(self, patient):
        LOG.append((self.title, patient.acuity))


class Porter(MessageHandler[Arrival]):
    def __init__(self, **options):
        for name, value in {"floor": 1, **options}.items():
            setattr(self, name, value)

    def __setattr__(self, name, value):
        self.__dict__[name] = value

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"Porter({self.__dict__})"

    def handle(self, patient):
        LOG.append(("porter", patient.acuity, self.floor))
"""

EVERYDAY_ROUTING = """
from mycelium_mono import routing_config
from ward.messages import Arrival  # noqa: F401
from ward.handlers import Chart, Nurse, Porter


@routing_config(inline=INLINE)
class Ward:
    Arrival = [Nurse, Chart, Porter]
"""


def test_everyday_handlers_are_still_inlined(tmp_path: Path, build: Build) -> None:
    """A dataclass nurse that builds a frozen ``Bed`` and calls a pure helper, a frozen
    dataclass chart, a porter whose ``__init__`` loops over ``setattr`` and whose
    ``__setattr__``/``__setstate__`` write ``self.__dict__``: none of them swaps ``handle``
    while it runs, so a user expects all three inlined, and each to log what calling logs.
    Found: following the frozen ``Bed``'s generated ``__setattr__`` (a computed name) kept
    the nurse a call until those methods were exempted as for the handler's own class."""
    modules = {"messages": MESSAGES, "util": UTIL, "handlers": EVERYDAY,
               "routing": EVERYDAY_ROUTING}
    routing = load_build(tmp_path, PACKAGE, modules, build)
    module = sys.modules[f"{PACKAGE}.handlers"]
    if build.inline:
        assert inlined(routing.Ward) == {"nurse", "chart", "porter"}, reasons(routing.Ward)
    bus = routing.Ward(nurse=module.Nurse(), chart=module.Chart(), porter=module.Porter())
    for acuity in (1, 4):
        bus.emit(module.Arrival(acuity))
    assert module.LOG == [("nurse", 1, 1, "A", "low"), ("chart", 1), ("porter", 1, 1),
                          ("nurse", 4, 2, "A", "high"), ("chart", 4), ("porter", 4, 1)]


# --- the hook's cache follows the helper's file -----------------------------------------------

CACHED_HANDLERS = """
from mycelium_mono import MessageHandler
from ward.messages import Arrival
from ward.util import note

LOG = []


class Nurse(MessageHandler[Arrival]):
    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))
        if patient.acuity > 2:
            note(self)

    def on_break(self, patient):
        LOG.append(("nurse on break", patient.acuity))
"""

QUIET_UTIL = """
def note(nurse):
    pass
"""

SWAPPING_UTIL = """
def note(nurse):
    nurse.handle = nurse.on_break
"""


def test_editing_a_followed_helper_invalidates_the_hooks_cached_bus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook caches the rewritten routing module, keyed on the files it read. A user who
    edits ``ward/util.py`` so that ``note(self)`` now sends the nurse on break expects the
    next import to see it. Without the helper's file among the cache's dependencies, the
    cached bus still inlined the body and the patient at acuity 4 met the working nurse."""
    directory = write_package(tmp_path, PACKAGE, {
        "messages": MESSAGES, "util": QUIET_UTIL, "handlers": CACHED_HANDLERS,
        "routing": ROUTING.replace("INLINE", "True")})
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # PYTHONDONTWRITEBYTECODE=1 here
    sys.path.insert(0, str(tmp_path))
    outcomes: list[Outcome] = []
    try:
        for util, expected_inlined, expected in (
                (QUIET_UTIL, {"nurse"}, [("nurse", 1), ("nurse", 3), ("nurse", 4)]),
                (SWAPPING_UTIL, set(), [("nurse", 1), ("nurse", 3), ("nurse on break", 4)])):
            (directory / "util.py").write_text(textwrap.dedent(util))
            forget_modules(PACKAGE)
            importlib.invalidate_caches()
            with install_import_hook([PACKAGE]):
                routing = importlib.import_module(f"{PACKAGE}.routing")
            module = sys.modules[f"{PACKAGE}.handlers"]
            assert routing.Ward.__mycelium_origin__ == "import hook"
            outcomes.append(import_records()[f"{PACKAGE}.routing"].outcome)
            assert inlined(routing.Ward) == expected_inlined
            bus = routing.Ward(nurse=module.Nurse())
            for acuity in (1, 3, 4):
                bus.emit(module.Arrival(acuity))
            assert expected == module.LOG
            bus.detach()
        # Both rewritten: the second import did not load the bus the first one cached.
        assert outcomes == [Outcome.REWRITTEN, Outcome.REWRITTEN]
        # And the helper's file is what invalidated it.
        record = import_records()[f"{PACKAGE}.routing"]
        assert record.miss is not None and "util.py" in str(record.miss), record.miss
        (directory / "util.py").write_text(textwrap.dedent(SWAPPING_UTIL))  # unchanged now
        forget_modules(PACKAGE)
        with install_import_hook([PACKAGE]):
            importlib.import_module(f"{PACKAGE}.routing")
        record = import_records()[f"{PACKAGE}.routing"]
        assert record.outcome is Outcome.CACHE_HIT, (record.miss, record.write)
    finally:
        sys.path.remove(str(tmp_path))
        forget_modules(PACKAGE)


# --- what the static check cannot read ---------------------------------------------------------

THROUGH_AN_OBJECT = """
class Rota:
    def assign(self, nurse):
        nurse.handle = nurse.on_break


class Nurse(MessageHandler[Arrival]):
    rota = Rota()

    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))
        if patient.acuity > 2:
            self.rota.assign(self)

    def on_break(self, patient):
        LOG.append(("nurse on break", patient.acuity))
"""


@pytest.mark.xfail(strict=True, reason="known: a swap through a method of another object "
                   "(self.rota.assign(self)) is not read by the static check")
def test_a_nurse_sent_on_break_by_another_objects_method_is_seen_by_the_next_emit(
        tmp_path: Path) -> None:
    """``self.rota.assign(self)`` sets ``nurse.handle``: called, patient 4 meets the nurse
    on break. The check follows the class's methods and the functions and classes they name
    as globals, not the methods of objects reached through attributes (their class is known
    only at run time), so the body is inlined and patient 4 meets the working nurse. Seeing
    it needs a run-time test per emit (the design trades it for speed, see the inline.py
    docstring); until then this is the documented limit."""
    build = Build("runtime", True)
    try:
        routing, module = load_ward(tmp_path, build, THROUGH_AN_OBJECT, "handler module")
        bus = routing.Ward(nurse=module.Nurse())
        for acuity in (1, 3, 4):
            bus.emit(module.Arrival(acuity))
        assert module.LOG == [("nurse", 1), ("nurse", 3), ("nurse on break", 4)]
    finally:
        forget_modules(PACKAGE)


# --- a metaclass of the user's own --------------------------------------------------------------

METACLASS = """
class Roster(type(MessageHandler)):
    def __new__(meta, name, bases, namespace, **kwargs):
        cls = super().__new__(meta, name, bases, namespace, **kwargs)
        for key, value in {"shift": "day"}.items():
            setattr(cls, key, value)            # computed names at class creation: not a swap
        return cls

    def rotate(cls):
        cls.handle = cls.on_break


class Nurse(MessageHandler[Arrival], metaclass=Roster):
    def handle(self, patient):
        LOG.append(("nurse", patient.acuity))
        if patient.acuity > 2:
            type(self).rotate()

    def on_break(self, patient):
        LOG.append(("nurse on break", patient.acuity))
"""


@pytest.mark.parametrize("where", ["handler module", "routing module"])
def test_a_nurse_rotated_by_her_metaclass_is_seen_by_the_next_emit(
        tmp_path: Path, build: Build, where: str) -> None:
    """``type(self).rotate()``, a method of the handler's own metaclass, sets ``handle`` on
    the class: called, the next patient meets the nurse on break. Found: the swap check read
    the class's MRO but not its metaclass, the body was inlined and patients 4 and 5 met the
    working nurse (the guard compares the class's method only when the bus is built)."""
    routing, module = load_ward(tmp_path, build, METACLASS, where)
    if build.inline:
        assert inlined(routing.Ward) == set(), reasons(routing.Ward)
    bus = routing.Ward(nurse=module.Nurse())
    for acuity in (1, 3, 4, 5):
        bus.emit(module.Arrival(acuity))
    assert module.LOG == EXPECTED
    assert module.Nurse.shift == "day"
