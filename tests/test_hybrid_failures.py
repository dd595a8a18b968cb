"""A background call that fails with no ``on_error`` is raised by ``drain()`` (issue 15 item 8).

The README promises that handler failures are raised as an ``ExceptionGroup``; for the
background half of a hybrid route the place a caller (or a test) can see them is the ``await``
that waits for that half: ``await bus.background.drain()``.
"""

from __future__ import annotations

import asyncio

import pytest

from mycelium_mono import U64, MessageHandler, message, route, routing_config
from mycelium_mono.bus import BackgroundBacklog


@message(type_id=5311, topic="hybrid_failures")
class Parcel:
    parcel_id: U64


class Scanner(MessageHandler[Parcel]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, parcel: Parcel) -> None:
        self.seen.append(parcel.parcel_id)


class Shipping(MessageHandler[Parcel]):
    def __init__(self) -> None:
        self.shipped: list[int] = []

    async def handle(self, parcel: Parcel) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        if parcel.parcel_id % 2:
            raise LookupError(f"no address for parcel {parcel.parcel_id}")
        self.shipped.append(parcel.parcel_id)


@routing_config
class ParcelBus:
    Parcel = route(sync=[Scanner], background=[Shipping])


def _bus(**kwargs: object) -> ParcelBus:
    return ParcelBus(scanner=Scanner(), shipping=Shipping(), **kwargs)  # type: ignore[call-arg]


async def test_drain_raises_every_background_failure_as_an_exception_group() -> None:
    bus = _bus()
    for n in range(4):
        bus.emit_parcel(Parcel(parcel_id=n))
    with pytest.raises(ExceptionGroup, match="2 background calls failed") as caught:
        await asyncio.wait_for(bus.background.drain(), 5)
    assert caught.group_contains(LookupError, match="no address for parcel 1")
    assert caught.group_contains(LookupError, match="no address for parcel 3")
    assert bus.shipping.shipped == [0, 2]  # the failures did not stop the others
    assert bus.scanner.seen == [0, 1, 2, 3]


async def test_a_failure_is_raised_once_then_drain_returns_normally() -> None:
    bus = _bus()
    bus.emit_parcel(Parcel(parcel_id=1))
    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(bus.background.drain(), 5)
    bus.emit_parcel(Parcel(parcel_id=2))
    await asyncio.wait_for(bus.background.drain(), 5)
    assert bus.shipping.shipped == [2]


async def test_close_raises_failures_nobody_drained() -> None:
    backlog = BackgroundBacklog()
    bus = _bus(background=backlog)
    bus.emit_parcel(Parcel(parcel_id=5))
    with pytest.raises(ExceptionGroup, match="1 background call failed"):
        await asyncio.wait_for(backlog.close(), 5)


async def test_with_on_error_the_callback_gets_failures_and_drain_does_not_raise() -> None:
    reported: list[BaseException] = []
    bus = _bus(background=BackgroundBacklog(on_error=reported.append))
    bus.emit_parcel(Parcel(parcel_id=1))
    await asyncio.wait_for(bus.background.drain(), 5)
    assert len(reported) == 1
    assert bus.background.stats.failed == 1


async def test_failures_kept_for_drain_are_bounded_and_the_rest_counted() -> None:
    bus = _bus()
    for n in range(1, 402, 2):  # 201 failing parcels, never drained in between
        bus.emit_parcel(Parcel(parcel_id=n))
    with pytest.raises(ExceptionGroup, match=r"201 background calls failed \(the 101 oldest")\
            as caught:
        await asyncio.wait_for(bus.background.drain(), 10)
    assert len(caught.value.exceptions) == 100


async def test_a_refused_emit_ran_no_handler_so_a_retry_runs_each_once() -> None:
    from mycelium_mono import BacklogFull

    bus = _bus(background=BackgroundBacklog(maxsize=2))
    bus.emit_parcel(Parcel(parcel_id=0))
    bus.emit_parcel(Parcel(parcel_id=2))
    with pytest.raises(BacklogFull):
        bus.emit_parcel(Parcel(parcel_id=4))
    assert bus.scanner.seen == [0, 2]  # it used to be [0, 2, 4]: the sync side ran, then refused
    await asyncio.wait_for(bus.background.wait_for_space(), 5)
    bus.emit_parcel(Parcel(parcel_id=4))  # the retry the error asks for
    await asyncio.wait_for(bus.background.drain(), 5)
    assert bus.scanner.seen == [0, 2, 4]
    assert bus.shipping.shipped == [0, 2, 4]


def test_an_emit_without_an_event_loop_runs_no_handler() -> None:
    from mycelium_mono.bus import NoEventLoopError

    bus = _bus()
    with pytest.raises(NoEventLoopError):
        bus.emit_parcel(Parcel(parcel_id=0))
    assert bus.scanner.seen == []
