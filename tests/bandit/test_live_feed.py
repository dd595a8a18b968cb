"""The live feed's reserve bookkeeping against the fake node of test_bandit_ethrpc.

anvil never emits ``removed: true`` logs, and a Sync without a Swap needs a mint: these are the
cases the real-node tests cannot reach.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bandit.ethrpc import EthLogClient
from bandit.protocol import V2Swap

from tests.bandit.test_bandit_ethrpc import POOL, FakeNode, serve, swap_log, sync_log, take


def removed(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "removed": True}


async def test_a_removed_sync_rolls_the_pool_back_to_the_previous_block() -> None:
    logs = [sync_log(100, 200, 10, 0), swap_log(5, 0, 0, 9, 10, 1),
            sync_log(150, 140, 11, 0), swap_log(50, 0, 0, 60, 11, 1),
            removed(sync_log(150, 140, 11, 0)), removed(swap_log(50, 0, 0, 60, 11, 1))]
    node = FakeNode(lambda n: logs)
    async with serve(node) as url:
        client = EthLogClient(url, max_reconnects=0)
        swaps = await take(client, 3)
    rollback = swaps[2]
    assert (rollback.amount_in, rollback.amount_out) == (0, 0)  # a reserve update, no swap
    assert (rollback.reserve0, rollback.reserve1, rollback.block_number) == (100, 200, 10)
    assert (client.stats.removed, client.stats.rollbacks) == (1, 1)


async def test_the_replacement_block_after_a_reorg_is_not_skipped_as_seen() -> None:
    logs = [sync_log(100, 200, 10, 0), swap_log(5, 0, 0, 9, 10, 1),
            sync_log(150, 140, 11, 0), swap_log(50, 0, 0, 60, 11, 1),
            removed(sync_log(150, 140, 11, 0)),
            sync_log(120, 170, 11, 0), swap_log(20, 0, 0, 30, 11, 1)]
    node = FakeNode(lambda n: logs)
    async with serve(node) as url:
        swaps = await take(EthLogClient(url, max_reconnects=0), 4)
    assert (swaps[3].reserve0, swaps[3].reserve1, swaps[3].amount_in) == (120, 170, 20)


async def test_a_sync_without_a_swap_is_a_reserve_update() -> None:
    # A mint: Sync alone in block 10, then a swap in block 11.
    logs = [sync_log(1_000, 2_000, 10, 3), sync_log(1_100, 1_900, 11, 0),
            swap_log(100, 0, 0, 100, 11, 1)]
    node = FakeNode(lambda n: logs)
    async with serve(node) as url:
        client = EthLogClient(url, max_reconnects=0)
        swaps = await take(client, 2)
    mint, swap = swaps
    assert (mint.reserve0, mint.reserve1, mint.amount_in) == (1_000, 2_000, 0)
    assert mint.block_number == 10
    assert (swap.reserve0, swap.amount_in) == (1_100, 100)
    assert client.stats.reserve_updates == 1


async def test_a_lone_last_sync_is_emitted_after_the_grace_period() -> None:
    node = FakeNode(lambda n: [sync_log(7, 9, 10, 0)])
    async with serve(node) as url:
        swaps = await take(EthLogClient(url, max_reconnects=0, sync_grace=0.01), 1)
    assert [(s.pool_address, s.reserve0, s.reserve1) for s in swaps] == [(POOL, 7, 9)]


async def test_backfill_after_a_reconnect_asks_from_the_last_processed_block() -> None:
    logs = [sync_log(100, 200, 10, 0), swap_log(5, 0, 0, 9, 10, 1)]
    missed = [sync_log(105, 191, 12, 0), swap_log(5, 0, 0, 9, 12, 1)]
    node = FakeNode(lambda n: [*logs, "DROP"] if n == 1 else [],
                    backfill=lambda query: [*logs, *missed])  # block 10 again: skipped
    async with serve(node) as url:
        client = EthLogClient(url, backoff_initial=0.01, max_reconnects=3)
        swaps: list[V2Swap] = await asyncio.wait_for(take(client, 2), 20)
    assert [s.block_number for s in swaps] == [10, 12]
    assert node.backfills[0]["fromBlock"] == hex(10)
    assert (client.stats.backfilled, client.stats.duplicates) == (4, 2)


async def test_the_feed_socket_has_nagle_off_and_quick_ack_on() -> None:
    import socket

    import websockets
    from bandit.ethrpc import _low_latency

    node = FakeNode(lambda n: [])
    async with serve(node) as url, websockets.connect(url) as ws:
        sock = ws.transport.get_extra_info("socket")
        assert _low_latency(ws)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
