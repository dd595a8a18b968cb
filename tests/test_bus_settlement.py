"""The bus side of delivery guarantees (issue 12): offers that can be refused, and settlement.

A transport offers each received message to the bus with an optional ``settle`` callback;
the bus refuses it (nothing queued) while a "block" subscriber is full, and calls ``settle``
once, when the last local subscriber is done with it. These tests drive the bus through
that interface with a transport that has no engine behind it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mycelium_mono import U64, MessageBus, MessageHandler, ServiceRuntime, message
from mycelium_mono.bus.transports.base import Inlet, NullTransport


@message(type_id=5121, topic="settle_test")
class Job:
    n: U64


class PeerStub(NullTransport):
    """Hands the bus whatever a test offers "from a peer"; sends nothing anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.inlet: Inlet | None = None

    async def start(self, inlet: Inlet) -> None:
        self.inlet = inlet


class Outcomes:
    """Settle callbacks per message number: what the transport would ack or nak."""

    def __init__(self) -> None:
        self.settled: dict[int, BaseException | None] = {}

    def settle_for(self, n: int) -> Any:
        def settle(error: BaseException | None) -> None:
            assert n not in self.settled, f"message {n} settled twice"
            self.settled[n] = error

        return settle


async def started(transport: PeerStub) -> tuple[MessageBus, Inlet]:
    bus = MessageBus(transport)
    await bus.start()
    assert transport.inlet is not None
    return bus, transport.inlet


async def test_a_raw_subscriber_settles_a_message_when_it_asks_for_the_next() -> None:
    bus, inlet = await started(PeerStub())
    sub = bus.subscribe(Job)
    out = Outcomes()
    for n in range(3):
        assert inlet.offer(Job(n=n), out.settle_for(n))
    assert (await sub.recv()).n == 0
    assert out.settled == {}, "settled before the application was done with it"
    assert (await sub.recv()).n == 1
    assert out.settled == {0: None}
    sub.ack()
    assert out.settled == {0: None, 1: None}
    await bus.close()


async def test_an_explicit_ack_subscriber_settles_only_at_ack() -> None:
    bus, inlet = await started(PeerStub())
    sub = bus.subscribe(Job, ack="explicit")
    out = Outcomes()
    for n in range(2):
        inlet.offer(Job(n=n), out.settle_for(n))
    await sub.recv()
    await sub.recv()
    assert out.settled == {}
    sub.ack()
    assert out.settled == {0: None, 1: None}
    await bus.close()


async def test_nak_settles_what_is_in_hand_with_the_error() -> None:
    bus, inlet = await started(PeerStub())
    sub = bus.subscribe(Job, ack="explicit")
    out = Outcomes()
    inlet.offer(Job(n=7), out.settle_for(7))
    await sub.recv()
    boom = ValueError("downstream refused")
    sub.nak(boom)
    assert out.settled == {7: boom}
    await bus.close()


async def test_a_fanned_out_message_settles_once_after_the_last_subscriber() -> None:
    bus, inlet = await started(PeerStub())
    fast, slow = bus.subscribe(Job), bus.subscribe(Job)
    out = Outcomes()
    inlet.offer(Job(n=1), out.settle_for(1))
    fast.drain()
    fast.ack()
    assert out.settled == {}, "settled while another subscriber still had it queued"
    slow.drain()
    slow.ack()
    assert out.settled == {1: None}
    await bus.close()


async def test_a_message_no_subscriber_takes_is_refused_not_settled_until_one_subscribes() -> None:
    # Settled (acked) at once, it was lost: JetStream fetched it after a shutdown closed the
    # subscriptions (tests/test_stranger6_stall6.py). Without a settle it is taken and counted.
    bus, inlet = await started(PeerStub())
    out = Outcomes()
    assert not inlet.offer(Job(n=3), out.settle_for(3))
    assert out.settled == {} and bus.stats.no_local_subscriber == 0
    waiting = asyncio.ensure_future(inlet.space(Job))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # no subscriber yet: the transport keeps holding it
    sub = bus.subscribe(Job)
    await asyncio.wait_for(waiting, 1)
    assert inlet.offer(Job(n=3), out.settle_for(3))
    assert (await sub.recv()).n == 3 and out.settled == {}
    sub.ack()
    assert out.settled == {3: None}
    assert inlet.offer(Job(n=4))  # nothing to settle: taken while a subscriber exists
    sub.close()
    assert inlet.offer(Job(n=5)) and bus.stats.no_local_subscriber == 1
    await bus.close()


async def test_an_offer_to_a_full_block_subscriber_is_refused_with_nothing_queued() -> None:
    bus, inlet = await started(PeerStub())
    full = bus.subscribe(Job, maxsize=2, policy="block")
    roomy = bus.subscribe(Job, maxsize=100, policy="block")
    assert inlet.offer(Job(n=0)) and inlet.offer(Job(n=1))
    assert not inlet.offer(Job(n=2))
    assert len(full) == 2 and len(roomy) == 2
    space = asyncio.create_task(inlet.space(Job))
    await asyncio.sleep(0)
    assert not space.done()
    full.recv_nowait()
    await asyncio.wait_for(space, 5)
    assert inlet.offer(Job(n=2))
    assert [m.n for m in full.drain()] == [1, 2]
    await bus.close()


class Picky(MessageHandler[Job]):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def handle(self, job: Job) -> None:
        self.seen.append(job.n)
        if job.n == 1:
            raise ValueError("job 1 is poison")


async def test_a_handler_service_settles_after_the_handler_returned_or_with_its_error() -> None:
    transport = PeerStub()
    bus, inlet = await started(transport)
    runtime = ServiceRuntime(bus)
    picky = Picky()
    await runtime.spawn_service(picky)
    out = Outcomes()
    for n in range(3):
        inlet.offer(Job(n=n), out.settle_for(n))
    async with asyncio.timeout(5):
        while len(out.settled) < 3:
            await asyncio.sleep(0.001)
    assert picky.seen == [0, 1, 2]
    assert out.settled[0] is None and out.settled[2] is None
    assert isinstance(out.settled[1], ValueError)
    await runtime.shutdown()


async def test_a_drop_oldest_subscriber_settles_what_it_dropped() -> None:
    bus, inlet = await started(PeerStub())
    bus.subscribe(Job, maxsize=1, policy="drop_oldest")
    out = Outcomes()
    inlet.offer(Job(n=0), out.settle_for(0))
    inlet.offer(Job(n=1), out.settle_for(1))
    assert out.settled == {0: None}
    await bus.close()


async def test_unknown_ack_mode_is_refused_with_help() -> None:
    bus = MessageBus()
    with pytest.raises(ValueError, match="help: use 'auto' or 'explicit'"):
        bus.subscribe(Job, ack="later")  # type: ignore[arg-type]
