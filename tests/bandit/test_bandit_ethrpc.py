"""The live feed: ABI decoding of real Swap/Sync logs, and a client against local servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from bandit.ethrpc import (
    SWAP_TOPIC,
    SYNC_TOPIC,
    TOKEN0_SELECTOR,
    EthLogClient,
    LogDecodeError,
    SwapEvent,
    SyncEvent,
    decode_log,
)
from bandit.protocol import V2Swap

POOL = bytes.fromhex("b4e16d0168e52d35cacd2c6185b44281ec28c9dc")  # USDC/WETH on mainnet
TOKEN0 = bytes.fromhex("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48")
TOKEN1 = bytes.fromhex("c02aaa39b223fe8d0a0e5c4f27ead9083c756cc2")
SENDER = bytes.fromhex("7a250d5630b4cf539739df2c5dacb4c659f2488d")
TO = bytes.fromhex("3fc91a3afd70395cd496c647d5a6cc9d4b2b7fad")


def word(value: int) -> str:
    return value.to_bytes(32, "big").hex()


def topic_address(address: bytes) -> str:
    return "0x" + (b"\x00" * 12 + address).hex()


def sync_log(r0: int, r1: int, block: int, index: int) -> dict[str, Any]:
    return {
        "address": "0x" + POOL.hex(),
        "topics": [SYNC_TOPIC],
        "data": "0x" + word(r0) + word(r1),
        "blockNumber": hex(block),
        "logIndex": hex(index),
        "removed": False,
    }


def swap_log(
    a0_in: int, a1_in: int, a0_out: int, a1_out: int, block: int, index: int
) -> dict[str, Any]:
    return {
        "address": "0x" + POOL.hex(),
        "topics": [SWAP_TOPIC, topic_address(SENDER), topic_address(TO)],
        "data": "0x" + word(a0_in) + word(a1_in) + word(a0_out) + word(a1_out),
        "blockNumber": hex(block),
        "logIndex": hex(index),
        "blockTimestamp": hex(1_700_000_000),
        "removed": False,
    }


def test_decodes_a_sync_log_into_reserves() -> None:
    event = decode_log(sync_log(31_000_000 * 10**6, 15_000 * 10**18, 19_000_000, 7))
    assert event == SyncEvent(POOL, 31_000_000 * 10**6, 15_000 * 10**18, 19_000_000, 7)


def test_decodes_a_swap_log_with_indexed_sender_and_to() -> None:
    event = decode_log(swap_log(2_000 * 10**6, 0, 0, 10**18, 19_000_000, 8))
    assert isinstance(event, SwapEvent)
    assert (event.sender, event.to) == (SENDER, TO)
    assert (event.amount0_in, event.amount1_in, event.amount0_out, event.amount1_out) == (
        2_000 * 10**6,
        0,
        0,
        10**18,
    )
    assert event.timestamp_s == 1_700_000_000


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(data=e["data"][:-2]), "expected 4 32-byte words"),
        (lambda e: e.update(topics=e["topics"][:1]), "expected 3"),
        (lambda e: e.update(topics=["0x" + "ab" * 32]), "neither Swap nor Sync"),
        (lambda e: e.update(blockNumber=19), "hex quantity"),
        (lambda e: e.update(address="0x1234"), "expected 20"),
        (lambda e: e.update(data="0xzz"), "not valid hex"),
    ],
)
def test_malformed_logs_raise_log_decode_error(
    mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    entry = swap_log(1, 0, 0, 1, 1, 1)
    mutate(entry)
    with pytest.raises(LogDecodeError, match=message):
        decode_log(entry)


# --------------------------------------------------------------------------- local node


def trades(count: int) -> list[dict[str, Any]]:
    """Sync+Swap pairs as a V2 pair emits them: reserves after the swap, then the swap."""
    logs, r0, r1 = [], 30_000_000 * 10**6, 15_000 * 10**18
    for i in range(count):
        if i % 2 == 0:
            a_in, out = 1_000 * 10**6, 10**17
            r0, r1 = r0 + a_in, r1 - out
            swap = swap_log(a_in, 0, 0, out, 100 + i, 1)
        else:
            a_in, out = 10**17, 900 * 10**6
            r0, r1 = r0 - out, r1 + a_in
            swap = swap_log(0, a_in, out, 0, 100 + i, 1)
        logs += [sync_log(r0, r1, 100 + i, 0), swap]
    return logs


class FakeNode:
    """A JSON-RPC node: answers eth_subscribe and eth_call(token0/token1), then streams logs.

    ``script(connection_number)`` gives what to send on that connection: log objects, raw
    strings (sent as-is), or ``"DROP"`` to cut the connection there — once the client has
    looked up the pool's tokens, so every log sent before the cut can still become a swap.
    """

    def __init__(self, script: Callable[[int], list[Any]],
                 backfill: Callable[[dict[str, Any]], list[Any]] = lambda query: []) -> None:
        self.script = script
        self.backfill = backfill
        self.backfills: list[dict[str, Any]] = []
        self.connections = 0
        self.calls = 0
        self.tokens_asked = asyncio.Event()
        self.streams: list[asyncio.Task[None]] = []
        self.subscriptions: list[Any] = []

    async def handler(self, ws: Any) -> None:
        self.connections += 1
        plan = self.script(self.connections)
        async for raw in ws:
            request = json.loads(raw)
            if request["method"] == "eth_call":
                token = TOKEN0 if request["params"][0]["data"] == TOKEN0_SELECTOR else TOKEN1
                self.calls += 1
                if self.calls == 2:
                    self.tokens_asked.set()
                await ws.send(
                    json.dumps(
                        {"jsonrpc": "2.0", "id": request["id"], "result": topic_address(token)}
                    )
                )
            elif request["method"] == "eth_getLogs":  # the backfill after a reconnect
                self.backfills.append(request["params"][0])
                reply = self.backfill(request["params"][0])
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": reply}))
            elif request["method"] == "eth_subscribe":
                self.subscriptions.append(request["params"])
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x9"}))
                self.streams.append(asyncio.create_task(self.stream(ws, plan)))

    async def stream(self, ws: Any, plan: list[Any]) -> None:
        for item in plan:
            if item == "DROP":
                await asyncio.wait_for(self.tokens_asked.wait(), 10)
                await ws.close()
                return
            if isinstance(item, str):
                await ws.send(item)
            else:
                await ws.send(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "method": "eth_subscription",
                            "params": {"subscription": "0x9", "result": item},
                        }
                    )
                )


@asynccontextmanager
async def serve(node: FakeNode) -> AsyncIterator[str]:
    async with websockets.serve(node.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def take(client: EthLogClient, count: int) -> list[V2Swap]:
    out: list[V2Swap] = []

    async def collect() -> None:
        async for swap in client.swaps():
            out.append(swap)
            if len(out) == count:
                return

    await asyncio.wait_for(collect(), 20)
    return out


async def test_client_turns_sync_and_swap_logs_into_v2_swaps() -> None:
    logs = trades(6)
    node = FakeNode(lambda n: logs)
    async with serve(node) as url:
        client = EthLogClient(url, max_reconnects=0)
        swaps = await take(client, 6)
    first = swaps[0]
    assert (first.pool_address, first.token0, first.token1) == (POOL, TOKEN0, TOKEN1)
    assert first.zero_for_one and first.amount_in == 1_000 * 10**6 and first.amount_out == 10**17
    assert (first.reserve0, first.reserve1) == (30_001_000 * 10**6, 15_000 * 10**18 - 10**17)
    assert not swaps[1].zero_for_one and swaps[1].amount_out == 900 * 10**6
    assert [s.seq for s in swaps] == [1, 2, 3, 4, 5, 6]
    assert client.stats.malformed == 0


async def test_client_reconnects_after_the_server_drops_mid_stream() -> None:
    logs = trades(8)
    # First connection: two trades then the connection is cut; the second sends the rest.
    node = FakeNode(lambda n: [*logs[:4], "DROP"] if n == 1 else logs[4:])
    async with serve(node) as url:
        client = EthLogClient(url, backoff_initial=0.01, max_reconnects=3)
        swaps = await take(client, 8)
    assert node.connections == 2 and client.stats.reconnects == 1
    assert [s.block_number for s in swaps] == list(range(100, 108))


async def test_client_survives_garbage_and_counts_it() -> None:
    logs = trades(4)
    bad_swap = swap_log(1, 0, 0, 1, 999, 1)
    bad_swap["data"] = "0x1234"
    garbage = [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"method": "eth_subscription"}),
        {"address": "0x" + POOL.hex(), "topics": [], "data": "0x"},
        bad_swap,
    ]
    node = FakeNode(lambda n: [logs[0], logs[1], *garbage, *logs[2:]])
    async with serve(node) as url:
        client = EthLogClient(url, max_reconnects=0)
        swaps = await take(client, 4)
    assert len(swaps) == 4
    assert client.stats.malformed == len(garbage)


async def test_client_gives_up_after_max_reconnects_with_a_hint() -> None:
    client = EthLogClient("ws://127.0.0.1:9", backoff_initial=0.01, max_reconnects=2)
    with pytest.raises(ConnectionError, match="gave up after 2 reconnects"):
        await take(client, 1)


def known_mainnet_tokens() -> None:
    from bandit.chain.registry import ChainToken
    from bandit.tokens import register

    register((ChainToken("USDC", 6, 1_000_000, deployed_at=TOKEN0),
              ChainToken("WETH", 18, 2_000_000_000, deployed_at=TOKEN1)))


async def test_polygon_adapter_streams_live_swaps_from_a_node() -> None:
    from bandit.services import AdapterConfig, PolygonAdapter

    known_mainnet_tokens()
    logs = trades(4)
    node = FakeNode(lambda n: logs)
    async with serve(node) as url:
        adapter = PolygonAdapter(AdapterConfig(source="websocket", ws_url=url,
                                               pools=("0x" + POOL.hex(),)))
        got: list[V2Swap] = []

        async def collect() -> None:
            async for swap in adapter.stream():
                got.append(swap)
                if len(got) == 4:
                    return

        await asyncio.wait_for(collect(), 20)
    assert adapter.expected_swaps() is None
    assert [s.block_number for s in got] == [100, 101, 102, 103]
    assert adapter.emitted == 4 and adapter.client.stats.swaps == 4
    [(kind, params)] = node.subscriptions
    assert kind == "logs"
    assert params == {"address": ["0x" + POOL.hex()], "topics": [[SWAP_TOPIC, SYNC_TOPIC]]}
