"""A stranger's attack on the inliner with the shapes people write in handlers every day.

Each scenario writes a small ``depot`` package (messages, handlers, routing), imports its
routing module by the four builds (import hook or run time, ``inline=True``/``False``;
``helpers_shapes``) and compares what the bus did with plain hand-written calls: each routed
handler's method called in order, failures gathered, a handler's ``self.emit`` running the
receivers before its next line. The log holds every side effect in order; failures are
compared by their leaves' types and texts.

The rule under test: the inliner never runs different code than calling the handler would,
and both paths accept the same routing modules. Found and fixed here:

- a handler that formats the traceback it caught (``traceback.format_exc()``,
  ``extract_tb(e.__traceback__)``, ``e.__traceback__.tb_frame``) was inlined, and its text
  named the routing module's ``emit_job`` where the call names ``handle``;
- a routing-module class binding ``handle`` other than by a plain top-level ``def``
  (``handle = Base.handle``, ``handle = record``, a ``def`` in an ``if``) was refused by the
  hook with E0001 ("handles: nothing") while the run-time build, and Python, ran it;
- with a ``def handle`` inside an ``if`` over a base that has its own ``handle``, the base's
  body was inlined and noted as what the class runs; the guard then kept the whole bus on its
  called path, the other handlers' inlining lost.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build

from mycelium_mono.handlers import attach_emitter
from mycelium_mono.pytest_plugin import forget_modules

PACKAGE = "depot"

MESSAGES = """from mycelium_mono import message, I64

@message(type_id=64991, topic="depot.job")
class Job:
    value: I64

@message(type_id=64992, topic="depot.done")
class Done:
    value: I64
"""

HEAD = """
from mycelium_mono import MessageHandler, handles
from depot.messages import Job, Done

LOG = []
"""

ROUTING_HEAD = """
from mycelium_mono import routing_config, MessageHandler, handles
from depot.messages import Job, Done  # noqa: F401
from depot.handlers import *  # noqa: F403
from depot.handlers import LOG
"""


def routing(table: str, classes: str = "") -> str:
    return ROUTING_HEAD + classes + "\n\n@routing_config(inline=INLINE)\nclass Depot:\n" + table


def describe(exc: BaseException) -> Any:
    if isinstance(exc, BaseExceptionGroup):
        return ("group", tuple(describe(e) for e in exc.exceptions))
    return (type(exc).__name__, str(exc))


class HandWritten:
    """The routed methods called by hand in routing order, failures gathered as a group."""

    def __init__(self, bus_cls: type, services: dict[str, Any]) -> None:
        self.routes: dict[type, str] = bus_cls.__mycelium_routes__  # type: ignore[attr-defined]
        self.calls: dict[str, Any] = bus_cls.__mycelium_calls__  # type: ignore[attr-defined]
        self.services = services
        for service in {id(s): s for s in services.values()}.values():
            attach_emitter(service, self.emit)

    def emit(self, msg: Any) -> None:
        failures = []
        for attr, method in self.calls[self.routes[type(msg)]]:
            try:
                getattr(self.services[attr], method)(msg)
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise ExceptionGroup("by hand", failures)


def drive(emit: Any, module: ModuleType, messages: list[tuple[str, int]]) -> list[Any]:
    """Emit each message; the log, with each emit's outcome, in order."""
    messages_module = sys.modules[f"{PACKAGE}.messages"]
    module.LOG.clear()
    for kind, value in messages:
        try:
            emit(getattr(messages_module, kind)(value))
            module.LOG.append(("emit ok", kind, value))
        except Exception as exc:
            module.LOG.append(("emit failed", kind, value, describe(exc)))
    log = list(module.LOG)
    module.LOG.clear()
    return log


def services(bus_cls: type) -> dict[str, Any]:
    return {attr: cls() for attr, cls in bus_cls.__mycelium_services__.items()}  # type: ignore[attr-defined]


