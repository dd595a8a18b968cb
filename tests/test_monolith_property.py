"""The differential property test of issue 11: every class shape, four builds, hand-written calls.

Hypothesis draws class *structures* (``shapes_model.shapes``): 2-5 handler classes in the
handler module or the routing module, inheritance chains up to depth 4, a base shared by
several routed classes, a mixin overriding a helper, ``MessageHandler[X]`` roots with
``handle`` overridden or inherited, ``@handles`` methods, a class routed for several
messages, handlers that raise and handlers that emit downstream. Each shape is imported by
the four builds (import hook or run time, ``inline=True``/``False``) and replayed against
a hand-written dispatcher (``h.method(msg)`` for each routed handler, failures gathered into
an ``ExceptionGroup``); all five must leave the same log of calls, the same state and the
same failures (type, message, which handler, nesting).

Measured on the shared 2-core box: 40 examples (four imports each) take 8-20 s on 3.11; 250
examples took 45-74 s on 3.11, 3.12 and 3.13, all passing. Reverting the fix of issue 11.1
made the 40-example run fail (and shrink for about 3 minutes). The
corpus of shrunk failures found so far is ``tests/corpus/class_shapes.json``; each entry is
replayed first, by ``test_corpus_shape_behaves_like_hand_written_calls``. A new failure
prints its shape as one JSON line to append there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers_shapes import BUILDS, load_build, messages_source
from hypothesis import HealthCheck, given, settings
from shapes_model import Shape, handled, modules, shape_from_json, shape_to_json, shapes

from mycelium_mono.handlers import attach_emitter
from mycelium_mono.messages import snake_case
from mycelium_mono.pytest_plugin import forget_modules

PACKAGE = "shapes_app"
TYPE_ID = 58301
CORPUS = Path(__file__).parent / "corpus" / "class_shapes.json"


@dataclass(frozen=True)
class Observation:
    log: tuple[Any, ...]
    state: tuple[tuple[str, int], ...]
    outcomes: tuple[Any, ...]


def describe(exc: BaseException) -> Any:
    """A failure as data: type, text, the handler it is attributed to, and its members."""
    where = next((n for n in getattr(exc, "__notes__", ()) if n.startswith("raised in ")), None)
    if isinstance(exc, BaseExceptionGroup):
        return ("group", exc.message, where, tuple(describe(e) for e in exc.exceptions))
    return (type(exc).__name__, str(exc), where)


class HandWritten:
    """What a person writes instead of a bus: each routed handler's method, in order."""

    def __init__(self, routing: ModuleType, shape: Shape) -> None:
        self.instances = {snake_case(c.name): getattr(routing, c.name)() for c in shape.classes}
        for instance in self.instances.values():
            attach_emitter(instance, self.emit)
        self.routes = {
            message: [(snake_case(shape.classes[i].name), handled(shape, i)[message])
                      for i in picked]
            for message, picked in shape.routes
        }

    def emit(self, msg: Any) -> None:
        name = type(msg).__name__
        failures: list[tuple[str, Exception]] = []
        for attr, method in self.routes[name]:
            try:
                getattr(self.instances[attr], method)(msg)
            except Exception as exc:
                exc.add_note(f"raised in Bus by {attr}.{method}")
                failures.append((f"{attr}.{method}", exc))
        if failures:
            names = ", ".join(where for where, _ in failures)
            raise ExceptionGroup(f"Bus.emit_{snake_case(name)}: {len(failures)} handler(s) "
                                 f"failed ({names})", [exc for _, exc in failures])


def replay(routing: ModuleType, shape: Shape, target: Any, instances: dict[str, Any]
           ) -> Observation:
    routing.LOG.clear()
    outcomes = []
    for message, value in shape.emits:
        try:
            target.emit(getattr(routing, message)(value))
            outcomes.append(None)
        except ExceptionGroup as group:
            outcomes.append(describe(group))
    state = tuple(sorted((attr, inst.n) for attr, inst in instances.items()))
    return Observation(tuple(routing.LOG), state, tuple(outcomes))


def decisions(routing: ModuleType, root: Path, build: Any) -> tuple[Any, ...]:
    """What the build decided per handler (``show`` prints it), its own directory elided."""
    where = str(root / build.name)
    return tuple(tuple(part.replace(where, "<root>") for part in note)
                 for note in routing.Bus.__mycelium_notes__)


def observe_build(root: Path, shape: Shape, build: Any
                  ) -> tuple[ModuleType, Observation, tuple[Any, ...]]:
    texts = {"messages": messages_source(TYPE_ID), **modules(shape)}
    routing = load_build(root, PACKAGE, texts, build)
    services = {attr: cls() for attr, cls in routing.Bus.__mycelium_services__.items()}
    bus = routing.Bus(**services)
    return routing, replay(routing, shape, bus, services), decisions(routing, root, build)


def check_shape(shape: Shape) -> None:
    root = Path(tempfile.mkdtemp(prefix="mycelium-shapes-"))
    try:
        seen: dict[str, Observation] = {}
        decided: dict[str, tuple[Any, ...]] = {}
        routing = None
        for build in BUILDS:
            routing, seen[build.name], decided[build.name] = observe_build(root, shape, build)
        assert routing is not None
        reference = HandWritten(routing, shape)
        routed = {a for picked in reference.routes.values() for a, _ in picked}
        expected = replay(routing, shape, reference,
                          {a: i for a, i in reference.instances.items() if a in routed})
        for mode in ("inline", "call"):  # hook and run time decide alike (issue 11.2)
            assert decided[f"hook-{mode}"] == decided[f"runtime-{mode}"], shape_to_json(shape)
        wrong = {name: got for name, got in seen.items() if got != expected}
        assert not wrong, (
            f"builds differ from hand-written calls: {sorted(wrong)}\n"
            f"expected {expected}\ngot {wrong}\n"
            f"shape (append to {CORPUS.name}): {shape_to_json(shape)}"
        )
    finally:
        forget_modules(PACKAGE)
        shutil.rmtree(root, ignore_errors=True)


def corpus() -> list[Shape]:
    return [shape_from_json(json.loads(line)) for line in CORPUS.read_text().splitlines()
            if line.strip()]


@pytest.mark.parametrize("shape", corpus(), ids=lambda s: f"{len(s.classes)}-classes")
def test_corpus_shape_behaves_like_hand_written_calls(shape: Shape) -> None:
    check_shape(shape)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(shapes())
def test_every_class_shape_behaves_like_hand_written_calls_on_all_four_builds(
    shape: Shape,
) -> None:
    check_shape(shape)
