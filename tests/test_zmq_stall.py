"""ZeroMQ with a stalled consumer (issue 12): no abort, nothing lost silently, queues bounded.

The subscriber is a real process consuming through a ``MessageBus`` subscriber bounded to
1,000 ("block"); its event loop blocks 3 s at message 1,000 while this process publishes
50,000 and closes. Before the fix, the subscriber died on libzmq's ``!_io_error`` assertion
(exit -6) in 4 of 5 runs with ZMTP heartbeats on, and with them off ``close()`` dropped the
tail at its 1 s linger while reporting every frame as sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from peers.common import memory_kib
from peers.harness import Peers
from peers.inlet import ListInlet
from peers.messages import Tick

from mycelium_mono.bus.transports.zmq import ZmqTransport

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]

COUNT = 50_000
MAXSIZE = 1000
RUNS = 5
RSS_BOUND_KB = 400_000
"""Both processes: 50,000 frames of ~100 bytes, even all held at a 1M HWM, stay far below."""


@contextmanager
def rss_growth() -> Iterator[list[int]]:
    """Sample this process's RSS every 20 ms; yields ``[peak growth in KiB]`` once done.

    The publisher is this (pytest) process, whose lifetime peak (VmHWM) belongs to earlier
    tests too: what counts is how far the RSS rises above where it stood when the run began.
    """
    base, peak, done = memory_kib(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], memory_kib() - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join(timeout=5)
        peak[0] = max(peak[0], memory_kib() - base)


async def stalled_run(peers: Peers, hwm: int) -> tuple[dict[str, int], ZmqTransport, int]:
    pub = ZmqTransport("127.0.0.1:0", hwm=hwm)
    await pub.start(ListInlet())
    sub = peers.spawn(
        "stream_sub", "--engine", "zmq", "--connect", pub.address, "--hwm", str(hwm),
        "--bus-maxsize", str(MAXSIZE), "--count", str(COUNT), "--stall-at", "1000",
        "--stall-s", "3", "--timeout", "60",
    )  # fmt: skip
    await sub.aexpect("READY")
    await pub.wait_for_subscribers(1, Tick, timeout=30)
    for seq in range(1, COUNT + 1):
        await pub.publish(Tick(seq=seq, value=0, blob=bytes(32)))
    await pub.close()
    result = await sub.aresult(timeout=90)
    sub.proc.wait(timeout=30)
    return result, pub, sub.proc.returncode


@pytest.mark.parametrize("hwm", [1000, 1_000_000], ids=["hwm-1k", "hwm-1M"])
@pytest.mark.parametrize("run", range(RUNS))
async def test_a_stalled_subscriber_never_aborts_and_loses_nothing_unreported(
    peers: Peers, hwm: int, run: int
) -> None:
    with rss_growth() as publisher_growth_kb:
        result, pub, returncode = await stalled_run(peers, hwm)
    assert returncode == 0, f"subscriber exited {returncode} (-6 is libzmq's abort)"
    unreported = COUNT - result["count"] - pub.stats.extra["undelivered_at_close"]
    assert pub.stats.extra["close_linger_expired"] == 0
    assert unreported == 0, f"{unreported} lost without the publisher saying so"
    assert result["count"] == COUNT and result["out_of_order"] == 0
    assert result["sequence_gaps"] == 0
    assert result["queue_peak"] <= MAXSIZE
    assert result["rss_peak_kb"] < RSS_BOUND_KB, "the subscriber's memory grew without bound"
    assert publisher_growth_kb[0] < RSS_BOUND_KB, "the publisher's memory grew without bound"
