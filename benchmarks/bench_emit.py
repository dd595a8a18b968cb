"""Emit one message to 3 trivial handlers: the generated monolith bus against the alternatives.

Every row delivers the same :class:`BenchSwap` messages to the same three handlers
(``self.n += 1``). The reference row is the three ``h.handle(m)`` calls written by hand at the
call site; the others are our generated ``emit_bench_swap`` (built by the import hook, call and
inline mode), the generic ``bus.emit(m)``, a dict-and-loop dispatcher, and the signal/event
libraries people reach for: psygnal, blinker, pypubsub, pyee, zope.event.

Each benchmark call emits a batch of ``BATCH`` messages from a loop written at the call site and
the table reports time per emit (``extra_info["ops"]``). Timing one emit per call would add
pytest-benchmark's own per-call overhead (a function call through its runner, ~50 ns here) to
every row and squeeze all the ratios towards 1. After timing, each row checks that all three
handlers received every message, so a dispatcher that silently dropped a receiver (a dead weak
reference, a wrong topic) fails instead of looking fast.

Run: ``python benchmarks/report.py -k bench_emit``
(or ``python -m pytest benchmarks/bench_emit.py``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import blinker
import psygnal
import pyee
import pytest
import zope.event  # type: ignore[import-untyped]
from mycelium_bench.dispatchers import (
    blinker_send,
    dict_and_loop,
    emit_method,
    psygnal_emit,
    pyee_emit,
    pypubsub_send,
)
from mycelium_bench.messages import BenchSwap
from mycelium_bench.routing import CallBus
from mycelium_bench.routing_inline import InlineBus
from mycelium_bench.workload import (
    BATCH,
    MESSAGES,
    Handlers,
    bodies_pasted,
    emit_each,
    hand_written,
    measure,
)
from pubsub import pub

from mycelium_mono.routing.generate import CallNote

GROUP = "emit to 3 handlers"
HAND_WRITTEN = "hand-written `h.handle(m)` x3"
GENERATED = "generated `bus.emit_bench_swap(m)` (inline=False)"

pytestmark = pytest.mark.benchmark(group=GROUP)


def test_call_site_loop_alone(benchmark: Any) -> None:
    # Not a dispatcher: what every other row pays for `for m in msgs:` itself, so a reader can
    # see how much of each row is the loop (the ratios include it; none subtracts it).
    def run(msgs: Sequence[BenchSwap]) -> None:
        for _m in msgs:
            pass

    benchmark.extra_info.update(
        label="the call-site loop alone (no dispatch)", ops=BATCH, note="included in every row"
    )
    benchmark(run, MESSAGES)


def test_hand_written(benchmark: Any, handlers: Handlers) -> None:
    measure(benchmark, hand_written(handlers), handlers, HAND_WRITTEN, reference=True)


def test_hand_inlined_bodies(benchmark: Any, handlers: Handlers) -> None:
    # The floor inline=True aims at: the three bodies pasted at the call site, no calls at all.
    label = "hand-inlined bodies `h.n += 1` x3 (no calls)"
    measure(benchmark, bodies_pasted(handlers), handlers, label)


def test_generated_call_mode(benchmark: Any, handlers: Handlers) -> None:
    run = emit_method(_hook_built(CallBus, handlers))
    measure(
        benchmark, run, handlers, GENERATED,
        bar={"vs": HAND_WRITTEN, "at_most": 1.3},  # DESIGN section 5; callgrind.py checks it too
        note=_call_modes(CallBus)[1],
    )


def test_generated_inline_mode(benchmark: Any, handlers: Handlers) -> None:
    run = emit_method(_hook_built(InlineBus, handlers))
    inlined, note = _call_modes(InlineBus)
    # The <= 0.8x bar is for inlined bodies; a generator that kept the calls says so in the note
    # and the row then measures what `inline=True` really costs today.
    bar = {"bar": {"vs": HAND_WRITTEN, "at_most": 0.8}} if inlined else {}
    measure(
        benchmark, run, handlers, "generated `bus.emit_bench_swap(m)` (inline=True)",
        note=note, **bar,
    )


def test_generated_generic_emit(benchmark: Any, handlers: Handlers) -> None:
    bus = _hook_built(CallBus, handlers)

    def run(msgs: Sequence[BenchSwap]) -> None:
        for m in msgs:
            bus.emit(m)

    measure(benchmark, run, handlers, "generated generic `bus.emit(m)` (one dict lookup)")


def test_dict_and_loop(benchmark: Any, handlers: Handlers) -> None:
    label = "dict-and-loop `for h in routes[type(m)]: h(m)`"
    measure(benchmark, dict_and_loop(handlers), handlers, label)


class SwapEvents:
    swap = psygnal.Signal(BenchSwap)


@pytest.fixture
def psygnal_swap(handlers: Handlers) -> psygnal.SignalInstance:
    signal = SwapEvents().swap
    for h in handlers:
        signal.connect(h.handle)
    return signal


def test_psygnal_emit(
    benchmark: Any, handlers: Handlers, psygnal_swap: psygnal.SignalInstance
) -> None:
    run = psygnal_emit(psygnal_swap, fast=False)
    measure(benchmark, run, handlers, f"psygnal {psygnal.__version__} `emit`")


def test_psygnal_emit_fast(
    benchmark: Any, handlers: Handlers, psygnal_swap: psygnal.SignalInstance
) -> None:
    run = psygnal_emit(psygnal_swap, fast=True)
    measure(
        benchmark, run, handlers, f"psygnal {psygnal.__version__} `emit_fast`",
        bar={"vs": GENERATED, "at_least": 3.0},
        note="compiled with mypyc" if psygnal._compiled else "pure Python build",
    )


def test_blinker_send(benchmark: Any, handlers: Handlers) -> None:
    signal = blinker.Signal()
    for h in handlers:
        signal.connect(h.handle)  # weak references; `handlers` keeps the instances alive
    measure(
        benchmark, blinker_send(signal), handlers, f"blinker {_version('blinker')} `send`",
        bar={"vs": GENERATED, "at_least": 15.0},
    )


@pytest.fixture
def pubsub_topic(handlers: Handlers) -> Iterator[str]:
    topic = "mycelium_bench_swap"
    for h in handlers:
        pub.subscribe(h.handle, topic)
    yield topic
    pub.unsubAll(topic)


def test_pypubsub_send_message(benchmark: Any, handlers: Handlers, pubsub_topic: str) -> None:
    label = f"pypubsub {_version('pypubsub')} `pub.sendMessage`"
    measure(benchmark, pypubsub_send(pub, pubsub_topic), handlers, label)


def test_pyee_emit(benchmark: Any, handlers: Handlers) -> None:
    emitter = pyee.EventEmitter()
    for h in handlers:
        emitter.on("bench_swap", h.handle)
    measure(benchmark, pyee_emit(emitter), handlers, f"pyee {_version('pyee')} `EventEmitter.emit`")


@pytest.fixture
def zope_subscribers(handlers: Handlers) -> Iterator[None]:
    # zope.event has one process-wide subscriber list: take it over, give it back.
    saved = list(zope.event.subscribers)
    zope.event.subscribers[:] = [h.handle for h in handlers]
    yield
    zope.event.subscribers[:] = saved


@pytest.mark.usefixtures("zope_subscribers")
def test_zope_event_notify(benchmark: Any, handlers: Handlers) -> None:
    label = f"zope.event {_version('zope.event')} `notify`"
    measure(benchmark, emit_each(zope.event.notify), handlers, label)


def _hook_built(bus_class: type[Any], handlers: Handlers) -> Any:
    """A bus of ``bus_class``, after checking the import hook (not the runtime path) built it."""
    # The origin, not the hook's import records: another suite may clear those between imports.
    assert bus_class.__mycelium_origin__ == "import hook", (
        f"{bus_class.__module__}.{bus_class.__name__} was built at run time, not by the import "
        "hook\nhelp: run the benchmarks through `python benchmarks/report.py` or "
        "`python -m pytest benchmarks`, so benchmarks/conftest.py installs the hook first"
    )
    return bus_class(*handlers)


def _call_modes(bus_class: type[Any]) -> tuple[int, str]:
    """How many handler bodies the generator inlined into ``bus_class``, and its notes on why."""
    from mycelium_mono.routing.pipeline import rewrite_module

    module = sys.modules[bus_class.__module__]
    path = module.__file__
    assert path is not None
    with open(path, "rb") as file:
        notes: tuple[CallNote, ...] = rewrite_module(file.read(), path, module.__name__).notes
    # "from /path/handlers.py:15; guarded: ..." → "guarded: ...": one line per distinct reason.
    modes = sorted({f"{note.mode} ({_SOURCE.sub('', note.reason)})" for note in notes})
    calls = sum(note.mode == "call" for note in notes)
    inlined = len(notes) - calls
    return inlined, f"{inlined}/{len(notes)} handler bodies inlined: {'; '.join(modes)}"


_SOURCE = re.compile(r"from \S+:\d+(; )?")


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)

