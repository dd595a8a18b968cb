"""A synchronous Ethereum JSON-RPC client over HTTP/1.1 keep-alive, with batches.

The deployer, the market replay and the execution service talk to the node this way; the
feed follows it over WebSocket (:mod:`bandit.ethrpc`). One TCP connection, ``TCP_NODELAY``
set: a request is a few hundred bytes and Nagle would hold it back (issue 14, item 7).
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Call", "RpcClient", "RpcError", "TxFailed"]


class RpcError(RuntimeError):
    """The node answered a request with a JSON-RPC error (or not at all)."""


class TxFailed(RuntimeError):
    """A transaction was mined with status 0 (reverted)."""

    def __init__(self, message: str, receipt: dict[str, Any]) -> None:
        super().__init__(message)
        self.receipt = receipt


@dataclass(frozen=True)
class Call:
    """One request of a batch."""

    method: str
    params: tuple[Any, ...] = ()


class RpcClient:
    """``RpcClient("http://127.0.0.1:8545").call("eth_blockNumber")``."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "ws") or parts.hostname is None:
            raise ValueError(f"JSON-RPC URL {url!r} is not http://host:port or ws://host:port\n"
                             "help: anvil serves both on one port, e.g. http://127.0.0.1:8545")
        self.url = url
        self._host, self._port = parts.hostname, parts.port or 80
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._ids = itertools.count(1)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
        return self._conn

    def _post(self, payload: Any) -> Any:
        body = json.dumps(payload).encode()
        for attempt in (1, 2):  # a keep-alive connection the node closed: reconnect once
            conn = self._connection()
            try:
                conn.request("POST", "/", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == 2:
                    raise RpcError(f"JSON-RPC {self.url}: {type(exc).__name__}: {exc}\n"
                                   "help: is the node running (see bandit.chain.node)?") from exc
        if response.status != 200:
            raise RpcError(f"JSON-RPC {self.url}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    @staticmethod
    def _result(method: str, reply: Any) -> Any:
        if "error" in reply:
            raise RpcError(f"{method} failed: {reply['error']!r:.400}")
        return reply.get("result")

    def call(self, method: str, *params: Any) -> Any:
        """One request; its ``result``, or :class:`RpcError`."""
        reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                            "params": list(params)})
        return self._result(method, reply)

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Many requests in one HTTP round trip; results in the order of ``calls``."""
        if not calls:
            return []
        first = next(self._ids)
        payload = [{"jsonrpc": "2.0", "id": first + i, "method": c.method,
                    "params": list(c.params)} for i, c in enumerate(calls)]
        for _ in range(len(calls) - 1):
            next(self._ids)
        replies = self._post(payload)
        by_id = {r.get("id"): r for r in replies}
        return [self._result(c.method, by_id.get(first + i, {"error": "no reply"}))
                for i, c in enumerate(calls)]

    def eth_call(self, to: str, data: str, block: str | int = "latest") -> str:
        tag = block if isinstance(block, str) else hex(block)
        result: str = self.call("eth_call", {"to": to, "data": data}, tag)
        return result

    def receipt(self, tx_hash: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """The receipt of a mined transaction (waits up to ``timeout`` for it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.call("eth_getTransactionReceipt", tx_hash)
            if found is not None:
                return dict(found)
            if time.monotonic() > deadline:
                raise RpcError(f"no receipt for {tx_hash} after {timeout}s\n"
                               "help: with automine off the block must be mined (evm_mine)")
            time.sleep(0.001)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
