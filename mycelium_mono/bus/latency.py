"""Emit latency as a histogram (avg, p50, p99, p99.9, max), not a list of durations.

Built on HdrHistogram (the ``[latency]`` extra): constant memory whatever the count, and
percentiles within 0.1% (3 significant digits). Reading the clock twice costs about as much
as a monolith emit, so ``sample_every=N`` times only every N-th call.

``record`` only appends to a list: the ``hdrh`` package is pure Python, and its
``record_value`` cost ~1.3 µs a sample (issue 16: ten monolith emits, on every swap Bandit
times). Every ``_BATCH`` samples the list is counted per bucket (each sample rounded down to
its bucket's lowest value, exactly as the histogram files it; ``Counter`` counts in C), and a
report files those counts into a fresh histogram with one ``record_value(value, count)`` per
bucket: the same counts, min and max bucket as recording one by one, so the same report.
Memory stays bounded by the number of buckets.
"""

from __future__ import annotations

import time as _time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NoReturn, ParamSpec, TypeVar

__all__ = ["LatencyReport", "LatencyTracker"]

P = ParamSpec("P")
R = TypeVar("R")

# 1 ns .. 60 s covers an inlined emit and a stuck database write alike.
_LOWEST_NS = 1
_HIGHEST_NS = 60_000_000_000
_SIGNIFICANT_DIGITS = 3
_BATCH = 4096
"""Samples buffered by ``record`` before they are filed into the histogram."""


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
        # log2 of the histogram's sub-bucket count and its unit: a value's bucket is
        # value >> shift, with shift = max(value.bit_length() - _sub_bits, _unit).
        self._sub_bits = self._histogram.sub_bucket_half_count_magnitude + 1
        self._unit = self._histogram.unit_magnitude
        self._pending: list[int] = []
        self._buckets: Counter[int] = Counter()  # bucket's lowest value -> samples
        self._calls = 0

    def record(self, ns: int) -> None:
        """Record one duration in nanoseconds (clamped to at least 1 ns)."""
        pending = self._pending
        # (The type test first: int() and max() on every sample cost a third of this call.)
        pending.append(ns if type(ns) is int and ns > 0 else max(int(ns), _LOWEST_NS))
        if len(pending) >= _BATCH:
            self._count_pending()

    def _count_pending(self) -> None:
        """Count the buffered samples per bucket (by the bucket's lowest value)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        pending.sort()
        sub_bits, unit, buckets = self._sub_bits, self._unit, self._buckets
        # Sorted, the samples of one power of two are one slice, all rounded with the same
        # mask: map(int.__and__) and Counter do the per-sample work in C.
        start, end = 0, len(pending)
        while start < end:
            bits = pending[start].bit_length()
            stop = bisect_left(pending, 1 << bits, start, end)
            mask = -1 << max(bits - sub_bits, unit)
            buckets.update(map(int.__and__, pending[start:stop], repeat(mask)))
            start = stop

    def time(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)``, timing it if this call is sampled.

        ``fn`` must be synchronous: for ``async def`` functions (``emit_x_async``) this method
        would time only the creation of the coroutine (~1 µs for a 10 ms await, issue 15), so it
        refuses them; time an await with ``with tracker.measure(): await fn(...)``.
        """
        self._calls += 1
        # One test on both paths: the sampled call used inspect.isawaitable() and the others
        # only `type(result) is CoroutineType`, so a function returning a Future or Task passed
        # N-1 times and raised TypeError on every N-th (sampled) call. An emit returns None,
        # which the first compare settles (cheaper than the type test was); isawaitable()
        # itself costs ~1 µs, a lookup of __await__ on the type ~0.1 µs.
        if self._calls % self.sample_every:
            result = fn(*args, **kwargs)
            if result is not None and hasattr(type(result), "__await__"):
                _refuse_awaitable(fn, result)
            return result
        start = _time.perf_counter_ns()
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            self.record(_time.perf_counter_ns() - start)  # a failing call is a sample too
            raise
        elapsed = _time.perf_counter_ns() - start
        if result is not None and hasattr(type(result), "__await__"):
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
        self._count_pending()
        h = self._histogram
        h.reset()
        out_of_range = 0
        for lowest, samples in self._buckets.items():
            if not h.record_value(lowest, samples):
                out_of_range += samples  # above the histogram's 60 s
        count = int(h.get_total_count())
        if count == 0:
            return LatencyReport(0, 0.0, 0, 0, 0, 0, out_of_range)
        # One pass for the three percentiles (get_value_at_percentile walks the counts each).
        at = h.get_percentile_to_value_dict([50.0, 99.0, 99.9])
        return LatencyReport(
            count=count,
            avg=_mean(h),
            p50=int(at[50.0]),
            p99=int(at[99.0]),
            p999=int(at[99.9]),
            max=int(h.get_max_value()),
            out_of_range=out_of_range,
        )

    def reset(self) -> None:
        """Forget every sample."""
        self._pending = []
        self._buckets.clear()
        self._histogram.reset()
        self._calls = 0


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


def _mean(h: Any) -> float:
    """``h.get_mean_value()``, from the counts array: the same sum (each recorded bucket's
    count times its median equivalent value), without hdrh's recorded-values iterator, which
    took ~45 ms for a 1 ns .. 60 s histogram (issue 16)."""
    total: int = 0
    for index, count in enumerate(h.counts):
        if count:
            value = h.get_highest_equivalent_value(h.get_value_from_index(index))
            low, high = h.get_lowest_equivalent_value(value), h.get_highest_equivalent_value(value)
            total += count * (low + ((high - low + 1) >> 1))
    return float(total) / int(h.get_total_count())


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
