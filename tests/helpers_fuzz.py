"""The malformed-input storm the transport fuzz tests throw at a live, subscribed transport.

``test_zmq`` and ``test_nats`` each start a real transport, subscribe it to ``Tick`` and hand a
raw client (the attacker) the payloads built here: random bytes, and valid ``Tick`` bodies with
bits flipped, tails cut and bytes inserted. Each test then asserts what its engine must do.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium_mono.bus.transports.base import TransportStats


class _Closable(Protocol):
    def close(self) -> None: ...


Live = TypeVar("Live", bound=_Closable)


def on_a_new_loop(start: Callable[[asyncio.AbstractEventLoop], Live]) -> Iterator[Live]:
    """For a fixture: ``start`` a live target on a fresh event loop; close both afterwards.

    The storm runs inside hypothesis, which calls a plain function, so the target drives its
    own loop (``loop.run_until_complete``) instead of pytest-asyncio's.
    """
    loop = asyncio.new_event_loop()
    target = start(loop)
    try:
        yield target
    finally:
        target.close()
        loop.close()


def mutate(body: bytes, rng: random.Random) -> bytes:
    """``body`` with one to five bytes flipped, a tail cut or a few random bytes inserted."""
    data = bytearray(body)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(3)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)) :]
        else:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randrange(1, 9))
    return bytes(data)


def accounted(stats: TransportStats) -> int:
    """Inbound payloads the transport has finished with: delivered, or dropped and counted."""
    return (
        stats.received
        + stats.dropped_malformed
        + stats.dropped_unknown_type
        + stats.extra.get("drop_fingerprint_mismatch", 0)
        + stats.extra.get("duplicates", 0)
        + stats.extra.get("sequence_out_of_range", 0)
    )


def throw_storm(
    throw: Callable[[list[bytes]], None],
    valid: Sequence[bytes],
    *,
    max_examples: int,
    frame: Callable[[bytes], bytes] = bytes,
) -> None:
    """Hypothesis: ``throw`` batches of random and mutated-``valid`` bodies, each ``frame``d.

    ``frame`` wraps a body for the engine (ZeroMQ needs the subscription prefix in front, or its
    own filter drops the frame before the transport sees it).
    """

    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        st.lists(st.binary(max_size=120), max_size=20),
        st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 2**32)), max_size=20),
    )
    def storm(random_bodies: list[bytes], mutations: list[tuple[int, int]]) -> None:
        bodies = list(random_bodies)
        bodies += [mutate(valid[i], random.Random(seed)) for i, seed in mutations]
        throw([frame(body) for body in bodies])

    storm()
