"""A durable JetStream consumer restarted with a different definition.

Two kinds of "different": the consumer's own settings (``ack_wait_s``, ``max_ack_pending``,
given to the transport) and the message type's layout. Each test runs a private
``nats-server -js``.

nats-py's ``pull_subscribe`` creates a durable consumer only if it does not exist: a process
restarted with other settings silently kept the old ones at the server (asked for
``max_ack_pending=16`` and ``ack_wait_s=30``, the server kept handing out 64 and
redelivering after 2 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from peers.harness import NatsServer, Peers, until
from peers.messages import Tick
from test_jetstream_stage_crash import (
    COUNT,
    Stage,
    check_outputs,
    consumer_info,
    publish_ticks,
    until_acked,
    wait_settled,
)

from mycelium_mono import MessageBus

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network]

CONSUMER = "defs-dist_test-4001"


async def hold_unacked(url: str, stream: str, want: int, **options: Any) -> Any:
    """Consume under durable "defs" without ever acking until ``want`` messages arrived
    (at most 10 s); the consumer's info then."""
    bus = MessageBus.with_nats(url, jetstream=True, stream=stream, durable="defs", **options)
    sub = bus.subscribe(Tick, maxsize=10_000)  # never read: nothing is settled
    await bus.ready()
    try:
        await until(lambda: len(sub) >= want, timeout=10)
        info = await consumer_info(url, stream, CONSUMER)
    finally:
        await bus.transport.close()  # not bus.close(): nothing queued may count as done
    return info


async def test_a_durable_consumer_restarted_with_other_settings_gets_them(
    nats_server: NatsServer, stream_name: str
) -> None:
    await publish_ticks(nats_server.url, stream_name, 500)
    first = await hold_unacked(
        nats_server.url, stream_name, 64, max_ack_pending=64, ack_wait_s=30.0, fetch_batch=16
    )
    assert (first.config.max_ack_pending, first.config.ack_wait) == (64, 30.0)
    assert first.num_ack_pending == 64
    # The first process's 64 are unacked and the server hands out nothing new: the second
    # one gets the first of them once it is redelivered, after its ack_wait (1 s) if the
    # server has it, after the old 30 s if not. (Only one: a redelivery is handled alone,
    # and this subscriber never settles it.)
    second = await hold_unacked(
        nats_server.url, stream_name, 1, max_ack_pending=16, ack_wait_s=1.0, fetch_batch=16
    )
    assert (second.config.max_ack_pending, second.config.ack_wait) == (16, 1.0), second.config


async def test_a_stage_restarted_with_a_different_tick_definition_is_refused_and_loses_nothing(
    peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    await publish_ticks(nats_server.url, stream_name, COUNT)
    stage = Stage("sync", slow_ms=0.5)
    args = stage.args(nats_server, stream_name)
    first = peers.spawn("js_stage", *args)
    await first.aexpect("READY", timeout=60)
    await until_acked(nats_server.url, stream_name, COUNT // 3)
    first.kill()
    floor = (await consumer_info(nats_server.url, stream_name, "relay-dist_test-4001")).ack_floor
    # The same durable, with Tick defined differently: refused before consuming anything.
    wrong = peers.spawn(
        "js_pipe", "--url", nats_server.url, "--stream", stream_name, "--name", "relay",
        "--role", "a", "--tick-v2",
    )  # fmt: skip
    assert wrong.proc.wait(60) != 0, "a process with the wrong definition kept running"
    assert "WireMismatchError" in wrong.stderr_tail(), wrong.stderr_tail()
    after = (await consumer_info(nats_server.url, stream_name, "relay-dist_test-4001")).ack_floor
    assert after.stream_seq == floor.stream_seq, "the wrong definition acked something"
    last = peers.spawn("js_stage", *args)
    await last.aexpect("READY", timeout=60)
    await wait_settled(nats_server.url, stream_name, timeout=60)
    last.stop()
    await check_outputs(nats_server, stream_name, stage, kills=1)
