"""LatencyTracker: percentiles from an HdrHistogram, sampling, a readable report."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings

import pytest

from mycelium_mono import LatencyTracker
from mycelium_mono.bus import LatencyReport


def test_report_gives_count_avg_and_percentiles_in_ns() -> None:
    tracker = LatencyTracker()
    for ns in range(1, 1001):  # 1..1000 ns, uniform
        tracker.record(ns)
    report = tracker.report()
    assert report.count == 1000
    assert report.avg == pytest.approx(500.5, rel=0.01)
    assert report.p50 == pytest.approx(500, abs=2)
    assert report.p99 == pytest.approx(990, abs=2)
    assert report.p999 == pytest.approx(999, abs=2)
    assert report.max == pytest.approx(1000, abs=2)


def test_a_single_outlier_shows_in_max_and_p999_not_in_p50() -> None:
    tracker = LatencyTracker()
    for _ in range(999):
        tracker.record(100)
    tracker.record(5_000_000)
    report = tracker.report()
    assert report.p50 == 100
    assert report.max == pytest.approx(5_000_000, rel=0.001)


def test_the_report_is_frozen_and_reads_in_human_units() -> None:
    tracker = LatencyTracker()
    tracker.record(250)
    tracker.record(1_500)
    tracker.record(2_000_000)
    report = tracker.report()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.count = 0  # type: ignore[misc]
    text = str(report)
    assert text.startswith("3 samples: avg ")
    assert "p50 1.50 µs" in text
    assert "max 2.00 ms" in text


def test_time_returns_the_result_and_records_every_call_by_default() -> None:
    tracker = LatencyTracker()
    results = [tracker.time(pow, 2, n) for n in range(10)]
    assert results == [2**n for n in range(10)]
    assert tracker.report().count == 10


def test_sample_every_times_one_call_in_n() -> None:
    tracker = LatencyTracker(sample_every=10)
    for n in range(100):
        tracker.time(abs, -n)
    for _ in range(50):
        with tracker.measure():
            pass
    assert tracker.report().count == 15


def test_record_is_never_sampled() -> None:
    tracker = LatencyTracker(sample_every=100)
    for _ in range(7):
        tracker.record(10)
    assert tracker.report().count == 7


def test_measure_records_even_when_the_block_raises() -> None:
    tracker = LatencyTracker()
    with pytest.raises(ZeroDivisionError), tracker.measure():
        _ = 1 / 0
    assert tracker.report().count == 1


def test_an_empty_tracker_reports_zeros_and_reset_forgets() -> None:
    tracker = LatencyTracker()
    assert tracker.report() == LatencyReport(0, 0.0, 0, 0, 0, 0)
    tracker.record(42)
    tracker.reset()
    assert tracker.report().count == 0


def test_durations_beyond_the_range_are_counted_not_lost_silently() -> None:
    tracker = LatencyTracker()
    tracker.record(10**12)  # 1000 s
    report = tracker.report()
    assert report.count == 0
    assert report.out_of_range == 1
    assert "above 60 s" in str(report)


def test_a_bad_sample_rate_is_refused_with_help() -> None:
    with pytest.raises(ValueError, match="help:"):
        LatencyTracker(sample_every=0)


async def _sleep_10ms(label: str) -> str:
    await asyncio.sleep(0.01)
    return label


def test_time_refuses_an_async_function_and_points_to_measure() -> None:
    # Issue 15: time(async_fn) used to record ~1 µs (the coroutine's creation) for a 10 ms await.
    tracker = LatencyTracker()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refused coroutine is closed, not left un-awaited
        with pytest.raises(TypeError, match=r"tracker.measure\(\): await") as caught:
            tracker.time(_sleep_10ms, "a")
    assert "_sleep_10ms" in str(caught.value)
    assert tracker.report().count == 0


def test_time_refuses_an_async_function_on_calls_it_does_not_sample() -> None:
    tracker = LatencyTracker(sample_every=100)
    with pytest.raises(TypeError, match="returned an awaitable"):
        tracker.time(_sleep_10ms, "a")


async def test_measure_around_an_await_records_the_whole_await() -> None:
    tracker = LatencyTracker()
    with tracker.measure():
        assert await _sleep_10ms("a") == "a"
    assert tracker.report().max >= 10_000_000


def _one_by_one(samples: list[int]) -> tuple[float, int, int, int, int, int, int]:
    """What the tracker reported when every sample went straight into hdrh (before issue 16)."""
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 60_000_000_000, 3)
    out = sum(not h.record_value(max(ns, 1)) for ns in samples)
    return (h.get_mean_value(), h.get_value_at_percentile(50.0), h.get_value_at_percentile(99.0),
            h.get_value_at_percentile(99.9), h.get_max_value(), h.get_total_count(), out)


@pytest.mark.parametrize("seed", range(6))
def test_batched_recording_reports_what_recording_one_by_one_did(seed: int) -> None:
    import random

    rng = random.Random(seed)
    scale = [1, 3_000, 10**6, 10**9, 10**11, 5][seed]  # 10**11: some above 60 s
    samples = [rng.randint(-5, scale) for _ in range(rng.choice([1, 999, 4096, 10_000]))]
    tracker = LatencyTracker()
    for ns in samples:
        tracker.record(ns)
    r = tracker.report()
    assert (r.avg, r.p50, r.p99, r.p999, r.max, r.count, r.out_of_range) == _one_by_one(samples)


def test_reset_forgets_buffered_samples_too() -> None:
    tracker = LatencyTracker()
    tracker.record(10)
    tracker.reset()
    tracker.record(20)
    assert tracker.report().count == 1
