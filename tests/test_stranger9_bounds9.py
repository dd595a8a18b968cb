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

from mycelium_mono import (
    U32,
    U64,
    Bytes,
    MessageBus,
    MessageHandler,
    QueueFullError,
    ServiceContext,
    ServiceRuntime,
    message,
    service,
)
from mycelium_mono.bus.hybrid import BackgroundBacklog

pytest_plugins = ["conftest_distributed"]

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


# -- JetStream: the publisher's outbox ----------------------------------------------------------


async def test_sync_emits_and_deadline_publishes_keep_the_jetstream_outbox_bounded(
    shared_nats: str, stream_name: str
) -> None:
    # The detector emits detections both ways: from sync code (publish_nowait, which the
    # background sender drains) and with a deadline (`await publish` under a timeout).
    # `max_in_flight` bounds the outbox (publish_nowait refuses past it); an `await publish`
    # that found the outbox non-empty queued behind it and then waited, so every one that
    # timed out added one: 977 queued against max_in_flight=8.
    import nats
    from nats.js.errors import NotFoundError

    bus = MessageBus.with_nats(shared_nats, jetstream=True, stream=stream_name, max_in_flight=8)
    peak = refused = 0
    try:
        await bus.start()
        transport: Any = bus.transport
        pub = bus.publisher(Detection)
        for seq in range(1, 3_001):
            msg = Detection(camera=2, seq=seq, score=seq % 100)
            if seq % 2:
                try:
                    pub.publish_nowait(msg)
                except QueueFullError:
                    refused += 1
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pub.publish(msg), 0.00001)
            peak = max(peak, len(transport._outbox))
        assert peak <= 8, f"the outbox held {peak} detections against max_in_flight=8"
        assert refused > 0  # the sync half really met a full outbox
        await transport.flush()
        sent = transport.stats.sent
        await bus.close()
        nc = await nats.connect(shared_nats)
        try:
            stored = (await nc.jetstream().stream_info(stream_name)).state.messages
        finally:
            await nc.close()
    finally:
        await bus.close()
        nc = await nats.connect(shared_nats)
        try:  # never leave the stream behind: its subjects would clash with the next run's
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream_name)
        finally:
            await nc.close()
    assert stored == sent  # what the transport counts as sent is what the stream holds


# -- ServiceRuntime: a session service that ends ------------------------------------------------


@service
class CameraSession:
    """Follows one camera's alerts while it is connected; returns when it disconnects."""

    def __init__(self, camera: int, until_seq: int) -> None:
        self.camera = camera
        self.until_seq = until_seq
        self.seen = 0

    async def run(self, ctx: ServiceContext) -> None:
        async for alert in ctx.subscribe(Alert, maxsize=8):
            self.seen += 1
            if alert.seq >= self.until_seq:
                return  # the camera disconnected: this session is over


async def test_camera_sessions_that_end_never_hold_back_the_alert_publisher() -> None:
    # 200 cameras come and go; each session subscribes to alerts and returns when its camera
    # disconnects. A session's subscription outlived it: open, unread, and "block", so after
    # 8 more alerts it held every publisher of Alert for good (stuck at the 12th alert).
    runtime = ServiceRuntime(MessageBus())
    bus = runtime.bus
    pub = bus.publisher(Alert)
    monitor = bus.subscribe(Alert, maxsize=100_000, name="monitor")
    seq = 0
    try:
        for camera in range(200):
            session = CameraSession(camera, until_seq=seq + 3)
            running = await runtime.spawn_service(session)
            await bus.wait_for_subscribers(2, Alert, timeout=5)
            for _ in range(3):
                seq += 1
                await asyncio.wait_for(pub.publish(Alert(camera=camera, seq=seq)), 5)
            await asyncio.wait_for(running.task, 5)
            assert session.seen == 3
            # Alerts keep coming after the session ended: nobody may be held back by it.
            for _ in range(20):
                seq += 1
                await asyncio.wait_for(pub.publish(Alert(camera=camera, seq=seq)), 5)
            assert bus.stats.subscribers == 1, [s.name for s in bus.subscribers()]
        assert len(monitor) == seq == 200 * 23
        assert bus.stats.published == seq
    finally:
        await runtime.shutdown(timeout=5)


# -- ZeroMQ: peers that come and go -------------------------------------------------------------