def by_hand_and_by_bus(root: Path, build: Build, handlers: str, routing_text: str,
                       messages: list[tuple[str, int]]) -> tuple[list[Any], list[Any], Any]:
    modules = {"messages": MESSAGES, "handlers": HEAD + handlers, "routing": routing_text}
    module = load_build(root, PACKAGE, modules, build)
    log_module = sys.modules[f"{PACKAGE}.handlers"]
    bus_cls = module.Depot
    hand = HandWritten(bus_cls, services(bus_cls))
    expected = drive(hand.emit, log_module, messages)
    bus = bus_cls(**services(bus_cls))
    got = drive(bus.emit, log_module, messages)
    return expected, got, bus


def reasons(bus_cls: type) -> dict[str, str]:
    return {attr: reason for _, attr, _, _, reason in bus_cls.__mycelium_notes__}  # type: ignore[attr-defined]


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


# --- a handler that reads the traceback it caught -------------------------------------------

TRACEBACK_READS = {
    "traceback.format_exc()": """
        except ZeroDivisionError:
            text = traceback.format_exc()
            LOG.append(("in handle", ", in handle\\n" in text, "emit_job" in text))""",
    "extract_tb(e.__traceback__)": """
        except ZeroDivisionError as e:
            LOG.append(("frame", traceback.extract_tb(e.__traceback__)[-1].name))""",
    "e.__traceback__.tb_frame": """
        except ZeroDivisionError as e:
            LOG.append(("frame", e.__traceback__.tb_frame.f_code.co_name))""",
    "from traceback import print_exc": """
        except ZeroDivisionError:
            out = io.StringIO()
            print_exc(file=out)
            LOG.append(("in handle", ", in handle\\n" in out.getvalue()))""",
}

READER = """
import io
import traceback
from traceback import print_exc


class Clerk(MessageHandler[Job]):
    def handle(self, job):
        try:
            LOG.append(("share", 10 // job.value)){catch}


class Porter(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("porter", job.value))
"""


@pytest.mark.parametrize("where", ["handler module", "routing module"])
@pytest.mark.parametrize("shape", list(TRACEBACK_READS))
def test_a_handler_reading_its_caught_traceback_sees_its_own_frame(
        tmp_path: Path, build: Build, shape: str, where: str) -> None:
    """The clerk logs the traceback of a ZeroDivisionError it caught. Called, the traceback's
    last frame is ``handle`` in the handler's file. Found: the body was inlined (the frame
    check knew ``_getframe``, ``inspect.stack`` and ``traceback.format_stack``, not the
    ``_tb``/``_exc`` family nor ``__traceback__``), and the log said ``emit_job``: the
    frame was the routing module's. Now such a body keeps its call; the porter next to it is
    still inlined."""
    clerk = READER.format(catch=TRACEBACK_READS[shape])
    if where == "handler module":
        handlers, routing_text = clerk, routing("    Job = [Clerk, Porter]\n")
    else:
        handlers, routing_text = "", routing("    Job = [Clerk, Porter]\n", clerk)
    expected, got, bus = by_hand_and_by_bus(tmp_path, build, handlers, routing_text,
                                            [("Job", 0), ("Job", 5), ("Job", 0)])
    assert expected[0] in {("in handle", True, False), ("frame", "handle"), ("in handle", True)}
    assert got == expected
    if build.inline:
        assert inlined(type(bus)) == {"porter"}, reasons(type(bus))
        assert "inspects frames" in reasons(type(bus))["clerk"]


# --- handle bound other than by a plain def in a routing-module class -------------------------

BOUND_HANDLES = {
    "handle = Base.handle": """
class Base:
    def handle(self, job):
        LOG.append(("base", type(self).__name__, job.value))


class Clerk(MessageHandler[Job]):
    handle = Base.handle
""",
    "handle = record (a module function)": """
def record(self, job):
    LOG.append(("record", type(self).__name__, job.value))


class Clerk(MessageHandler[Job]):
    handle = record
""",
    "handle = lambda": """
class Clerk(MessageHandler[Job]):
    handle = lambda self, job: LOG.append(("lambda", job.value))  # noqa: E731
""",
    "def handle in an if/else": """
import os


class Clerk(MessageHandler[Job]):
    if os.environ.get("DEPOT_NEVER_SET_THIS"):
        def handle(self, job):
            LOG.append(("fast", job.value))
    else:
        def handle(self, job):
            LOG.append(("plain", job.value))
""",
    "def handle in a try": """
class Clerk(MessageHandler[Job]):
    try:
        def handle(self, job):
            LOG.append(("tried", job.value))
    except NameError:
        pass
""",
}

