"""Emit latency as a histogram (avg, p50, p99, p99.9, max), not a list of durations.

Built on HdrHistogram (the ``[latency]`` extra): constant memory whatever the count, and
percentiles within 0.1% (3 significant digits). Reading the clock twice costs about as much
as a monolith emit, so ``sample_every=N`` times only every N-th call.
"""

from __future__ import annotations

import inspect
import time as _time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, NoReturn, ParamSpec, TypeVar

__all__ = ["LatencyReport", "LatencyTracker"]

P = ParamSpec("P")
R = TypeVar("R")

# 1 ns .. 60 s covers an inlined emit and a stuck database write alike.
_LOWEST_NS = 1
_HIGHEST_NS = 60_000_000_000
_SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class LatencyReport:
    """Latency percentiles in nanoseconds over ``count`` recorded samples."""

    count: int
    avg: float
    p50: int
    p99: int
    p999: int
    max: int
    out_of_range: int = 0

    def __str__(self) -> str:
        text = (
            f"{self.count} samples: avg {_human(self.avg)}, p50 {_human(self.p50)}, "
            f"p99 {_human(self.p99)}, p99.9 {_human(self.p999)}, max {_human(self.max)}"
        )
        if self.out_of_range:
            text += f" ({self.out_of_range} above 60 s not recorded)"
        return text


class LatencyTracker:
    """Records durations in nanoseconds and reports percentiles.

    ``record(ns)`` always records; ``time(fn, *args)`` and ``with tracker.measure():``
    time one call in every ``sample_every``.
    """

    def __init__(self, *, sample_every: int = 1) -> None:
        if not isinstance(sample_every, int) or sample_every < 1:
            raise ValueError(
                f"sample_every must be a positive int, got {sample_every!r}\n"
                "help: 1 times every call; 100 times one call in a hundred"
            )
        self.sample_every = sample_every
        self._histogram = _new_histogram()
        self._calls = 0
        self._out_of_range = 0

    def record(self, ns: int) -> None:
        """Record one duration in nanoseconds (clamped to at least 1 ns)."""
        if not self._histogram.record_value(max(int(ns), _LOWEST_NS)):
            self._out_of_range += 1

    def time(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)``, timing it if this call is sampled.

        ``fn`` must be synchronous: for ``async def`` functions (``emit_x_async``) this method
        would time only the creation of the coroutine (~1 µs for a 10 ms await, issue 15), so it
        refuses them; time an await with ``with tracker.measure(): await fn(...)``.
        """
        self._calls += 1
        if self._calls % self.sample_every:
            result = fn(*args, **kwargs)
            # `type(...) is` costs ~25 ns, a tenth of an emit; isawaitable() would cost more.
            if type(result) is CoroutineType:
                _refuse_awaitable(fn, result)
            return result
        start = _time.perf_counter_ns()
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            self.record(_time.perf_counter_ns() - start)  # a failing call is a sample too
            raise
        elapsed = _time.perf_counter_ns() - start
        if inspect.isawaitable(result):
            _refuse_awaitable(fn, result)
        self.record(elapsed)
        return result

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time the ``with`` block if this call is sampled."""
        self._calls += 1
        if self._calls % self.sample_every:
            yield
            return
        start = _time.perf_counter_ns()
        try:
            yield
        finally:
            self.record(_time.perf_counter_ns() - start)

    def report(self) -> LatencyReport:
        """The percentiles so far (all zero before the first sample)."""
        h = self._histogram
        count = int(h.get_total_count())
        if count == 0:
            return LatencyReport(0, 0.0, 0, 0, 0, 0, self._out_of_range)
        return LatencyReport(
            count=count,
            avg=float(h.get_mean_value()),
            p50=int(h.get_value_at_percentile(50.0)),
            p99=int(h.get_value_at_percentile(99.0)),
            p999=int(h.get_value_at_percentile(99.9)),
            max=int(h.get_max_value()),
            out_of_range=self._out_of_range,
        )

    def reset(self) -> None:
        """Forget every sample."""
        self._histogram.reset()
        self._calls = 0
        self._out_of_range = 0


def _refuse_awaitable(fn: Callable[..., Any], result: Any) -> NoReturn:
    close = getattr(result, "close", None)
    if callable(close):
        close()  # never awaited on purpose: no "coroutine was never awaited" warning
    name = getattr(fn, "__qualname__", repr(fn))
    raise TypeError(
        f"LatencyTracker.time({name}) returned an awaitable ({type(result).__name__}): "
        "time() only times synchronous calls, here only the creation of the coroutine\n"
        f"help: inside async code write `with tracker.measure(): await {name}(...)`"
    )


def _new_histogram() -> Any:
    try:
        from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(
            "LatencyTracker needs the hdrhistogram package, which is not installed\n"
            "help: pip install 'mycelium-mono[latency]'"
        ) from exc
    return HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _SIGNIFICANT_DIGITS)


def _human(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    return f"{ns / 1_000_000_000:.2f} s"
