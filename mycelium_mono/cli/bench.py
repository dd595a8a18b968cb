"""``mycelium-mono bench``: ns per ``emit_*`` of a generated bus, against dict-and-loop dispatch.

The baseline is what a bus without code generation does: look the message type up in a dict of
subscriber lists and call each subscriber in a loop. Both sides call the same bound handler
methods on the same instances with the same message, so the ratio is the price of dynamic
dispatch. Absolute nanoseconds are noisy on a shared machine; the ratio, measured side by side
(interleaved runs, best of each), is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import io
import sys
import timeit
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout, suppress
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, TextIO, TypeVar

from mycelium_mono.cli.target import Target, UsageError, find_target, resolved_tables
from mycelium_mono.monolith import GeneratedBus
from mycelium_mono.routing.check import ResolvedRoute, ResolvedTable
from mycelium_mono.routing.errors import RoutingError
from mycelium_mono.routing.hook import install_import_hook

__all__ = [
    "EmitTiming",
    "bus_classes",
    "default_bus",
    "default_message",
    "factory_buses",
    "import_routing_module",
    "run_bench",
    "time_bus",
]

T = TypeVar("T")


@dataclass(frozen=True)
class EmitTiming:
    """One ``emit_*`` method timed against the dict-and-loop baseline."""

    bus: str
    emit: str
    message: str
    handlers: int
    emit_ns: float | None
    loop_ns: float | None
    error: str | None = None
    printed: int = 0
    """Lines the handlers wrote to ``sys.stdout`` while timed (swallowed, not shown)."""

    @property
    def ratio(self) -> float | None:
        """How many times faster the generated method is (> 1: faster)."""
        if self.emit_ns is None or self.loop_ns is None or self.emit_ns <= 0:
            return None
        return self.loop_ns / self.emit_ns


def import_routing_module(target: Target, *, hook: bool) -> ModuleType:
    """Import ``target`` as the application would: under the import hook unless ``hook=False``.

    The hook is installed for the module's top-level package, the same default as
    ``python -m mycelium_mono run``.
    """
    if hook:
        install_import_hook([target.top_package])
    try:
        return importlib.import_module(target.module_name)
    except SyntaxError:
        raise  # RoutingError included: the callers render it
    except Exception as exc:
        raise UsageError(f"importing {target.module_name} raised {type(exc).__name__}: {exc}\n"
                         "help: the routing module must import cleanly; run it with "
                         "`python -c 'import " + target.module_name + "'` to see the traceback"
                         ) from exc


def bus_classes(module: ModuleType) -> list[type[GeneratedBus]]:
    """The generated bus classes defined in ``module``, in definition order."""
    return [
        value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, GeneratedBus)
        and value is not GeneratedBus and value.__module__ == module.__name__
    ]


def default_bus(cls: type[GeneratedBus]) -> GeneratedBus:
    """``cls`` built from services constructed with no arguments."""
    services = {}
    for attr, service_cls in cls.__mycelium_services__.items():
        try:
            services[attr] = service_cls()
        except Exception as exc:
            raise UsageError(
                f"cannot construct {service_cls.__qualname__}() for {cls.__name__}.{attr}: "
                f"{type(exc).__name__}: {exc}\n"
                "help: pass --factory module:function, a function that returns a constructed bus"
            ) from exc
    return cls(**services)


def default_message(message_cls: type[Any]) -> Any:
    """A message with every field zero (decoded from an all-zero buffer)."""
    return message_cls.from_bytes(bytes(message_cls.SIZE))


def time_bus(bus: GeneratedBus, table: ResolvedTable, *, number: int, repeat: int
             ) -> list[EmitTiming]:
    """Time each route's sync path (``emit_x``, or ``emit_x_sync`` for ``route(...)``).

    The timing runs on an event loop of its own: an emit whose handlers emit further may reach
    a hybrid route, whose background half is queued on the running loop (issue 15: without
    one every such emit failed with NoEventLoopError and was reported as a handler's fault).
    """
    message_types = {emit.__name__: cls for cls, emit in bus._dispatch.items()}
    if any(route.split for route in table.routes):
        # Created now, not at the first background call: a handler that reaches a hybrid
        # route only after its first messages left no backlog for _chunk_size to size the
        # runs by, and 20,000 emits overflowed the 10,000-call one created mid-run.
        bus.background  # noqa: B018 - the property creates the default backlog

    async def time_routes() -> list[EmitTiming]:
        timings = []
        for route in table.routes:
            # A handler that prints (a pager, a logger to stdout) printed once per timed emit:
            # 18,000 lines buried doctor's report. The lines are counted, not shown.
            sink = _LineCounter()
            with redirect_stdout(sink):
                timing = await _time_route(bus, table.name, route, message_types,
                                           number=number, repeat=repeat)
            timings.append(replace(timing, printed=sink.lines))
        return timings

    return _run_on_own_loop(time_routes)


class _LineCounter(io.TextIOBase):
    """A stdout that keeps nothing but the number of lines written to it."""

    def __init__(self) -> None:
        super().__init__()
        self._newlines = 0
        self._unfinished = False  # the last line written has no newline yet

    @property
    def lines(self) -> int:
        return self._newlines + self._unfinished

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._newlines += text.count("\n")
            self._unfinished = not text.endswith("\n")
        return len(text)


def _run_on_own_loop(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work())
    # doctor.report() called from async code: this thread's loop is busy running the caller,
    # and a second loop cannot run in the same thread.
    with ThreadPoolExecutor(1, thread_name_prefix="mycelium-bench") as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


async def _settle_background(bus: GeneratedBus) -> None:
    """Let the background calls the timed emits queued run, so the backlog stays small."""
    backlog = bus._background
    if backlog is None:
        return
    # Background failures on an all-zero message do not change what the sync path costs;
    # the application sees its own through `await bus.background.drain()`.
    with suppress(Exception):
        await backlog.drain()


async def _time_route(bus: GeneratedBus, bus_name: str, route: ResolvedRoute,
                      message_types: dict[str, type[Any]], *, number: int, repeat: int
                      ) -> EmitTiming:
    name = f"{route.emit_name}_sync" if route.split else route.emit_name
    message_cls = message_types[route.emit_name]
    handlers = [getattr(getattr(bus, c.handler.attr), c.method.method) for c in route.sync]
    timing = EmitTiming(bus_name, name, message_cls.__name__, len(handlers), None, None)
    try:
        msg = default_message(message_cls)
        emit = getattr(bus, name)
        before = _backlog_length(bus)
        emit(msg)  # once untimed: a handler that raises on this message is reported, not timed
        queued = _backlog_length(bus) - before
    except Exception as exc:  # any handler failure means "cannot time this"
        return _with_error(timing, exc, f"a handler raised on an all-zero {timing.message}")
    await _settle_background(bus)
    chunk = _chunk_size(bus, number, queued)
    loop = _dict_and_loop({message_cls: handlers})
    try:
        emit_ns, loop_ns = await _interleaved(bus, emit, loop, msg, number=number,
                                              repeat=repeat, chunk=chunk)
    except Exception as exc:  # e.g. a handler that queues on the backlog only now and then
        return _with_error(timing, exc, f"timing {number} emits failed")
    return EmitTiming(bus_name, name, message_cls.__name__, len(handlers), emit_ns, loop_ns)


def _backlog_length(bus: GeneratedBus) -> int:
    backlog = bus._background
    return 0 if backlog is None else len(backlog)


def _chunk_size(bus: GeneratedBus, number: int, per_emit: int) -> int:
    """How many emits one timed run may make before the background calls they queued must be
    drained: no more than the backlog's free room (a handler emitting into a background
    route queued 20,000 calls into a 10,000-call backlog, and the run died of BacklogFull)."""
    backlog = bus._background
    if backlog is None:
        return number
    free = backlog.maxsize - len(backlog)
    # A handler that queued nothing on the untimed emit may still queue one call per emit.
    return max(1, min(number, free // max(1, per_emit)))


def _with_error(timing: EmitTiming, exc: BaseException, why: str) -> EmitTiming:
    detail = _first_line(exc)
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    if leaf is not exc:
        # The group says which handler failed; its first leaf says why.
        detail = f"{str(exc).splitlines()[0]}: {_first_line(leaf)}"
    return EmitTiming(timing.bus, timing.emit, timing.message, timing.handlers, None, None,
                      f"{why}: {detail}")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _dict_and_loop(subscribers: dict[type[Any], list[Callable[[Any], Any]]]
                   ) -> Callable[[Any], None]:
    """The dynamic dispatcher a generated bus replaces."""
    def dispatch(msg: Any) -> None:
        for handler in subscribers[type(msg)]:
            handler(msg)

    return dispatch


async def _interleaved(bus: GeneratedBus, emit: Callable[[Any], Any],
                       loop: Callable[[Any], Any], msg: Any, *, number: int, repeat: int,
                       chunk: int) -> tuple[float, float]:
    # Interleaving the runs puts both sides under the same background noise; the best run is
    # the least disturbed one (as `timeit` recommends).
    emit_timer = timeit.Timer("f(m)", globals={"f": emit, "m": msg})
    loop_timer = timeit.Timer("f(m)", globals={"f": loop, "m": msg})
    emit_best = loop_best = float("inf")
    for _ in range(max(1, repeat)):
        emit_best = min(emit_best, await _timed(bus, emit_timer, number, chunk))
        loop_best = min(loop_best, await _timed(bus, loop_timer, number, chunk))
    return emit_best / number * 1e9, loop_best / number * 1e9


async def _timed(bus: GeneratedBus, timer: timeit.Timer, number: int, chunk: int) -> float:
    """Seconds for ``number`` calls, timed ``chunk`` at a time; the background calls each
    chunk queued are drained between chunks, outside the timed region."""
    total, left = 0.0, number
    while left > 0:
        step = min(chunk, left)
        total += timer.timeit(step)
        left -= step
        await _settle_background(bus)
    return total


def load_factory(spec: str) -> Callable[[], Any]:
    """``package.module:function`` → the function."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--factory {spec!r}: expected MODULE:FUNCTION, e.g. myapp.bench:make_bus")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--factory {spec!r}: cannot import {module_name}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"--factory {spec!r}: {module_name} has no function {attr!r}")
    # The command calls it with no arguments: a function that needs some used to end the
    # command in a TypeError traceback (exit 1) instead of a usage error saying so. Checked
    # on the signature, so a TypeError raised inside the factory still shows its own line.
    try:
        inspect.signature(factory).bind()
    except TypeError as exc:
        raise UsageError(
            f"--factory {spec!r}: {module_name}.{attr} cannot be called with no arguments "
            f"({exc})\nhelp: give the command a function that takes none and returns the "
            "constructed bus (or a list of buses)") from exc
    except ValueError:
        pass  # no signature to read (a builtin): call it and see
    return factory  # type: ignore[no-any-return]