PORTER = """
class Porter(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("porter", job.value))
"""


@pytest.mark.parametrize("shape", list(BOUND_HANDLES))
def test_a_routing_module_class_binding_handle_by_assignment_imports_by_every_build(
        tmp_path: Path, build: Build, shape: str) -> None:
    """Python and the run-time build run these classes as handlers of ``Job`` (the class has
    a ``handle``). Found: the import hook, which reads the routing module before it runs,
    counted only top-level ``def handle`` and refused the module with E0001 ("Clerk does not
    handle Job; Clerk handles: nothing"). Now any binding of ``handle`` in the class body
    is read as a sync ``handle`` (called, not inlined), checked against the live class when the
    generated class is created."""
    routing_text = routing("    Job = [Clerk, Porter]\n", BOUND_HANDLES[shape] + PORTER)
    expected, got, bus = by_hand_and_by_bus(tmp_path, build, "", routing_text,
                                            [("Job", 1), ("Job", 2)])
    assert got == expected
    assert len(expected) == 6  # two handlers and the outcome, twice
    if build.inline:
        assert inlined(type(bus)) == {"porter"}, reasons(type(bus))
        assert "not a plain `def`" in reasons(type(bus))["clerk"]


ASYNC_BOUND = """
class Base:
    async def handle(self, job):
        LOG.append(("async", job.value))


class Clerk(MessageHandler[Job]):
    handle = Base.handle
"""


def test_an_async_handle_bound_by_assignment_on_the_sync_path_fails_the_import(
        tmp_path: Path, build: Build) -> None:
    """The hook cannot see that ``handle = Base.handle`` is a coroutine function before the
    module runs: it reads a sync ``handle``, and the generated class checks it against the live
    class, so the import fails instead of every emit dropping an un-awaited coroutine (the
    run-time build says E0004)."""
    modules = {"messages": MESSAGES, "handlers": HEAD,
               "routing": routing("    Job = [Clerk]\n", ASYNC_BOUND)}
    with pytest.raises(Exception, match="async") as caught:
        load_build(tmp_path, PACKAGE, modules, build)
    assert type(caught.value).__name__ in {"RoutingError", "TypeError"}


BRANCH_OVER_BASE = """
import os
from depot.handlers import Desk


class Clerk(Desk):
    if os.environ.get("DEPOT_NEVER_SET_THIS"):
        def handle(self, job):
            LOG.append(("fast", job.value))
    else:
        def handle(self, job):
            LOG.append(("own", job.value))
"""

DESK = """
class Desk(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("desk", job.value))
"""


def test_a_def_in_an_if_over_a_base_with_handle_is_no_reason_to_drop_every_inlining(
        tmp_path: Path, build: Build) -> None:
    """``Clerk`` binds ``handle`` in an ``if`` over ``Desk``, which has its own. Found: the
    inliner read only top-level statements, skipped Clerk and inlined ``Desk.handle``, noted
    "from handlers.py" as what Clerk runs; the run-time guard saw the class's method was not
    that one and kept the *whole* bus on its called path (the porter's inlining lost too).
    Now Clerk is a call, the porter is inlined, and the guard passes."""
    routing_text = routing("    Job = [Clerk, Porter]\n", BRANCH_OVER_BASE + PORTER)
    expected, got, bus = by_hand_and_by_bus(tmp_path, build, DESK, routing_text,
                                            [("Job", 1), ("Job", 2)])
    assert got == expected
    assert ("own", 1) in expected
    if build.inline:
        assert inlined(type(bus)) == {"porter"}, reasons(type(bus))
        assert bus._mycelium_inline_ok, "the guard kept the bus on its called path"


