"""JetStream dead letters: one copy per input, however often the dead-lettering is repeated.

Dead-lettering is two steps at the server: publish a copy to ``dlq.<stream>.<subject>``
(confirmed by its PubAck), then ``term`` the input. A stage that dies between the two leaves
the input unsettled: it is delivered again and dead-lettered again. Each test runs a private
``nats-server -js`` and the stage of ``tests/peers/js_stage.py`` (a real process, SIGKILLed at
an exact point), then reads the dead-letter stream's stored copies.
"""

from __future__ import annotations

import pytest
from peers.harness import NatsServer, Peers
from test_jetstream_stage_crash import (
    COUNT,
    Stage,
    dead_letters,
    finish,
    publish_ticks,
    self_killed,
    stored_quotes,
)

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_stage_killed_between_dead_letter_and_term_stores_one_dead_letter(
    peers: Peers, nats_server: NatsServer, stream_name: str, mode: str
) -> None:
    # Tick 7 always raises: with max_deliver=2 it is dead-lettered on its second delivery,
    # and the stage dies right before the term. The restarted stage gets Tick 7 again and
    # dead-letters it again. Before, the second copy was stored too (no message id on the
    # dead-letter publish): two dead letters for one input.
    count = COUNT // 10
    await publish_ticks(nats_server.url, stream_name, count)
    stage = Stage(mode, max_deliver=2, ack_wait_s=1.0)
    args = [*stage.args(nats_server, stream_name), "--fail-seq", "7"]
    doomed = [*args, "--die-after", "1", "--die-at", "term"]
    await self_killed(peers, nats_server, stream_name, doomed)
    await finish(peers, nats_server, stream_name, args)
    dead = await dead_letters(nats_server.url, stream_name)
    assert dead == [7], f"dead-letter copies: {dead}"
    quotes = set(await stored_quotes(nats_server.url, stream_name))
    assert quotes == set(range(1, count + 1)) - {7}
