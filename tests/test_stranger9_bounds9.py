"""Bounds are bounds, round 9: a video-analytics pipeline (frames -> detections -> alerts).

Cameras publish ``Frame``s (8 KiB of pixels each, so a buffer that grows shows in memory at
once), a detector turns them into ``Detection``s, and an alerting service raises ``Alert``s.
The consumers are deliberately slow or stalled, and every buffer the README calls bounded is
looked at from outside while it is under pressure: the queue lengths, what tracemalloc says
the process holds, and whether every counter adds up against what was published.

Type ids 39200-39299 are this file's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from typing import Annotated, Any

import zmq

from mycelium_mono import U32, U64, Bytes, MessageBus, message
from mycelium_mono.bus.hybrid import BackgroundBacklog

PIXELS = 8192


@message(type_id=39201, topic="video.frames")
class Frame:
    camera: U32
    seq: U64
    pixels: Annotated[bytes, Bytes(PIXELS)]


@message(type_id=39202, topic="video.detections")
class Detection:
    camera: U32
    seq: U64
    score: U32


@message(type_id=39203, topic="video.alerts")
class Alert:
    camera: U32
    seq: U64


BLANK = bytes(PIXELS)


def frame(camera: int, seq: int) -> Frame:
    return Frame(camera=camera, seq=seq, pixels=BLANK)


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


# -- ZeroMQ: the lossless send side ------------------------------------------------------------


def _stalled_sub(ctx: zmq.Context[Any], address: str) -> zmq.Socket[Any]:
    """A real SUB socket that subscribes to everything and reads nothing until told to."""
    sock: zmq.Socket[Any] = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 10)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(f"tcp://{address}" if "://" not in address else address)
    return sock


async def test_timed_out_publishes_to_a_stalled_camera_viewer_never_grow_the_send_backlog() -> None:
    # A camera gateway publishes each frame with a deadline (a frame late by 2 ms is
    # worthless) to a viewer that has stopped reading. README: lossless ZeroMQ makes the
    # publisher wait at the high-water mark, and `publish_nowait` refuses once `hwm` frames
    # wait in the publisher. Each timed-out `await publish` used to leave its frame in the
    # transport's backlog anyway: 4,950 frames (40 MB) against hwm=50, every one of them
    # still sent later although its publish had failed.
    hwm = 50
    bus = MessageBus.with_tcp("127.0.0.1:0", hwm=hwm, close_timeout_s=0.5)
    local = bus.subscribe(Frame, maxsize=16, policy="drop_oldest", name="recorder")
    await bus.start()
    transport: Any = bus.transport
    ctx: zmq.Context[Any] = zmq.Context()
    viewer = _stalled_sub(ctx, transport.address)
    try:
        await bus.wait_for_subscribers(1, Frame)
        pub = bus.publisher(Frame)
        total, timed_out, peak = 2_000, 0, 0
        tracemalloc.start()
        try:
            before = traced()
            for seq in range(1, total + 1):
                try:
                    await asyncio.wait_for(pub.publish(frame(1, seq)), 0.001)
                except TimeoutError:
                    timed_out += 1
                peak = max(peak, len(transport._backlog))
            grown = traced() - before
        finally:
            tracemalloc.stop()
        assert timed_out > total // 2, "the viewer never stalled the publisher"
        assert peak <= hwm, f"the lossless send backlog held {peak} frames against hwm={hwm}"
        assert grown < 2 * 1024 * 1024, f"grew {grown / 1e6:.1f} MB over {total} frames"
        # Nor does each attempt cut short leave its wake-up future behind.
        assert len(transport._waiters) <= 1, len(transport._waiters)
        published = bus.stats.published
        # Every publish the bus counted reached the local recorder (all or nothing) ...
        assert local.stats.dropped + local.stats.queued == published
        # ... and reaches the viewer once it reads again; nothing that timed out before it
        # was queued is sent behind the caller's back.
        got = 0
        deadline = asyncio.get_running_loop().time() + 10
        while got < published:
            assert asyncio.get_running_loop().time() < deadline, f"{got} of {published} arrived"
            await asyncio.sleep(0)  # let the publisher's loop flush its backlog
            try:
                viewer.recv(zmq.NOBLOCK)
            except zmq.Again:
                await asyncio.sleep(0.001)
                continue
            got += 1
        await asyncio.sleep(0.05)
        extra = 0
        while True:
            try:
                viewer.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            extra += 1
        assert extra == 0, f"{extra} frames arrived beyond the {published} published"
    finally:
        await bus.close()
        viewer.close(0)
        ctx.term()


# -- waits cut short: health checks against a stalled consumer ---------------------------------


async def test_health_checks_polling_a_stalled_alert_sink_leave_nothing_behind() -> None:
    # The alert sink (a background handler) hangs on a paging provider. A watchdog polls
    # `drain()` and `wait_for_space()` with a short timeout every few alerts, and the camera
    # side keeps submitting under "drop_oldest". Each timed-out poll used to stay in the
    # backlog's lists until the stalled handler moved on: one entry per poll.
    backlog = BackgroundBacklog(maxsize=32, policy="drop_oldest")
    stuck = asyncio.Event()
    handled: list[int] = []

    async def page(alert: Alert) -> None:
        await stuck.wait()
        handled.append(alert.seq)

    total, biggest, marks = 6_000, 0, []
    tracemalloc.start()
    try:
        for seq in range(1, total + 1):
            backlog.submit(page, Alert(camera=3, seq=seq))
            biggest = max(biggest, len(backlog))
            if seq % 10 == 0:
                for probe in (backlog.drain(), backlog.wait_for_space()):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(probe, 0.0001)
            if seq in (1_000, total):
                marks.append(traced())
    finally:
        tracemalloc.stop()
    assert len(backlog._progress) <= 1 and len(backlog._space_waiters) <= 1, (
        len(backlog._progress), len(backlog._space_waiters))
    assert marks[1] - marks[0] < 64 * 1024, f"grew {(marks[1] - marks[0]) // 1024} KiB"
    assert biggest <= 32
    stuck.set()
    await asyncio.wait_for(backlog.drain(), 10)
    stats = backlog.stats
    # The first alert was running when the rest came; 32 were queued at the end; every
    # other one was dropped, and the counter says exactly how many.
    assert stats.submitted == total
    assert stats.completed == len(handled) == 33
    assert stats.dropped == total - len(handled)
    assert handled[1:] == list(range(total - 31, total + 1))
    await backlog.close()


async def test_a_detector_polling_for_its_alert_consumer_does_not_grow_the_bus() -> None:
    # The detector starts before the alerting service and polls for it with a short
    # timeout. Each timed-out wait_for_subscribers stayed listed on the bus until the next
    # subscribe, which here never comes.
    bus = MessageBus()
    await bus.start()
    tracemalloc.start()
    try:
        marks = []
        for attempt in range(1, 1_201):
            with contextlib.suppress(TimeoutError):
                await bus.wait_for_subscribers(1, Alert, timeout=0.0001)
            if attempt in (200, 1_200):
                marks.append(traced())
    finally:
        tracemalloc.stop()
    assert len(bus._subscription_waiters) == 0, len(bus._subscription_waiters)
    assert marks[1] - marks[0] < 32 * 1024, f"grew {(marks[1] - marks[0]) // 1024} KiB"
    sub = bus.subscribe(Alert, maxsize=4)
    await bus.wait_for_subscribers(1, Alert, timeout=1)  # still works once one comes
    sub.close()
    await bus.close()