# --- everyday shapes: every build behaves as the plain calls ---------------------------------

EVERYDAY: dict[str, tuple[str, str, list[tuple[str, int]]]] = {
    "__slots__ handler, counter in a slot": ("""
class Tally(MessageHandler[Job]):
    __slots__ = ("n",)

    def __init__(self):
        super().__init__()
        self.n = 0

    def handle(self, job):
        self.n += job.value
        LOG.append(("tally", self.n))
""", "    Job = [Tally]\n", [("Job", 1), ("Job", 2)]),
    "del and except-as and match-as rebinding the message parameter": ("""
class Drop(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("drop", job.value))
        del job


class Catch(MessageHandler[Job]):
    def handle(self, job):
        try:
            raise KeyError(job.value)
        except KeyError as job:
            LOG.append(("caught", str(job)))


class Match(MessageHandler[Job]):
    def handle(self, job):
        match job.value:
            case 2 as job:
                LOG.append(("two", job))
            case _:
                LOG.append(("other", job.value))


class After(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("after", job.value))
""", "    Job = [Drop, Catch, Match, After]\n", [("Job", 1), ("Job", 2)]),
    "locals named like the generated code's": ("""
class Shadow(MessageHandler[Job]):
    def handle(self, job):
        msg = "m"; bus = "b"; _h0 = 0; h1 = 1; h2 = 2; exc = "e"; failure = "f"
        returned_h1 = "r"; returning_h1 = "g"
        LOG.append((msg, bus, _h0, h1, h2, exc, failure, returned_h1, returning_h1, job.value))


class Rebind(MessageHandler[Job]):
    def handle(self, msg):
        self = "not me"
        LOG.append(("rebind", msg.value, self))


class After(MessageHandler[Job]):
    def handle(self, msg):
        LOG.append(("after", msg.value, type(self).__name__))
""", "    Job = [Shadow, Rebind, After]\n", [("Job", 1)]),
    "return in a for, in a try/finally, in a with": ("""
import contextlib


@contextlib.contextmanager
def shift(tag):
    LOG.append(("clock in", tag))
    try:
        yield tag
    finally:
        LOG.append(("clock out", tag))


class Picker(MessageHandler[Job]):
    def handle(self, job):
        with shift("pick"):
            for shelf in range(3):
                try:
                    if shelf == job.value:
                        return LOG.append(("found", shelf))
                finally:
                    LOG.append(("checked", shelf))
            else:
                LOG.append("not on any shelf")
        LOG.append("after the shift")


class After(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("after", job.value))
""", "    Job = [Picker, After]\n", [("Job", 1), ("Job", 7)]),
    "raise mid-chain: what the later handlers see": ("""
import sys


class First(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("first", job.value))
        if job.value == 2:
            raise ValueError("two")


class Second(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("second", job.value, sys.exception()))
        if job.value >= 2:
            raise KeyError(job.value)


class Third(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("third", job.value, sys.exception()))
""", "    Job = [First, Second, Third]\n", [("Job", 1), ("Job", 2), ("Job", 3)]),
    "re-entrant emits, a failure in the nested one": ("""
class Splitter(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("split in", job.value))
        if job.value > 0:
            self.emit(Job(job.value - 1))
            self.emit(Done(job.value))
        LOG.append(("split out", job.value))


class Closer(MessageHandler[Done]):
    def handle(self, done):
        LOG.append(("close", done.value))
        if done.value == 2:
            raise ValueError("two")


class Watcher(MessageHandler[Job]):
    def handle(self, job):
        LOG.append(("watch", job.value))
""", "    Job = [Splitter, Watcher]\n    Done = [Closer]\n", [("Job", 3)]),
    "one instance routed for two types": ("""
class Ledger:
    def __init__(self):
        self.n = 0

    @handles(Job)
    def on_job(self, job):
        self.n += 1
        LOG.append(("job", self.n))

    @handles(Done)
    def on_done(self, done):
        self.n += 10
        LOG.append(("done", self.n))
""", "    Job = [Ledger]\n    Done = [Ledger]\n", [("Job", 1), ("Done", 1), ("Job", 1)]),
    "walrus, walrus in a comprehension, genexp over a later-rebound local, del": ("""
class Walrus(MessageHandler[Job]):
    def handle(self, job):
        doubled = [last := v * 2 for v in range(job.value)]
        LOG.append((doubled, last if job.value else None))
        if (n := job.value) > 1:
            LOG.append(("n", n))
        k = job.value
        lazy = (k * i for i in range(3))
        k = 100
        LOG.append(list(lazy))
        x = 1
        del x
        if job.value == 2:
            LOG.append(x)
""", "    Job = [Walrus]\n", [("Job", 0), ("Job", 1), ("Job", 2)]),
    "property, method taken from another class, decorators, static and class methods": ("""
import dataclasses
import functools


def twice(f):
    @functools.wraps(f)
    def inner(self, job):
        f(self, job)
        f(self, job)
    return inner


def tagged(f):
    f.tagged = True
    return f


class Counter:
    def __init__(self):
        self.__n = 0

    def handle(self, job):
        self.__n += job.value
        LOG.append(("borrowed", self.__n))


class Reads(MessageHandler[Job]):
    def __init__(self):
        super().__init__()
        self.reads = 0

    @property
    def factor(self):
        self.reads += 1
        return self.reads

    def handle(self, job):
        LOG.append(("property", job.value * self.factor))


class Borrow(MessageHandler[Job]):
    def __init__(self):
        super().__init__()
        self._Counter__n = 100

    handle = Counter.handle


class Twice(MessageHandler[Job]):
    @twice
    def handle(self, job):
        LOG.append(("twice", job.value))


class Tagged(MessageHandler[Job]):
    @tagged
    def handle(self, job):
        LOG.append(("tagged", job.value))


class Static(MessageHandler[Job]):
    @staticmethod
    def handle(job):
        LOG.append(("static", job.value))


class Klass(MessageHandler[Job]):
    @classmethod
    def handle(cls, job):
        LOG.append((cls.__name__, job.value))


class Mixin:
    def handle(self, job):
        LOG.append(("mixin", job.value))


class Super(Mixin, MessageHandler[Job]):
    def handle(self, job):
        super().handle(job)
        LOG.append(("super", job.value))


@dataclasses.dataclass(slots=True)
class Slotted:
    n: int = 0

    @handles(Job)
    def handle(self, job):
        self.n += job.value
        LOG.append(("slotted", self.n))
""", "    Job = [Reads, Borrow, Twice, Tagged, Static, Klass, Super, Slotted]\n",
        [("Job", 1), ("Job", 2)]),
    "with whose __exit__ swallows, except* in the body": ("""
class Swallow:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        LOG.append(("exit", kind.__name__ if kind else None))
        return kind is KeyError


class Guarded(MessageHandler[Job]):
    def handle(self, job):
        with Swallow():
            if job.value == 1:
                raise KeyError(1)
            if job.value == 2:
                raise ValueError(2)
            return
        LOG.append("after the with")


class Sorter(MessageHandler[Job]):
    def handle(self, job):
        try:
            raise ExceptionGroup("mixed", [ValueError(1), KeyError(2)])
        except* ValueError as group:
            LOG.append(("values", len(group.exceptions)))
        except* KeyError as group:
            LOG.append(("keys", len(group.exceptions)))
""", "    Job = [Guarded, Sorter]\n", [("Job", 1), ("Job", 2), ("Job", 3)]),
}


@pytest.mark.parametrize("shape", list(EVERYDAY))
def test_everyday_handler_shapes_behave_as_plain_calls(tmp_path: Path, build: Build,
                                                       shape: str) -> None:
    """Every build logs what the hand-written calls log: side effects in order, each
    handler's state, each emit's failures (types and texts)."""
    handlers, table, messages = EVERYDAY[shape]
    expected, got, _ = by_hand_and_by_bus(tmp_path, build, handlers, routing(table), messages)
    assert got == expected