async def test_a_hub_that_forgets_departed_cameras_stays_small_and_ready() -> None:
    # The analytics hub connects to each camera's bus when it is plugged in (an ephemeral
    # port each time) and forgets it with disconnect_from (zmq9's fix, found here too) when
    # it is unplugged. Without that, every departed camera stayed a peer: libzmq redialled
    # all of them, and ready() waited for their acknowledgement of any type subscribed later,
    # so the hub was never ready again. Held here to per-peer state that does not grow.
    hub = MessageBus.with_tcp("127.0.0.1:0", ready_timeout_s=3)
    frames = hub.subscribe(Frame, maxsize=32, name="detector")
    await hub.start()
    transport: Any = hub.transport
    got = 0

    async def detector() -> None:
        nonlocal got
        async for _ in frames:
            got += 1

    consumer = asyncio.create_task(detector())
    cameras, per_camera, marks = 50, 5, []
    tracemalloc.start()
    try:
        for n in range(cameras):
            cam = MessageBus.with_tcp("127.0.0.1:0", close_timeout_s=2)
            await cam.start()
            address = cam.transport.address  # type: ignore[attr-defined]
            await hub.connect_to(address)
            await hub.ready()
            await cam.wait_for_subscribers(1, Frame, timeout=5)
            pub = cam.publisher(Frame)
            for seq in range(per_camera):
                await pub.publish(frame(n, seq))
            await asyncio.wait_for(_until(lambda n=n: got == (n + 1) * per_camera), 5)
            await cam.close()
            await hub.disconnect_from(address)
            if n in (10, cameras - 1):
                marks.append(traced())
    finally:
        tracemalloc.stop()
    try:
        assert transport.peers == [] and transport._peer_tokens == {}
        assert all(not acked for acked in transport._acks.values()), transport._acks
        assert marks[1] - marks[0] < 512 * 1024, f"grew {(marks[1] - marks[0]) // 1024} KiB"
        # A new type subscribed now is ready as soon as the cameras still there ack it.
        alerts = hub.subscribe(Alert, maxsize=4)
        last = MessageBus.with_tcp("127.0.0.1:0")
        await last.start()
        await hub.connect_to(last.transport.address)  # type: ignore[attr-defined]
        await hub.ready()
        await last.wait_for_subscribers(1, Alert, timeout=5)
        await last.publisher(Alert).publish(Alert(camera=99, seq=1))
        assert (await asyncio.wait_for(alerts.recv(), 5)).camera == 99
        await last.close()
        assert got == cameras * per_camera
    finally:
        frames.close()
        await asyncio.wait_for(consumer, 5)
        await hub.close()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.001)


# -- ServiceRuntime inputs under "drop_oldest": frames -> detections -> alerts ------------------


class Detector(MessageHandler[Frame]):
    """Sync, cheap: one detection per frame, emitted with the sync ``self.emit``."""

    def handle(self, f: Frame) -> None:
        self.emit(Detection(camera=f.camera, seq=f.seq, score=f.seq % 100))


class Alerter(MessageHandler[Detection]):
    """Slow (a model call per detection): an alert for every high score."""

    def __init__(self) -> None:
        self.seen = 0

    async def handle(self, d: Detection) -> None:
        self.seen += 1
        if self.seen % 8 == 0:
            await asyncio.sleep(0.0005)
        if d.score >= 90:
            self.emit(Alert(camera=d.camera, seq=d.seq))


class Pager(MessageHandler[Alert]):
    def __init__(self) -> None:
        self.paged = 0

    def handle(self, a: Alert) -> None:
        self.paged += 1


async def test_a_drop_oldest_pipeline_holds_every_bound_flat_memory_and_exact_drop_counts() -> None:
    # The README: bounded per-subscriber queues, "every drop is counted". Through a runtime
    # whose services all take "drop_oldest" inputs of 16, behind a camera that never waits:
    # each queue is looked at every loop turn, memory is traced, and at the end what every
    # stage received plus what its queue dropped equals what the stage before it emitted.
    runtime = ServiceRuntime(MessageBus(), maxsize=16, policy="drop_oldest")
    bus = runtime.bus
    detector, alerter, pager = Detector(), Alerter(), Pager()
    stages = [await runtime.spawn_service(h) for h in (detector, alerter, pager)]
    queues = [s.context.subscriptions[0] for s in stages]
    pub = bus.publisher(Frame)
    total, marks = 12_000, []
    biggest = [0, 0, 0]
    tracemalloc.start()
    try:
        for seq in range(1, total + 1):
            pub.publish_nowait(frame(seq % 4, seq))
            for i, q in enumerate(queues):
                biggest[i] = max(biggest[i], len(q))
            if seq % 50 == 0:
                await asyncio.sleep(0)  # the camera yields now and then, never waits
            if seq in (2_000, total):
                marks.append(traced())
    finally:
        tracemalloc.stop()
    await runtime.shutdown(timeout=10)
    assert max(biggest) <= 16 and all(q.stats.high_water <= 16 for q in queues), biggest
    assert marks[1] - marks[0] < 512 * 1024, f"grew {(marks[1] - marks[0]) // 1024} KiB"
    d, a, p = (q.stats for q in queues)
    assert stages[0].handled == d.delivered and d.delivered + d.dropped == total
    assert d.dropped > 0 and a.dropped > 0  # the inputs really overflowed
    detections = d.delivered  # one per frame handled
    assert alerter.seen == a.delivered and a.delivered + a.dropped == detections
    alerts = bus.stats.published - total - detections
    assert pager.paged == p.delivered and p.delivered + p.dropped == alerts
    assert bus.stats.dropped == d.dropped + a.dropped + p.dropped
    assert all(s.errors == 0 for s in stages)
