"""Issue 11: the monolith bus behaves like the hand-written calls for every class shape.

Each test names the item of issue 11 it pins down and runs through the four builds (import
hook or run time, ``inline=True``/``False``, see ``helpers_shapes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build, messages_source, services_of

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.errors import RoutingError

PACKAGE = "shapes_app"


@pytest.fixture(params=BUILDS, ids=lambda b: b.name)
def build(request: pytest.FixtureRequest) -> Any:
    yield request.param
    forget_modules(PACKAGE)


def load(tmp_path: Path, build: Build, handlers: str, routing: str, type_id: int) -> Any:
    modules = {"messages": messages_source(type_id), "handlers": handlers, "routing": routing}
    return load_build(tmp_path, PACKAGE, modules, build)


SHARED_BASE_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A


class Counter(MessageHandler[A]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += msg.value


class Left(Counter):
    pass


class Middle(Counter):
    pass


class Right(Counter):
    pass
"""

SHARED_BASE_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A
from shapes_app.handlers import Left, Middle, Right


@routing_config(inline=INLINE)
class Bus:
    A = [Left, Middle, Right]
"""


def test_item1_three_classes_sharing_an_inherited_handle_each_run_their_own_body(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, SHARED_BASE_HANDLERS, SHARED_BASE_ROUTING, 58101)
    bus = routing.Bus(**services_of(routing.Bus))
    bus.emit_a(routing.A(2))
    bus.emit_a(routing.A(3))
    assert (bus.left.n, bus.middle.n, bus.right.n) == (5, 5, 5)
    assert inlined(routing.Bus) == ({"left", "middle", "right"} if build.inline else set())


COMPREHENSION_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A


class Squares(MessageHandler[A]):
    def __init__(self):
        self.out = []

    def handle(self, msg):
        squares = [i * i for i in range(msg.value)]
        evens = {i for i in squares if i % 2 == 0}
        table = {i: j for i, j in enumerate(squares)}
        self.out.append((sum(squares), len(evens), sum(table), sum(x for x in squares)))
"""

COMPREHENSION_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A
from shapes_app.handlers import Squares


@routing_config(inline=INLINE)
class Bus:
    A = [Squares]
"""


def test_item3_a_handler_with_comprehensions_is_inlined_on_every_python(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, COMPREHENSION_HANDLERS, COMPREHENSION_ROUTING, 58111)
    bus = routing.Bus(**services_of(routing.Bus))
    bus.emit_a(routing.A(5))
    assert bus.squares.out == [(30, 3, 10, 30)]
    assert inlined(routing.Bus) == ({"squares"} if build.inline else set())


STACKED_HANDLERS = """
from mycelium_mono import handles
from shapes_app.messages import A, B


class Both:
    def __init__(self):
        self.seen = []

    @handles(A)
    @handles(B)
    def on_either(self, msg):
        self.seen.append((type(msg).__name__, msg.value))
"""

STACKED_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A, B
from shapes_app.handlers import Both


@routing_config(inline=INLINE)
class Bus:
    A = [Both]
    B = [Both]
"""


def test_item5_stacked_handles_decorators_receive_every_named_type(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, STACKED_HANDLERS, STACKED_ROUTING, 58121)
    bus = routing.Bus(**services_of(routing.Bus))
    bus.emit(routing.A(1))
    bus.emit(routing.B(2))
    assert bus.both.seen == [("A", 1), ("B", 2)]


TWO_BUSES_OF_ONE_NAME = """
from mycelium_mono import routing_config
from shapes_app.messages import A, B
from shapes_app.handlers import Both


@routing_config(inline=INLINE)
class Bus:
    A = [Both]


First = Bus


@routing_config(inline=INLINE)
class Bus:
    B = [Both]
"""


def test_item7_a_second_routing_class_of_the_same_name_is_built_from_its_own_table(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, STACKED_HANDLERS, TWO_BUSES_OF_ONE_NAME, 58131)
    first, second = routing.First(both=routing.Both()), routing.Bus(both=routing.Both())
    first.emit(routing.A(1))
    second.emit(routing.B(2))
    assert (first.both.seen, second.both.seen) == ([("A", 1)], [("B", 2)])
    with pytest.raises(TypeError, match="has no route for A"):
        second.emit(routing.A(3))


