"""Per-publisher order holds for every subscriber under any interleaving; "block" loses nothing."""

from __future__ import annotations

import asyncio
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium_mono import U8, U32, MessageBus, SubscriptionClosed, message
from mycelium_mono.bus import QueueFullError, Subscriber
from mycelium_mono.bus.policy import OverflowPolicy


@message(type_id=5021, topic="bus_order_test")
class Stamp:
    publisher: U8
    seq: U32


async def _publish_all(bus: MessageBus, who: int, count: int, rng: random.Random) -> None:
    pub = bus.publisher(Stamp)
    for seq in range(count):
        if rng.random() < 0.3:
            while True:
                try:
                    pub.publish_nowait(Stamp(publisher=who, seq=seq))
                    break
                except QueueFullError:  # nothing was queued: wait, then publish it again
                    await pub.wait_for_space()
        else:
            await pub.publish(Stamp(publisher=who, seq=seq))
        if rng.random() < 0.4:
            await asyncio.sleep(0)


async def _consume_all(sub: Subscriber[Stamp], rng: random.Random) -> list[Stamp]:
    """Consume with a random mix of recv(), recv_batch() and drain() until closed."""
    got: list[Stamp] = []
    while await sub.wait():
        style = rng.randrange(3)
        if style == 0:
            got.append(await sub.recv())
        elif style == 1:
            got.extend(await sub.recv_batch())
        else:
            got.extend(sub.drain())
        if rng.random() < 0.5:
            await asyncio.sleep(0)
    return got


async def _scenario(
    counts: list[int], policies: list[tuple[OverflowPolicy, int]], rng: random.Random
) -> tuple[list[list[Stamp]], list[Subscriber[Stamp]]]:
    bus = MessageBus()
    subs = [bus.subscribe(Stamp, maxsize=size, policy=policy) for policy, size in policies]
    consumers = [asyncio.create_task(_consume_all(s, random.Random(rng.random()))) for s in subs]
    publishers = [
        asyncio.create_task(_publish_all(bus, who, n, random.Random(rng.random())))
        for who, n in enumerate(counts)
    ]
    await asyncio.wait_for(asyncio.gather(*publishers), 30)
    for sub in subs:
        sub.close()
    received = await asyncio.wait_for(asyncio.gather(*consumers), 30)
    return received, subs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(0, 60), min_size=1, max_size=5),
    policies=st.lists(
        st.tuples(st.sampled_from(["block", "drop_oldest"]), st.integers(1, 8)),
        min_size=1,
        max_size=4,
    ),
    rng=st.randoms(use_true_random=False),
)
def test_per_publisher_order_holds_for_every_subscriber(
    counts: list[int], policies: list[tuple[OverflowPolicy, int]], rng: random.Random
) -> None:
    received, subs = asyncio.run(_scenario(counts, policies, rng))
    for (policy, _), got, sub in zip(policies, received, subs, strict=True):
        for who, count in enumerate(counts):
            seqs = [m.seq for m in got if m.publisher == who]
            assert seqs == sorted(set(seqs)), f"publisher {who} out of order for {sub.name}"
            if policy == "block":
                assert seqs == list(range(count))
        if policy == "block":
            assert sub.stats.dropped == 0
            assert sub.stats.high_water <= sub.maxsize, "a 'block' queue went past its bound"
        else:
            assert len(got) + sub.stats.dropped == sum(counts)


async def _count_in_order(sub: Subscriber[Stamp], publishers: int) -> int:
    """Consume in batches, checking every publisher's sequence has no gap and no reordering."""
    expected = [0] * publishers
    total = 0
    while True:
        try:
            batch = await sub.recv_batch()
        except SubscriptionClosed:
            return total
        for m in batch:
            assert m.seq == expected[m.publisher], "gap or reorder under 'block'"
            expected[m.publisher] += 1
        total += len(batch)


async def test_a_million_messages_under_block_none_lost() -> None:
    publishers, per_publisher = 2, 500_000
    bus = MessageBus()
    subs = [bus.subscribe(Stamp, maxsize=256, policy="block") for _ in range(2)]
    consumers = [asyncio.create_task(_count_in_order(s, publishers)) for s in subs]

    async def produce(who: int) -> None:
        pub = bus.publisher(Stamp)
        for seq in range(per_publisher):
            await pub.publish(Stamp(publisher=who, seq=seq))

    await asyncio.wait_for(asyncio.gather(*(produce(w) for w in range(publishers))), 120)
    for sub in subs:
        sub.close()
    totals = await asyncio.wait_for(asyncio.gather(*consumers), 60)
    assert totals == [publishers * per_publisher] * len(subs)
    assert bus.stats.dropped == 0
    assert bus.stats.blocked > 0, "the bound was never reached: the test did not exercise 'block'"
