"""A live Uniswap-V2 feed: Ethereum JSON-RPC over WebSocket, ``eth_subscribe`` to logs.

A V2 pair emits ``Sync(reserve0, reserve1)`` and then ``Swap(sender, amount0In, amount1In,
amount0Out, amount1Out, to)`` in the same transaction. The client keeps the latest ``Sync``
per pool and turns each ``Swap`` into one :class:`V2Swap` with those post-swap reserves.
A pool's tokens are asked once with ``eth_call`` to ``token0()``/``token1()``.

It reconnects with exponential backoff and re-subscribes; a payload it cannot decode is
counted (``stats.malformed``), logged, and skipped — the stream goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bandit.protocol import V2Swap

__all__ = [
    "SWAP_TOPIC",
    "SYNC_TOPIC",
    "ClientStats",
    "EthLogClient",
    "LogDecodeError",
    "SwapEvent",
    "SyncEvent",
    "decode_log",
]

log = logging.getLogger("bandit.ethrpc")

SWAP_TOPIC = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
SYNC_TOPIC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
TOKEN0_SELECTOR = "0x0dfe1681"  # token0()
TOKEN1_SELECTOR = "0xd21220a7"  # token1()


class LogDecodeError(ValueError):
    """A log or JSON-RPC payload does not have the shape of a V2 Swap/Sync event."""


@dataclass(frozen=True)
class SyncEvent:
    """``Sync(uint112 reserve0, uint112 reserve1)``."""

    pool: bytes
    reserve0: int
    reserve1: int
    block_number: int
    log_index: int


@dataclass(frozen=True)
class SwapEvent:
    """``Swap(address indexed sender, uint amount0In, uint amount1In, uint amount0Out,
    uint amount1Out, address indexed to)``."""

    pool: bytes
    sender: bytes
    to: bytes
    amount0_in: int
    amount1_in: int
    amount0_out: int
    amount1_out: int
    block_number: int
    log_index: int
    timestamp_s: int | None


def _hex_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise LogDecodeError(f"{what} must be a 0x-prefixed hex string, got {value!r:.80}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise LogDecodeError(f"{what} is not valid hex: {value!r:.80}") from None


def _quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise LogDecodeError(f"{what} must be a 0x-prefixed hex quantity, got {value!r:.80}")
    try:
        return int(value, 16)
    except ValueError:
        raise LogDecodeError(f"{what} is not a hex quantity: {value!r:.80}") from None


def _words(data: bytes, count: int, event: str) -> list[int]:
    if len(data) != 32 * count:
        raise LogDecodeError(f"{event} data is {len(data)} bytes, expected {count} 32-byte words")
    return [int.from_bytes(data[i * 32 : (i + 1) * 32], "big") for i in range(count)]


def _topic_address(topic: bytes, what: str) -> bytes:
    if len(topic) != 32 or any(topic[:12]):
        raise LogDecodeError(f"{what} topic is not an ABI-encoded address")
    return topic[12:]


def decode_log(entry: Any) -> SwapEvent | SyncEvent:
    """Decode one log object (as in ``eth_getLogs``/``eth_subscription``) of a V2 pair."""
    if not isinstance(entry, dict):
        raise LogDecodeError(f"a log must be a JSON object, got {type(entry).__name__}")
    topics = entry.get("topics")
    if not isinstance(topics, list) or not topics:
        raise LogDecodeError("log has no topics")
    pool = _hex_bytes(entry.get("address"), "log address")
    if len(pool) != 20:
        raise LogDecodeError(f"log address is {len(pool)} bytes, expected 20")
    data = _hex_bytes(entry.get("data"), "log data")
    block = _quantity(entry.get("blockNumber"), "blockNumber")
    index = _quantity(entry.get("logIndex"), "logIndex")
    topic0 = str(topics[0]).lower()
    if topic0 == SYNC_TOPIC:
        reserve0, reserve1 = _words(data, 2, "Sync")
        return SyncEvent(pool, reserve0, reserve1, block, index)
    if topic0 == SWAP_TOPIC:
        if len(topics) != 3:
            raise LogDecodeError(f"Swap log has {len(topics)} topics, expected 3 (sender, to)")
        a0_in, a1_in, a0_out, a1_out = _words(data, 4, "Swap")
        stamp = entry.get("blockTimestamp")
        return SwapEvent(
            pool,
            _topic_address(_hex_bytes(topics[1], "sender"), "sender"),
            _topic_address(_hex_bytes(topics[2], "to"), "to"),
            a0_in, a1_in, a0_out, a1_out, block, index,
            _quantity(stamp, "blockTimestamp") if stamp is not None else None,
        )
    raise LogDecodeError(f"topic0 {topic0:.20}... is neither Swap nor Sync")


@dataclass
class ClientStats:
    """Counters of a live feed connection."""

    connects: int = 0
    reconnects: int = 0
    logs: int = 0
    swaps: int = 0
    malformed: int = 0
    removed: int = 0
    swaps_without_sync: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)


class _Disconnected(Exception):
    pass


class EthLogClient:
    """``async for swap in EthLogClient(url).swaps()``: live swaps, across reconnects."""

    def __init__(
        self,
        url: str,
        *,
        pools: Sequence[str] = (),
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_reconnects: int | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.pools = [p.lower() for p in pools]
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_reconnects = max_reconnects
        self.request_timeout = request_timeout
        self.stats = ClientStats()
        self._ids = itertools.count(1)
        self._tokens: dict[bytes, tuple[bytes, bytes]] = {}
        self._reserves: dict[bytes, SyncEvent] = {}
        self._seq = 0

    async def swaps(self) -> AsyncIterator[V2Swap]:
        """Every swap of the subscribed pools; reconnects until ``max_reconnects`` is used up."""
        import websockets

        failures = 0
        while True:
            try:
                async with websockets.connect(self.url, max_size=2**22) as ws:
                    self.stats.connects += 1
                    if self.stats.connects > 1:
                        self.stats.reconnects += 1
                    async for swap in self._session(ws):  # ends only by raising
                        failures = 0
                        yield swap
            except (OSError, _Disconnected, websockets.ConnectionClosed, TimeoutError) as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                failures += 1
                if self.max_reconnects is not None and failures > self.max_reconnects:
                    raise ConnectionError(
                        f"live feed {self.url}: gave up after {failures - 1} reconnects "
                        f"({self.stats.last_error})\n"
                        "help: check the node's WebSocket endpoint ([adapter] ws_url)"
                    ) from exc
                delay = min(self.backoff_initial * 2 ** (failures - 1), self.backoff_max)
                log.warning("live feed %s: %s; reconnecting in %.2fs", self.url,
                            self.stats.last_error, delay)
                await asyncio.sleep(delay)

    async def _session(self, ws: Any) -> AsyncIterator[V2Swap]:
        notifications: asyncio.Queue[Any] = asyncio.Queue()
        pending: dict[int, asyncio.Future[Any]] = {}
        reader = asyncio.create_task(self._read(ws, notifications, pending))
        try:
            params: dict[str, Any] = {"topics": [[SWAP_TOPIC, SYNC_TOPIC]]}
            if self.pools:
                params["address"] = self.pools
            await self._request(ws, pending, "eth_subscribe", ["logs", params])
            while True:
                item = await notifications.get()
                if item is None:
                    raise _Disconnected(self._close_reason(reader))
                swap = await self._on_log(ws, pending, item)
                if swap is not None:
                    yield swap
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    @staticmethod
    def _close_reason(reader: asyncio.Task[None]) -> str:
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            return f"connection lost: {reader.exception()}"
        return "connection closed by the server"

    async def _read(self, ws: Any, notifications: asyncio.Queue[Any],
                    pending: dict[int, asyncio.Future[Any]]) -> None:
        """Route responses to waiting requests and subscription logs to the queue."""
        try:
            async for raw in ws:
                try:
                    self._route(raw, notifications, pending)
                except LogDecodeError as exc:
                    self._malformed(exc, raw)
        finally:
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(_Disconnected("connection closed during a request"))
            notifications.put_nowait(None)

    def _route(self, raw: Any, notifications: asyncio.Queue[Any],
               pending: dict[int, asyncio.Future[Any]]) -> None:
        try:
            payload = json.loads(raw)
        except (TypeError, ValueError):
            raise LogDecodeError("payload is not JSON") from None
        if not isinstance(payload, dict):
            raise LogDecodeError(f"payload is a JSON {type(payload).__name__}, not an object")
        if payload.get("method") == "eth_subscription":
            params = payload.get("params")
            if not isinstance(params, dict) or "result" not in params:
                raise LogDecodeError("eth_subscription notification without params.result")
            notifications.put_nowait(params["result"])
            return
        fut = pending.pop(payload.get("id"), None)  # type: ignore[arg-type]
        if fut is None:
            raise LogDecodeError(f"response to an unknown request id {payload.get('id')!r:.40}")
        if "error" in payload:
            fut.set_exception(LogDecodeError(f"JSON-RPC error: {payload['error']!r:.200}"))
        else:
            fut.set_result(payload.get("result"))

    async def _request(self, ws: Any, pending: dict[int, asyncio.Future[Any]],
                       method: str, params: list[Any]) -> Any:
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending[ident] = fut
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": ident, "method": method,
                                  "params": params}))
        return await asyncio.wait_for(fut, self.request_timeout)

    async def _on_log(self, ws: Any, pending: dict[int, asyncio.Future[Any]],
                      entry: Any) -> V2Swap | None:
        self.stats.logs += 1
        if isinstance(entry, dict) and entry.get("removed") is True:
            self.stats.removed += 1  # a reorg took it back; the next Sync corrects reserves
            return None
        try:
            event = decode_log(entry)
            if isinstance(event, SyncEvent):
                self._reserves[event.pool] = event
                return None
            tokens = await self._pool_tokens(ws, pending, event.pool)
        except LogDecodeError as exc:
            self._malformed(exc, entry)
            return None
        return self._swap(event, tokens)

    async def _pool_tokens(self, ws: Any, pending: dict[int, asyncio.Future[Any]],
                           pool: bytes) -> tuple[bytes, bytes]:
        known = self._tokens.get(pool)
        if known is not None:
            return known
        address = "0x" + pool.hex()
        found = []
        for selector in (TOKEN0_SELECTOR, TOKEN1_SELECTOR):
            result = await self._request(ws, pending, "eth_call",
                                         [{"to": address, "data": selector}, "latest"])
            word = _hex_bytes(result, "eth_call result")
            found.append(_topic_address(word, "token"))
        self._tokens[pool] = (found[0], found[1])
        return self._tokens[pool]

    def _swap(self, event: SwapEvent, tokens: tuple[bytes, bytes]) -> V2Swap | None:
        sync = self._reserves.get(event.pool)
        if sync is None or sync.block_number != event.block_number:
            self.stats.swaps_without_sync += 1
            return None
        zero_for_one = event.amount0_in > 0
        self._seq += 1
        self.stats.swaps += 1
        stamp = event.timestamp_s * 10**9 if event.timestamp_s is not None else time.time_ns()
        return V2Swap(
            pool_address=event.pool,
            token0=tokens[0],
            token1=tokens[1],
            amount_in=event.amount0_in if zero_for_one else event.amount1_in,
            amount_out=event.amount1_out if zero_for_one else event.amount0_out,
            zero_for_one=zero_for_one,
            reserve0=sync.reserve0,
            reserve1=sync.reserve1,
            timestamp_ns=stamp,
            block_number=event.block_number,
            seq=self._seq,
        )

    def _malformed(self, exc: Exception, payload: Any) -> None:
        self.stats.malformed += 1
        self.stats.last_error = str(exc)
        log.warning("live feed %s: dropped a malformed payload (%s): %.120r",
                    self.url, exc, payload)