EMITTING_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A, B


class Forward(MessageHandler[A]):
    def handle(self, msg):
        self.emit(B(msg.value))


class Sink(MessageHandler[B]):
    def __init__(self):
        self.got = []

    def handle(self, msg):
        self.got.append(msg.value)
"""

EMITTING_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A, B
from shapes_app.handlers import Forward, Sink


@routing_config(inline=INLINE)
class Bus:
    A = [Forward]
    B = [Sink]
"""


def test_item4_one_handler_instance_given_to_a_second_bus_is_refused_naming_both(
    tmp_path: Path, build: Build,
) -> None:
    from mycelium_mono import HandlerOwnedError

    routing = load(tmp_path, build, EMITTING_HANDLERS, EMITTING_ROUTING, 58141)
    shared = routing.Forward()
    first = routing.Bus(forward=shared, sink=routing.Sink())
    with pytest.raises(HandlerOwnedError, match=r"Forward instance .* already owned by Bus "
                       rf"at 0x{id(first):x}; it cannot also be given to Bus at 0x"):
        routing.Bus(forward=shared, sink=routing.Sink())
    first.emit_a(routing.A(4))
    assert first.sink.got == [4]


def test_item4_a_detached_handler_emits_to_the_bus_it_was_given_to_next(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, EMITTING_HANDLERS, EMITTING_ROUTING, 58151)
    shared, first_sink = routing.Forward(), routing.Sink()
    first = routing.Bus(forward=shared, sink=first_sink)
    first.detach()
    second = routing.Bus(forward=shared, sink=routing.Sink())
    second.emit_a(routing.A(5))
    assert (first_sink.got, second.sink.got) == ([], [5])


def test_item4_a_bus_handler_spawned_on_a_service_runtime_is_refused(
    tmp_path: Path, build: Build,
) -> None:
    import asyncio

    from mycelium_mono import HandlerOwnedError, MessageBus, ServiceRuntime

    routing = load(tmp_path, build, EMITTING_HANDLERS, EMITTING_ROUTING, 58161)
    bus = routing.Bus(forward=routing.Forward(), sink=routing.Sink())

    async def spawn() -> None:
        runtime = ServiceRuntime(MessageBus())
        try:
            await runtime.spawn_service(bus.forward)
        finally:
            await runtime.shutdown()

    with pytest.raises(HandlerOwnedError, match=r"already owned by Bus at 0x[0-9a-f]+; it "
                       r"cannot also be given to a ServiceRuntime \(service 'Forward"):
        asyncio.run(spawn())


LOCAL_CLASSES_ROUTING = """
from mycelium_mono import MessageHandler, routing_config
from shapes_app.messages import A
from shapes_app.handlers import Counter

BONUS = 10


class C1(Counter):
    pass


class Own(MessageHandler[A]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += msg.value + BONUS


@routing_config(inline=INLINE)
class Bus:
    A = [C1, Own]
"""


def test_item2_classes_in_the_routing_module_are_inlined_alike_by_hook_and_run_time(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, SHARED_BASE_HANDLERS, LOCAL_CLASSES_ROUTING, 58171)
    bus = routing.Bus(**services_of(routing.Bus))
    bus.emit_a(routing.A(1))
    assert (bus.c1.n, bus.own.n) == (1, 11)
    assert inlined(routing.Bus) == ({"c1", "own"} if build.inline else set())
    assert bus._mycelium_inline_ok if build.inline else True


