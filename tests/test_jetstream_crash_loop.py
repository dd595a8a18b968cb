"""A JetStream stage SIGKILLed again and again: what reaches ``max_deliver`` unhandled.

The server counts a delivery for every message a consumer fetched and did not settle, begun
or not. A stage that keeps dying used to push its whole prefetched window past
``max_deliver``, and all of it was dead-lettered on arrival though the handler had begun on
one message only. Now every redelivery is handled alone (fetched one at a time, offered with
nothing else unsettled), so a kill charges one redelivered message, and only one delivered
more than ``max_deliver + 1`` times without settling is dead-lettered on arrival.

Each test runs a private ``nats-server -js`` and the stage of ``tests/peers/js_stage.py``
(``--record``: the seq of every Tick a handler began on, written before the work), then
counts from what is stored: lost (neither a Quote nor a dead letter: must be 0) and
dead-lettered without a handler ever beginning on it.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from peers.harness import NatsServer, Peers
from test_jetstream_stage_crash import (
    Stage,
    dead_letters,
    finish,
    publish_ticks,
    self_killed,
    stage_settled,
    stored_quotes,
)

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]


def began(path: Path) -> set[int]:
    return {int(line) for line in path.read_text().split()} if path.exists() else set()


async def outcome(
    server: NatsServer, stream: str, count: int, record: Path
) -> tuple[set[int], list[int], set[int]]:
    """(lost, dead-letter copies, dead-lettered without a handler ever beginning on it)."""
    quotes = set(await stored_quotes(server.url, stream))
    dead = await dead_letters(server.url, stream)
    lost = set(range(1, count + 1)) - quotes - set(dead)
    return lost, dead, set(dead) - began(record)


async def run_until_it_gets_past(
    peers: Peers, server: NatsServer, stream: str, args: list[str], stage: Stage, crash_seq: int
) -> int:
    """Start the stage again after each death until it settles the stream; the deaths."""
    deaths = 0
    for _ in range(stage.max_deliver + 4):
        runner = peers.spawn("js_stage", *args)
        while runner.proc.poll() is None and not await stage_settled(server.url, stream):
            await asyncio.sleep(0.05)
        if runner.proc.poll() is None:
            runner.stop()
            return deaths
        assert runner.proc.returncode == -9, runner.stderr_tail()
        deaths += 1
    raise AssertionError(
        f"still dying after {deaths} runs: Tick {crash_seq} was never dead-lettered"
    )


async def test_a_stage_dying_on_every_first_input_dead_letters_only_what_it_began(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    # Eight deaths, each on the first input handled, with max_deliver=5: before, the 16
    # inputs every stage held reached 6 deliveries together and were dead-lettered on
    # arrival, 15 of them never handled.
    count = 200
    record = tmp_path / "began.txt"
    await publish_ticks(nats_server.url, stream_name, count)
    stage = Stage("sync", fetch_batch=16, max_ack_pending=16, ack_wait_s=1.0)
    args = [*stage.args(nats_server, stream_name), "--record", str(record)]
    kills = 8
    for _ in range(kills):
        await self_killed(
            peers, nats_server, stream_name, [*args, "--die-after", "1", "--die-at", "emit"]
        )
    await finish(peers, nats_server, stream_name, args)
    lost, dead, unhandled = await outcome(nats_server, stream_name, count, record)
    print(f"dead-lettered {sorted(dead)}, never begun {sorted(unhandled)}")
    assert not lost, f"lost {sorted(lost)}"
    assert not unhandled, f"dead-lettered without a handler beginning on them: {unhandled}"
    assert len(dead) == len(set(dead)), f"an input dead-lettered twice: {dead}"
    # Only the inputs a stage died on alone: at most one per kill past the limit.
    assert len(dead) <= kills - stage.max_deliver, sorted(dead)


@pytest.mark.parametrize("seed", [5, 1789])
async def test_a_stage_killed_again_and_again_at_random_points_loses_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, seed: int
) -> None:
    # Kills from outside at a random moment (often before READY, while the first fetches
    # are under way) and self-kills at an exact point after a few inputs, with max_deliver=2
    # so many inputs reach the limit. Counted: lost (0), dead-lettered never begun.
    count = 1000
    kills = 14
    rng = random.Random(seed)
    record = tmp_path / "began.txt"
    await publish_ticks(nats_server.url, stream_name, count)
    stage = Stage(
        "sync", fetch_batch=16, max_ack_pending=32, ack_wait_s=2.0, max_deliver=2, slow_ms=5.0
    )
    args = [*stage.args(nats_server, stream_name), "--record", str(record)]
    for _ in range(kills):
        if rng.random() < 0.5:
            at = rng.choice(["emit", "return", "acked"])
            after = rng.randrange(1, 12)
            await self_killed(
                peers, nats_server, stream_name, [*args, "--die-after", str(after), "--die-at", at]
            )
            continue
        victim = peers.spawn("js_stage", *args)
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        assert not await stage_settled(nats_server.url, stream_name), "nothing left to kill"
        victim.kill()
        victim.proc.wait(10)
    await finish(peers, nats_server, stream_name, args)
    lost, dead, unhandled = await outcome(nats_server, stream_name, count, record)
    print(
        f"seed {seed}: {kills} kills, dead-lettered {len(set(dead))} ({len(dead)} copies), "
        f"never begun {len(unhandled)}: {sorted(unhandled)}"
    )
    assert not lost, f"lost {sorted(lost)}"
    assert len(dead) == len(set(dead)), f"an input dead-lettered twice: {dead}"
    # A message reaches max_deliver + 2 unbegun only if kills keep landing while it is
    # fetched and not yet begun: alone, between its lone fetch and its handler's start.
    # Measured: 0 in 6 seeds with two busy loops beside the test, since redeliveries no
    # longer wait in a batch fetched before they came due (the start window); before that,
    # 0-3 per 14 kills on an idle machine, 5-7 with a second test suite running beside it,
    # and 18-19 before redeliveries were handled alone at all.
    assert len(unhandled) <= kills * 3 // 4, f"dead-lettered never begun: {sorted(unhandled)}"


async def test_an_input_that_kills_its_stage_every_time_is_dead_lettered_alone(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    # Tick 5 SIGKILLs the stage whenever a handler begins on it (a crash loop). It must end
    # up dead-lettered, so the stage gets past it, and it alone: the inputs every dying
    # stage held with it reach the limit too, and each gets its try alone first.
    count = 300
    record = tmp_path / "began.txt"
    await publish_ticks(nats_server.url, stream_name, count)
    stage = Stage("sync", fetch_batch=16, max_ack_pending=32, ack_wait_s=1.0, max_deliver=3)
    args = [*stage.args(nats_server, stream_name), "--record", str(record), "--crash-seq", "5"]
    deaths = await run_until_it_gets_past(peers, nats_server, stream_name, args, stage, 5)
    lost, dead, _ = await outcome(nats_server, stream_name, count, record)
    print(f"{deaths} deaths, dead-lettered {dead}")
    assert not lost, f"lost {sorted(lost)}"
    assert dead == [5], dead
    # Once at each of its max_deliver deliveries and once more alone, then dead-lettered.
    assert deaths == stage.max_deliver + 1, deaths


async def test_inputs_coming_due_while_a_restarted_stage_is_busy_are_each_tried_alone(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    # Tick 2 SIGKILLs the stage whenever a handler begins on it. Each stage dies holding a
    # window fetched with Tick 2; the next one starts before that window comes due, so its
    # first fetches bring new inputs, and it is busy with them (5 ms each) when the window
    # comes back. Fetched back in one batch, the window was charged a delivery at every
    # death though only Tick 2 was ever begun, and after max_deliver + 1 deaths all of it
    # was dead-lettered on arrival, never handled.
    count = 600
    record = tmp_path / "began.txt"
    await publish_ticks(nats_server.url, stream_name, count)
    stage = Stage(
        "sync", fetch_batch=16, max_ack_pending=32, ack_wait_s=1.0, max_deliver=2, slow_ms=5.0
    )
    args = [*stage.args(nats_server, stream_name), "--record", str(record), "--crash-seq", "2"]
    deaths = await run_until_it_gets_past(peers, nats_server, stream_name, args, stage, 2)
    lost, dead, unhandled = await outcome(nats_server, stream_name, count, record)
    print(f"{deaths} deaths, dead-lettered {dead}, never begun {sorted(unhandled)}")
    assert not lost, f"lost {sorted(lost)}"
    assert not unhandled, f"dead-lettered without a handler beginning on them: {unhandled}"
    assert dead == [2], dead
    assert deaths == stage.max_deliver + 1, deaths
