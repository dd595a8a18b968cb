"""A live Uniswap-V2 feed: Ethereum JSON-RPC over WebSocket, ``eth_subscribe`` to logs.

A V2 pair emits ``Sync(reserve0, reserve1)`` and then ``Swap(sender, amount0In, amount1In,
amount0Out, amount1Out, to)`` in the same transaction. The client keeps the latest ``Sync``
per pool and turns each ``Swap`` into one :class:`V2Swap` with those post-swap reserves.
A pool's tokens are asked once with ``eth_call`` to ``token0()``/``token1()``.

It never silently misses (issue 14):

- ``snapshot=True``: on the first connection every watched pool's ``getReserves`` is read and
  emitted as a reserve update, so pools that have not swapped since start are known.
- Any connection or handshake failure (a ``503`` included) reconnects with exponential
  backoff; after a reconnect ``eth_getLogs`` backfills from the last processed block, and a
  log already processed (by block and log index) is skipped.
- A ``Sync`` that no ``Swap`` of the same transaction follows (a mint, a burn) is emitted as a
  reserve update: a :class:`V2Swap` with zero amounts.
- A ``removed: true`` log (a reorg) rolls the pool back to its reserves before that block and
  emits them as a reserve update.
- ``TCP_NODELAY`` and ``TCP_QUICKACK`` on the socket: without them a notification after an
  ``eth_call`` came ~38 ms late (Nagle on the node, delayed ACK here).

A payload it cannot decode is counted (``stats.malformed``), logged, and skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
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
GET_RESERVES_SELECTOR = "0x0902f1ac"  # getReserves()
_HISTORY = 64  # reserve updates kept per pool for reorg rollback (deeper reorgs: resnapshot)


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
    tx_hash: str = ""
    timestamp_s: int | None = None


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
    tx_hash: str = ""


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
    tx_hash = str(entry.get("transactionHash") or "")
    stamp = entry.get("blockTimestamp")
    stamp_s = _quantity(stamp, "blockTimestamp") if stamp is not None else None
    if topic0 == SYNC_TOPIC:
        reserve0, reserve1 = _words(data, 2, "Sync")
        return SyncEvent(pool, reserve0, reserve1, block, index, tx_hash, stamp_s)
    if topic0 == SWAP_TOPIC:
        if len(topics) != 3:
            raise LogDecodeError(f"Swap log has {len(topics)} topics, expected 3 (sender, to)")
        a0_in, a1_in, a0_out, a1_out = _words(data, 4, "Swap")
        return SwapEvent(
            pool,
            _topic_address(_hex_bytes(topics[1], "sender"), "sender"),
            _topic_address(_hex_bytes(topics[2], "to"), "to"),
            a0_in, a1_in, a0_out, a1_out, block, index, stamp_s, tx_hash,
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
    rollbacks: int = 0
    reserve_updates: int = 0
    backfilled: int = 0
    duplicates: int = 0
    swaps_without_sync: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)


class _Disconnected(Exception):
    pass


_STOP = object()  # put on the queue by stop(): end the stream
_IDLE = object()  # nothing arrived within sync_grace: a pending Sync stands alone


def _low_latency(ws: Any) -> bool:
    """TCP_NODELAY (+ TCP_QUICKACK where the OS has it) on the WebSocket's socket; False when
    the connection exposes no socket. asyncio turns Nagle off already; the delayed ACK is what
    held notifications back after an ``eth_call`` (Linux re-enters delayed-ACK mode on its own,
    so the reader re-arms it after every message: :func:`_quick_ack`)."""
    sock = ws.transport.get_extra_info("socket") if getattr(ws, "transport", None) else None
    if sock is None:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_QUICKACK"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    return True


def _quick_ack(ws: Any) -> None:
    """Re-arm TCP_QUICKACK: Linux clears it, and a delayed ACK of a response keeps the node's
    next notification in its Nagle buffer (~38 ms measured, issue 14 item 7)."""
    if hasattr(socket, "TCP_QUICKACK") and getattr(ws, "transport", None) is not None:
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


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
        snapshot: bool = False,
        sync_grace: float = 0.5,
    ) -> None:
        self.url = url
        self.pools = [p.lower() for p in pools]
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_reconnects = max_reconnects
        self.request_timeout = request_timeout
        self.snapshot = snapshot
        # How long a Sync waits for its Swap before it counts as standalone (a mint, a burn).
        # A node sends a transaction's logs back to back; the margin is for a busy event loop
        # (a monolith blocks it while an arbitrage is mined): too short, and one swap would
        # reach the detector twice, as an update and as the swap.
        self.sync_grace = sync_grace
        self.stats = ClientStats()
        self._ids = itertools.count(1)
        self._tokens: dict[bytes, tuple[bytes, bytes]] = {}
        self._reserves: dict[bytes, SyncEvent] = {}
        # Per pool, its latest reserve updates: what a reorg rolls back to.
        self._history: dict[bytes, list[SyncEvent]] = {}
        self._pending: SyncEvent | None = None
        self._last: tuple[int, int] | None = None  # (block, log index) last processed
        self._queue: asyncio.Queue[Any] | None = None
        self._stopped = False
        self._seq = 0

    def stop(self) -> None:
        """End :meth:`swaps` after what has arrived so far (callable from the same loop)."""
        self._stopped = True
        if self._queue is not None:
            self._queue.put_nowait(_STOP)

    async def swaps(self) -> AsyncIterator[V2Swap]:
        """Every swap of the subscribed pools; reconnects until ``max_reconnects`` is used up."""
        import websockets

        failures = 0
        while not self._stopped:
            try:
                async with websockets.connect(self.url, max_size=2**22) as ws:
                    _low_latency(ws)
                    self.stats.connects += 1
                    if self.stats.connects > 1:
                        self.stats.reconnects += 1
                    async for swap in self._session(ws):  # ends by raising, or on stop()
                        failures = 0
                        yield swap
                    return
            # InvalidHandshake: a 503 (or any refused upgrade) while the node restarts.
            except (OSError, _Disconnected, websockets.ConnectionClosed,
                    websockets.InvalidHandshake, TimeoutError) as exc:
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
        self._queue = notifications
        if self._stopped:
            notifications.put_nowait(_STOP)
        pending: dict[int, asyncio.Future[Any]] = {}
        reader = asyncio.create_task(self._read(ws, notifications, pending))
        try:
            await self._request(ws, pending, "eth_subscribe", ["logs", self._filter()])
            # Subscribed first, then read what came before: a log in both is skipped by
            # its position, and none falls between the two.
            if self._last is None and self.snapshot:
                for swap in await self._snapshot(ws, pending):
                    yield swap
            elif self._last is not None:
                for entry in await self._backfill(ws, pending):
                    for swap in await self._on_log(ws, pending, entry):
                        yield swap
            while True:
                item = await self._next(notifications)
                if item is None:
                    raise _Disconnected(self._close_reason(reader))
                if item is _STOP or item is _IDLE:
                    flushed = self._flush_pending(None)
                    if flushed is not None:
                        yield flushed
                    if item is _STOP:
                        return
                    continue
                for swap in await self._on_log(ws, pending, item):
                    yield swap
        finally:
            self._queue = None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    @staticmethod
    def _close_reason(reader: asyncio.Task[None]) -> str:
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            return f"connection lost: {reader.exception()}"
        return "connection closed by the server"

    def _filter(self) -> dict[str, Any]:
        params: dict[str, Any] = {"topics": [[SWAP_TOPIC, SYNC_TOPIC]]}
        if self.pools:
            params["address"] = self.pools
        return params

    async def _next(self, notifications: asyncio.Queue[Any]) -> Any:
        """The next item; ``_IDLE`` if a Sync waits for its Swap longer than ``sync_grace``."""
        if self._pending is None:
            return await notifications.get()
        try:
            return await asyncio.wait_for(notifications.get(), self.sync_grace)
        except TimeoutError:
            return _IDLE

    async def _backfill(self, ws: Any, pending: dict[int, asyncio.Future[Any]]) -> list[Any]:
        """Every log from the last processed block on (``eth_getLogs``), in chain order."""
        assert self._last is not None
        query = self._filter() | {"fromBlock": hex(self._last[0]), "toBlock": "latest"}
        logs = await self._request(ws, pending, "eth_getLogs", [query])
        if not isinstance(logs, list):
            raise LogDecodeError(f"eth_getLogs returned {type(logs).__name__}, not a list")

        def position(entry: Any) -> tuple[int, int]:
            try:
                return (_quantity(entry.get("blockNumber"), "blockNumber"),
                        _quantity(entry.get("logIndex"), "logIndex"))
            except (AttributeError, LogDecodeError):
                return (0, 0)  # decoding it later counts it as malformed

        before = self.stats.duplicates
        ordered = sorted(logs, key=position)
        self.stats.backfilled += len(ordered)
        log.info("live feed %s: backfilling %d logs from block %d (%d already seen)",
                 self.url, len(ordered), self._last[0], self.stats.duplicates - before)
        return ordered

    async def _snapshot(self, ws: Any, pending: dict[int, asyncio.Future[Any]]) -> list[V2Swap]:
        """Every watched pool's reserves at one block, as reserve updates."""
        block_hex = await self._request(ws, pending, "eth_blockNumber", [])
        block = _quantity(block_hex, "eth_blockNumber")
        header = await self._request(ws, pending, "eth_getBlockByNumber", [block_hex, False])
        stamp = _quantity(header.get("timestamp"), "block timestamp") if header else None
        out = []
        for address in self.pools:
            word = await self._request(ws, pending, "eth_call",
                                       [{"to": address, "data": GET_RESERVES_SELECTOR}, block_hex])
            raw = _hex_bytes(word, "getReserves result")
            reserve0, reserve1, _ = _words(raw[:96], 3, "getReserves")
            sync = SyncEvent(_hex_bytes(address, "pool"), reserve0, reserve1, block, -1, "",
                             stamp)
            self._record(sync)
            out.append(await self._reserve_update(ws, pending, sync))
        self._last = (block, 2**63)  # everything up to this block is in the reserves read
        return out

    async def _read(self, ws: Any, notifications: asyncio.Queue[Any],
                    pending: dict[int, asyncio.Future[Any]]) -> None:
        """Route responses to waiting requests and subscription logs to the queue."""
        try:
            async for raw in ws:
                _quick_ack(ws)
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
                      entry: Any) -> list[V2Swap]:
        """What one log adds to the stream: up to a standalone Sync's update and a swap."""
        self.stats.logs += 1
        try:
            event = decode_log(entry)
            if entry.get("removed") is True:
                return await self._rollback(ws, pending, event)
            position = (event.block_number, event.log_index)
            if self._last is not None and position <= self._last:
                self.stats.duplicates += 1
                return []
            self._last = position
            out: list[V2Swap] = []
            flushed = self._flush_pending(event)
            if flushed is not None:
                out.append(flushed)
            if isinstance(event, SyncEvent):
                self._record(event)
                await self._pool_tokens(ws, pending, event.pool)  # known before it is flushed
                self._pending = event
                return out
            tokens = await self._pool_tokens(ws, pending, event.pool)
        except LogDecodeError as exc:
            self._malformed(exc, entry)
            return []
        swap = self._swap(event, tokens)
        return [*out, swap] if swap is not None else out

    def _flush_pending(self, incoming: SwapEvent | SyncEvent | None) -> V2Swap | None:
        """The pending Sync as a reserve update, unless ``incoming`` is its transaction's Swap."""
        sync, self._pending = self._pending, None
        if sync is None:
            return None
        if (isinstance(incoming, SwapEvent) and incoming.pool == sync.pool
                and incoming.block_number == sync.block_number
                and incoming.tx_hash == sync.tx_hash):
            return None
        return self._update_swap(sync, self._tokens[sync.pool])

    def _record(self, sync: SyncEvent) -> None:
        self._reserves[sync.pool] = sync
        history = self._history.setdefault(sync.pool, [])
        history.append(sync)
        del history[:-_HISTORY]

    async def _rollback(self, ws: Any, pending: dict[int, asyncio.Future[Any]],
                        event: SwapEvent | SyncEvent) -> list[V2Swap]:
        """A reorg removed ``event``: the pool's reserves go back to before its block."""
        self.stats.removed += 1
        if isinstance(event, SwapEvent):
            return []  # its Sync (removed too) carries the reserves
        if self._pending is not None and self._pending.pool == event.pool:
            self._pending = None
        history = self._history.get(event.pool, [])
        while history and history[-1].block_number >= event.block_number:
            history.pop()
        # The replacement chain's logs of that block must not count as already processed.
        if self._last is not None and self._last[0] >= event.block_number:
            self._last = (event.block_number - 1, 2**63)
        if not history:
            self._reserves.pop(event.pool, None)
            return []
        self._reserves[event.pool] = history[-1]
        self.stats.rollbacks += 1
        return [await self._reserve_update(ws, pending, history[-1])]

    async def _reserve_update(self, ws: Any, pending: dict[int, asyncio.Future[Any]],
                              sync: SyncEvent) -> V2Swap:
        return self._update_swap(sync, await self._pool_tokens(ws, pending, sync.pool))

    def _update_swap(self, sync: SyncEvent, tokens: tuple[bytes, bytes]) -> V2Swap:
        """A reserve change that is no swap (mint, burn, start, reorg): zero amounts."""
        self._seq += 1
        self.stats.reserve_updates += 1
        return V2Swap(
            pool_address=sync.pool, token0=tokens[0], token1=tokens[1], amount_in=0,
            amount_out=0, zero_for_one=False, reserve0=sync.reserve0, reserve1=sync.reserve1,
            timestamp_ns=_stamp_ns(sync.timestamp_s), block_number=sync.block_number,
            seq=self._seq,
        )

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
        return V2Swap(
            pool_address=event.pool,
            token0=tokens[0],
            token1=tokens[1],
            amount_in=event.amount0_in if zero_for_one else event.amount1_in,
            amount_out=event.amount1_out if zero_for_one else event.amount0_out,
            zero_for_one=zero_for_one,
            reserve0=sync.reserve0,
            reserve1=sync.reserve1,
            timestamp_ns=_stamp_ns(event.timestamp_s),
            block_number=event.block_number,
            seq=self._seq,
        )

    def _malformed(self, exc: Exception, payload: Any) -> None:
        self.stats.malformed += 1
        self.stats.last_error = str(exc)
        log.warning("live feed %s: dropped a malformed payload (%s): %.120r",
                    self.url, exc, payload)


def _stamp_ns(timestamp_s: int | None) -> int:
    # A node that does not put blockTimestamp in its logs: arrival time (not reproducible).
    return timestamp_s * 10**9 if timestamp_s is not None else time.time_ns()