def test_item2_hook_and_run_time_record_the_same_decision_for_every_handler(
    tmp_path: Path,
) -> None:
    notes: dict[str, list[tuple[str, ...]]] = {}
    for build in (Build("hook", True), Build("runtime", True)):
        routing = load(tmp_path, build, SHARED_BASE_HANDLERS, LOCAL_CLASSES_ROUTING, 58181)
        root = str(tmp_path / build.name)
        notes[build.path] = [tuple(part.replace(root, "<root>") for part in note)
                             for note in routing.Bus.__mycelium_notes__]
    assert notes["hook"] == notes["runtime"]
    assert [(n[1], n[3]) for n in notes["hook"]] == [("c1", "inlined"), ("own", "inlined")]


FAST_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A


class Picker(MessageHandler[A]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += 100 * msg.value
"""

IMPORT_GUARD_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A

try:
    from shapes_app.MODULE import Picker
except ImportError:
    from shapes_app.handlers import Left as Picker


@routing_config(inline=INLINE)
class Bus:
    A = [Picker]
"""


@pytest.mark.parametrize(("module", "expected"), [("fast", 100), ("missing", 1)])
def test_issue15_item7_try_except_import_error_routes_the_branch_python_takes(
    tmp_path: Path, build: Build, module: str, expected: int,
) -> None:
    modules = {"messages": messages_source(58191), "handlers": SHARED_BASE_HANDLERS,
               "fast": FAST_HANDLERS,
               "routing": IMPORT_GUARD_ROUTING.replace("MODULE", module)}
    routing = load_build(tmp_path, PACKAGE, modules, build)
    bus = routing.Bus(**{attr: routing.Picker() for attr in routing.Bus.__mycelium_services__})
    bus.emit(routing.A(1))
    (service,) = (getattr(bus, attr) for attr in routing.Bus.__mycelium_services__)
    assert service.n == expected


FALLBACK_TO_NONE_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A

try:
    from shapes_app.fast import Picker
except ImportError:
    Picker = None


@routing_config(inline=INLINE)
class Bus:
    A = [Picker]
"""


def test_issue15_item7_an_except_branch_that_does_not_run_does_not_make_an_error(
    tmp_path: Path, build: Build,
) -> None:
    modules = {"messages": messages_source(58201), "handlers": SHARED_BASE_HANDLERS,
               "fast": FAST_HANDLERS, "routing": FALLBACK_TO_NONE_ROUTING}
    routing = load_build(tmp_path, PACKAGE, modules, build)
    bus = routing.Bus(picker=routing.Picker())
    bus.emit(routing.A(2))
    assert bus.picker.n == 200


ALIAS_ROUTING = """
from mycelium_mono import routing_config as rc
from shapes_app.messages import A
from shapes_app.handlers import Left


@rc(inline=INLINE)
class Bus:
    A = [Left]
"""


def test_issue15_item7_routing_config_imported_under_another_name_is_rewritten_by_the_hook(
    tmp_path: Path, build: Build,
) -> None:
    # load_build asserts the origin: "import hook" for the hook builds, not a silent fallback.
    routing = load(tmp_path, build, SHARED_BASE_HANDLERS, ALIAS_ROUTING, 58211)
    bus = routing.Bus(left=routing.Left())
    bus.emit(routing.A(3))
    assert bus.left.n == 3
    assert inlined(routing.Bus) == ({"left"} if build.inline else set())


DOCTOR_FACTORY = """
from shapes_app.handlers import Left, Middle, Right
from shapes_app.routing import Bus


class Special(Left):
    pass


def make_bus():
    return Bus(left=Special(), middle=Middle(), right=Right())
"""


def test_doctor_names_why_a_constructed_bus_takes_the_call_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helpers_shapes import write_package

    from mycelium_mono.cli.doctor import diagnose
    from mycelium_mono.cli.target import find_target

    routing = SHARED_BASE_ROUTING.replace("INLINE", "True")
    write_package(tmp_path, PACKAGE, {"messages": messages_source(58221),
                                      "handlers": SHARED_BASE_HANDLERS, "routing": routing,
                                      "factory": DOCTOR_FACTORY})
    monkeypatch.syspath_prepend(str(tmp_path))
    # doctor installs the hook for the package, as its command does; this test takes it out
    # again with its own copy of the finder list.
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    forget_modules(PACKAGE)
    checks = diagnose(find_target(f"{PACKAGE}.routing"), factory=f"{PACKAGE}.factory:make_bus")
    (inlining,) = [c for c in checks if c.name == "inlining"]
    assert inlining.detail.splitlines() == [
        "3 handler calls: 3 inlined, 0 straight-line calls",
        "Bus(...) calls every handler instead: left is a Special, not exactly Left: its "
        "methods are called",
    ]
    assert inlining.verdict.value == "warn"


RAISING_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A


class Counter(MessageHandler[A]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += 1
        if msg.value == 3:
            raise ValueError("three")


class Left(Counter):
    pass


class Middle(Counter):
    pass
"""

RAISING_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A
from shapes_app.handlers import Left, Middle


@routing_config(inline=True)
class Bus:
    A = [Left, Middle]
"""


@pytest.mark.parametrize("path", ["hook", "runtime"])
def test_item6_inlined_code_is_positioned_on_the_routing_line_under_the_handler_name(
    tmp_path: Path, path: str,
) -> None:
    import traceback

    build = Build(path, True)
    routing = load(tmp_path, build, RAISING_HANDLERS, RAISING_ROUTING, 58231)
    bus = routing.Bus(**services_of(routing.Bus))
    with pytest.raises(ExceptionGroup) as info:
        bus.emit_a(routing.A(3))
    first, second = info.value.exceptions
    frame = traceback.extract_tb(first.__traceback__)[-1]
    source = Path(routing.__file__).read_text().splitlines()
    table_line = next(n for n, line in enumerate(source, 1) if "A = [Left, Middle]" in line)
    assert (frame.name, frame.lineno, frame.end_lineno) == ("emit_a", table_line, table_line)
    assert source[table_line - 1][frame.colno:frame.end_colno] == "Left"
    raising = Path(routing.__file__).with_name("handlers.py").read_text().splitlines()
    raise_line = next(n for n, line in enumerate(raising, 1) if "raise ValueError" in line)
    assert f"handlers.py:{raise_line}: raise ValueError(\"three\")" in first.__notes__[0]
    assert second.__notes__ == ["raised in Bus by middle.handle"]  # called by _failed_at
    ends = [end for name in ("emit_a", "_emit_a_calls")
            for _, end, _, _ in getattr(routing.Bus, name).__code__.co_positions()
            if end is not None]
    assert max(ends) <= len(source)


UNMARKED_OVERRIDE_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A, B
from shapes_app.handlers import Both


class Quiet(Both):
    def on_either(self, msg):
        self.seen.append("quiet")


@routing_config(inline=INLINE)
class Bus:
    A = [Quiet]
"""


def test_an_unmarked_override_hides_the_inherited_handles_on_both_paths(
    tmp_path: Path, build: Build,
) -> None:
    from mycelium_mono import RoutingError

    with pytest.raises(RoutingError, match="Quiet does not handle A"):
        load(tmp_path, build, STACKED_HANDLERS, UNMARKED_OVERRIDE_ROUTING, 58241)


SUBCLASS_MARK_HANDLERS = """
from mycelium_mono import handles
from shapes_app.messages import A


class General:
    def __init__(self):
        self.seen = []

    @handles(A)
    def on_a(self, msg):
        self.seen.append("general")


class Specific(General):
    @handles(A)
    def on_specific_a(self, msg):
        self.seen.append("specific")
"""

SUBCLASS_MARK_ROUTING = """
from mycelium_mono import handles, routing_config
from shapes_app.messages import A
from shapes_app.handlers import Specific


class Local(Specific):
    @handles(A)
    def on_local_a(self, msg):
        self.seen.append("local")


@routing_config(inline=INLINE)
class Bus:
    A = [Specific, Local]
"""


def test_a_subclass_mark_for_a_message_beats_its_base_on_every_build(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, SUBCLASS_MARK_HANDLERS, SUBCLASS_MARK_ROUTING, 58251)
    bus = routing.Bus(**services_of(routing.Bus))
    bus.emit_a(routing.A(1))
    assert (bus.specific.seen, bus.local.seen) == (["specific"], ["local"])


HANDLES_ALIAS_ROUTING = """
from mycelium_mono import handles as on, routing_config
from shapes_app.messages import A
from shapes_app.handlers import General


class Local(General):
    @on(A)
    def on_local_a(self, msg):
        self.seen.append("local")


@routing_config(inline=INLINE)
class Bus:
    A = [Local]
"""


def test_handles_imported_under_another_name_marks_methods_on_every_build(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, SUBCLASS_MARK_HANDLERS, HANDLES_ALIAS_ROUTING, 58261)
    bus = routing.Bus(local=routing.Local())
    bus.emit_a(routing.A(1))
    assert bus.local.seen == ["local"]


NO_HANDLE_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A


class Placeholder(MessageHandler[A]):
    def __init__(self):
        self.n = 0
"""

NO_HANDLE_ROUTING = {
    "imported": """
from mycelium_mono import routing_config
from shapes_app.messages import A
from shapes_app.handlers import Placeholder


@routing_config(inline=INLINE)
class Bus:
    A = [Placeholder]
""",
    "local": """
from mycelium_mono import MessageHandler, routing_config
from shapes_app.messages import A


class Placeholder(MessageHandler[A]):
    pass


@routing_config(inline=INLINE)
class Bus:
    A = [Placeholder]
""",
}


@pytest.mark.parametrize("where", sorted(NO_HANDLE_ROUTING))
def test_a_message_handler_without_handle_is_refused_at_import_by_every_build(
    tmp_path: Path, build: Build, where: str,
) -> None:
    # MessageHandler's own `handle` is a placeholder that raises: routing a subclass that never
    # defines one used to pass the check and fail at the first emit, in every build.
    with pytest.raises(RoutingError, match=r"E0001.*Placeholder does not handle A"):
        load(tmp_path, build, NO_HANDLE_HANDLERS, NO_HANDLE_ROUTING[where], 58271)


ASYNC_BASE_HANDLE_HANDLERS = """
from mycelium_mono import MessageHandler, handles
from shapes_app.messages import A


class Base(MessageHandler[A]):
    async def handle(self, msg):
        pass

    @handles(A)
    def on_a(self, msg):
        pass
"""

ASYNC_BASE_HANDLE_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A
from shapes_app.handlers import Base


class Sub(Base):
    def on_a(self, msg):  # unmarked: A falls back to the inherited, async handle
        pass


@routing_config(inline=INLINE)
class Bus:
    A = [Sub]
"""


def test_an_inherited_async_handle_uncovered_by_an_override_is_refused_on_the_sync_path(
    tmp_path: Path, build: Build,
) -> None:
    # The hook took any inherited `handle` for a sync one here, and would have called the
    # coroutine function without awaiting it; run time refused it (E0004). Now both refuse.
    with pytest.raises(RoutingError, match=r"E0004.*Sub\.handle is async"):
        load(tmp_path, build, ASYNC_BASE_HANDLE_HANDLERS, ASYNC_BASE_HANDLE_ROUTING, 58281)



ALIASED_ROUTE_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A, B


class Now(MessageHandler[A]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += msg.value


class Later(MessageHandler[B]):
    def __init__(self):
        self.n = 0

    async def handle(self, msg):
        self.n += msg.value
"""

ALIASED_ROUTE_ROUTING = """
from mycelium_mono import routing_config as rc, route as r
from shapes_app.messages import A, B
from shapes_app.handlers import Now, Later


@rc(inline=INLINE)
class Bus:
    A = r(sync=[Now])
    B = r(background=[Later])
"""


def test_an_aliased_route_builds_and_a_side_without_handlers_is_left_out(
    tmp_path: Path, build: Build,
) -> None:
    # `route as r` was E0007 ("must be a list of classes") in both builds; and an emit whose
    # background side is empty queued an empty coroutine, so it needed a running event loop.
    routing = load(tmp_path, build, ALIASED_ROUTE_HANDLERS, ALIASED_ROUTE_ROUTING, 58291)
    bus = routing.Bus(**services_of(routing.Bus))
    bus.emit_a(routing.A(4))  # no event loop here, and none needed: nothing to queue
    assert bus.now.n == 4

    async def emit_b() -> None:
        bus.emit_b(routing.B(5))  # background only: queued, nothing runs yet
        assert bus.later.n == 0
        await bus.background.drain()

    asyncio.run(emit_b())
    assert bus.later.n == 5


DETACH_HANDLERS = """
from mycelium_mono import MessageHandler
from shapes_app.messages import A, B, C

SEEN = []


class Forward(MessageHandler[A]):
    def handle(self, msg):
        self.emit(B(msg.value))


class Quiet(MessageHandler[A]):
    # Never touches self: an inlined copy of this body reads nothing a detached bus could refuse.
    def handle(self, msg):
        SEEN.append(msg.value)


class Sink(MessageHandler[B]):
    def __init__(self):
        self.got = []

    def handle(self, msg):
        self.got.append(msg.value)


class Tally(MessageHandler[C]):
    def __init__(self):
        self.n = 0

    def handle(self, msg):
        self.n += msg.value


class Later(MessageHandler[C]):
    def __init__(self):
        self.got = []

    async def handle(self, msg):
        self.got.append(msg.value)
"""

DETACH_ROUTING = """
from mycelium_mono import route, routing_config
from shapes_app.messages import A, B, C
from shapes_app.handlers import Forward, Later, Quiet, Sink, Tally


@routing_config(inline=INLINE)
class Bus:
    A = [Quiet, Forward]
    B = [Sink]
    C = route(sync=[Tally], background=[Later])
"""


def _detach_bus(routing: Any, **services: Any) -> Any:
    made = {"quiet": routing.Quiet(), "forward": routing.Forward(), "sink": routing.Sink(),
            "tally": routing.Tally(), "later": routing.Later()}
    return routing.Bus(**{**made, **services})


def test_a_detached_bus_refuses_every_emit_naming_who_owns_its_handlers_now(
    tmp_path: Path, build: Build,
) -> None:
    from mycelium_mono.handlers import BusDetachedError

    routing = load(tmp_path, build, DETACH_HANDLERS, DETACH_ROUTING, 58501)
    if build.inline:
        assert {"quiet", "forward"} <= inlined(routing.Bus)
    forward, first_sink = routing.Forward(), routing.Sink()
    errors: list[Any] = []
    first = _detach_bus(routing, forward=forward, sink=first_sink,
                        on_error=lambda *args: errors.append(args))
    seen = sys.modules[f"{PACKAGE}.handlers"].SEEN
    first.emit_a(routing.A(1))
    assert (seen, first_sink.got) == ([1], [1])
    first.detach()
    first.detach()  # twice is once
    name = f"Bus at 0x{id(first):x}"
    with pytest.raises(BusDetachedError, match=rf"^{name} was detached \(bus.detach\(\)\) and "
                       r"delivers nothing; its handlers now belong to no bus\nhelp: emit on "):
        first.emit_a(routing.A(2))
    second = _detach_bus(routing, forward=forward)
    for emit in (lambda: first.emit_a(routing.A(3)), lambda: first.emit(routing.A(3)),
                 lambda: first.emit_b(routing.B(3))):
        with pytest.raises(BusDetachedError, match=rf"forward → Bus at 0x{id(second):x}, "
                           r"sink → no bus") as caught:
            emit()
        assert caught.value.__context__ is None  # one refusal, not one chained to another
    # Nothing ran: not the inlined body that reads no service, not a handler, not on_error.
    assert (seen, first_sink.got, second.sink.got, errors) == ([1], [1], [], [])
    second.emit_a(routing.A(4))
    assert (seen, second.sink.got) == ([1, 4], [4])
    assert repr(first) == "Bus(<detached>)"


def test_a_detached_bus_refuses_the_background_path_without_queueing(
    tmp_path: Path, build: Build,
) -> None:
    from mycelium_mono.handlers import BusDetachedError

    routing = load(tmp_path, build, DETACH_HANDLERS, DETACH_ROUTING, 58511)
    later = routing.Later()
    bus = _detach_bus(routing, later=later)
    tally = bus.tally

    async def emit_then_detach() -> None:
        bus.emit_c(routing.C(1))
        backlog = bus.background
        await backlog.drain()
        bus.detach()
        with pytest.raises(BusDetachedError, match="its handlers now belong to no bus") as caught:
            bus.emit_c(routing.C(2))  # the sync side, then the background submit in `finally`
        assert caught.value.__context__ is None
        with pytest.raises(BusDetachedError):
            bus.background.submit(bus.emit_c_async, routing.C(3))
        assert len(backlog) == 0
        await backlog.drain()

    asyncio.run(emit_then_detach())
    assert (tally.n, later.got) == (1, [1])


def test_a_detached_bus_takes_no_new_service(tmp_path: Path, build: Build) -> None:
    from mycelium_mono.handlers import BusDetachedError

    routing = load(tmp_path, build, DETACH_HANDLERS, DETACH_ROUTING, 58521)
    bus = _detach_bus(routing)
    bus.detach()
    sink = routing.Sink()
    with pytest.raises(BusDetachedError):
        bus.sink = sink
    _detach_bus(routing, sink=sink)  # and the one refused stays free


def test_a_bus_refused_for_an_owned_service_leaves_the_others_free(
    tmp_path: Path, build: Build,
) -> None:
    from mycelium_mono import HandlerOwnedError

    routing = load(tmp_path, build, DETACH_HANDLERS, DETACH_ROUTING, 58531)
    owner = _detach_bus(routing)
    forward = routing.Forward()
    with pytest.raises(HandlerOwnedError):
        _detach_bus(routing, forward=forward, sink=owner.sink)
    bus = _detach_bus(routing, forward=forward)  # was owned by the bus that was never built
    bus.emit_a(routing.A(5))
    assert bus.sink.got == [5]


def test_a_replaced_service_receives_and_emits_and_the_old_one_is_free(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, DETACH_HANDLERS, DETACH_ROUTING, 58541)
    old_forward, old_sink = routing.Forward(), routing.Sink()
    bus = _detach_bus(routing, forward=old_forward, sink=old_sink)
    bus.emit_a(routing.A(1))
    new_forward, new_sink = routing.Forward(), routing.Sink()
    bus.forward = new_forward
    bus.emit_a(routing.A(2))
    assert old_sink.got == [1, 2]
    bus.sink = new_sink
    bus.emit_a(routing.A(3))
    assert (old_sink.got, new_sink.got) == ([1, 2], [3])
    assert (bus.forward, bus.sink) == (new_forward, new_sink)
    if build.inline:
        assert bus._mycelium_inline_ok  # exact types: the inlined path is still taken
    # The old instances are free: another bus takes them, and their emits reach it.
    other = _detach_bus(routing, forward=old_forward, sink=old_sink)
    other.emit_a(routing.A(6))
    assert (old_sink.got, new_sink.got) == ([1, 2, 6], [3])


def test_a_replacement_of_the_wrong_type_or_owned_elsewhere_leaves_the_bus_unchanged(
    tmp_path: Path, build: Build,
) -> None:
    from mycelium_mono import HandlerOwnedError

    routing = load(tmp_path, build, DETACH_HANDLERS, DETACH_ROUTING, 58551)
    sink = routing.Sink()
    bus = _detach_bus(routing, sink=sink)
    with pytest.raises(TypeError) as at_init:
        _detach_bus(routing, sink="not a Sink")
    with pytest.raises(TypeError) as at_set:
        bus.sink = "not a Sink"
    assert str(at_set.value) == str(at_init.value)
    assert "argument 'sink' must be a Sink instance, got str" in str(at_set.value)
    other = _detach_bus(routing)
    with pytest.raises(HandlerOwnedError, match=rf"already owned by Bus at 0x{id(other):x}; "
                       rf"it cannot also be given to Bus at 0x{id(bus):x}"):
        bus.sink = other.sink
    assert bus.sink is sink
    if build.inline:
        assert bus._mycelium_inline_ok
    bus.emit_a(routing.A(7))
    assert (sink.got, other.sink.got) == ([7], [])


def test_a_service_replaced_by_a_subclass_is_called_not_inlined(
    tmp_path: Path, build: Build,
) -> None:
    routing = load(tmp_path, build, DETACH_HANDLERS, DETACH_ROUTING, 58561)

    class Doubling(routing.Forward):  # type: ignore[misc,name-defined]
        def handle(self, msg: Any) -> None:
            self.emit(routing.B(2 * msg.value))

    bus = _detach_bus(routing)
    bus.forward = Doubling()
    bus.emit_a(routing.A(4))
    assert bus.sink.got == [8]
    if build.inline:
        assert not bus._mycelium_inline_ok


FAILURE_CONTEXT_HANDLERS = """
import sys
from mycelium_mono import MessageHandler
from shapes_app.messages import A

SEEN = []


class First(MessageHandler[A]):
    def handle(self, msg):
        raise ValueError("first")


class Second(MessageHandler[A]):
    def handle(self, msg):
        SEEN.append(("second", sys.exception()))
        try:
            raise KeyError("second")
        except KeyError:
            SEEN.append(("second, in its own except", sys.exception()))
        SEEN.append(("second, after its except", sys.exception()))


class Third(MessageHandler[A]):
    def handle(self, msg):
        SEEN.append(("third", sys.exception()))
        raise RuntimeError("third")
"""

FAILURE_CONTEXT_ROUTING = """
from mycelium_mono import routing_config
from shapes_app.messages import A
from shapes_app.handlers import First, Second, Third


@routing_config(inline=INLINE)
class Bus:
    A = [First, Second, Third]
"""


def hand_written_failure_context(handlers: Any) -> list[tuple[str, Any]]:
    """What the same three handlers see when called by hand, one after the other."""
    handlers.SEEN.clear()
    for handler in (handlers.First(), handlers.Second(), handlers.Third()):
        with contextlib.suppress(Exception):
            handler.handle(None)
    return [(where, type(exc)) for where, exc in handlers.SEEN]


@pytest.mark.parametrize("on_error", [False, True], ids=["group", "on_error"])
def test_a_handler_after_a_failed_one_does_not_run_inside_its_except(
    tmp_path: Path, build: Build, on_error: bool,
) -> None:
    # Called by hand, the second and third handlers run after the first one's `except` has
    # ended: sys.exception() is None in them, and nothing they raise is chained to it.
    routing = load(tmp_path, build, FAILURE_CONTEXT_HANDLERS, FAILURE_CONTEXT_ROUTING, 58571)
    handlers = sys.modules[f"{PACKAGE}.handlers"]
    reported: list[tuple[Exception, Any]] = []

    def record(exc: Exception, where: str, msg: Any) -> None:
        reported.append((exc, sys.exception()))

    expected = hand_written_failure_context(handlers)
    handlers.SEEN.clear()
    kwargs = {"on_error": record} if on_error else {}
    bus = routing.Bus(**services_of(routing.Bus), **kwargs)
    if on_error:
        bus.emit_a(routing.A(1))
        assert [type(exc) for exc, _ in reported] == [ValueError, RuntimeError]
        assert [during for _, during in reported] == [None, None]
        third = reported[1][0]
    else:
        with pytest.raises(ExceptionGroup) as info:
            bus.emit_a(routing.A(1))
        assert [type(e) for e in info.value.exceptions] == [ValueError, RuntimeError]
        assert info.value.__context__ is None
        third = info.value.exceptions[1]
    assert [(where, type(exc)) for where, exc in handlers.SEEN] == expected
    assert expected == [("second", type(None)), ("second, in its own except", KeyError),
                        ("second, after its except", type(None)), ("third", type(None))]
    assert third.__context__ is None