def format_timings(timings: Iterable[EmitTiming]) -> list[str]:
    """One aligned line per emit method."""
    rows = list(timings)
    width = max((len(t.emit) for t in rows), default=0)
    lines = []
    for t in rows:
        head = f"{t.bus}.{t.emit:<{width}}  {t.message} → {t.handlers} handler{_s(t.handlers)}"
        if t.error or t.emit_ns is None or t.loop_ns is None:
            lines.append(f"{head}: not timed ({t.error}){_printed(t)}")
            continue
        ratio = t.ratio or 0.0
        speed = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        lines.append(f"{head}: {t.emit_ns:7.1f} ns per emit; dict-and-loop {t.loop_ns:7.1f} ns; "
                     f"{speed}{_printed(t)}")
    return lines


def _printed(timing: EmitTiming) -> str:
    if not timing.printed:
        return ""
    return (f" (its handlers printed {timing.printed:,} line{_s(timing.printed)} to stdout "
            "while timed, not shown)")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def run_bench(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    target = find_target(args.module)
    tables, problems = resolved_tables(target)
    if problems:
        # The errors themselves, exit 1, as show, stubs and doctor do: a usage error (exit 2,
        # "has routing errors") told a CI script the command line was wrong.
        raise RoutingError(problems, target.text)
    module = import_routing_module(target, hook=not args.no_hook)
    by_name = {t.name: t for t in tables}
    for bus in _buses(module, args.factory):
        table = by_name.get(type(bus).__name__)
        if table is None:
            raise UsageError(f"--factory returned a {type(bus).__name__}, which is not a bus "
                             f"of {target.module_name}")
        origin = type(bus).__mycelium_origin__
        out.write(f"{type(bus).__name__} (built by the {origin}; best of {args.repeat} x "
                  f"{args.number} emits)\n")
        for line in format_timings(time_bus(bus, table, number=args.number, repeat=args.repeat)):
            out.write(f"  {line}\n")
    return 0


def factory_buses(factory: str) -> list[GeneratedBus]:
    """The bus (or list of buses) a ``--factory MODULE:FUNCTION`` returns."""
    made = load_factory(factory)()
    buses = list(made) if isinstance(made, list | tuple) else [made]
    if not all(isinstance(b, GeneratedBus) for b in buses):
        raise UsageError(f"--factory {factory} returned {made!r}, not a generated bus\n"
                         "help: return the constructed MonolithBus (or a list of buses)")
    return buses


def _buses(module: ModuleType, factory: str | None) -> list[GeneratedBus]:
    if factory is not None:
        return factory_buses(factory)
    classes = bus_classes(module)
    if not classes:
        raise UsageError(f"{module.__name__} defines no @routing_config bus")
    return [default_bus(cls) for cls in classes]
