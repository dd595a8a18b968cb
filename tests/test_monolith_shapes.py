"""Issue 11: the monolith bus behaves like the hand-written calls for every class shape.

Each test names the item of issue 11 it pins down and runs through the four builds (import
hook or run time × ``inline=True``/``False``, see ``helpers_shapes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers_shapes import BUILDS, Build, inlined, load_build, messages_source, services_of

from mycelium_mono.pytest_plugin import forget_modules

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
