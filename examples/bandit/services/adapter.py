"""PolygonAdapter: the source of swaps — the bundled replay, or a live JSON-RPC WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bandit.feed import Feed, load_feed
from bandit.protocol import V2Swap
from mycelium_mono import ServiceContext, service

__all__ = ["AdapterConfig", "PolygonAdapter"]


@dataclass(frozen=True)
class AdapterConfig:
    """``source = "replay"`` reads ``feed_path`` (the bundled feed by default), the first
    ``limit`` swaps; ``source = "websocket"`` subscribes to ``ws_url`` for the ``pools``
    given (hex addresses; all pools when empty)."""

    source: Literal["replay", "websocket"] = "replay"
    feed_path: Path | None = None
    limit: int | None = None
    ws_url: str = "ws://127.0.0.1:8546"
    pools: tuple[str, ...] = ()
    # Live: read every pool's reserves at start (getReserves) before following its logs.
    snapshot: bool = False

    def __post_init__(self) -> None:
        if self.source not in ("replay", "websocket"):
            raise ValueError(f"adapter source {self.source!r} is not replay or websocket\n"
                             "help: set [adapter] source = \"replay\" or \"websocket\"")


@service
class PolygonAdapter:
    """Produces :class:`V2Swap` messages; it consumes none.

    Monolith and hybrid drivers iterate :meth:`swaps` and call ``bus.emit_v2_swap``; on a
    ``ServiceRuntime`` the adapter is a service whose :meth:`run` publishes each swap.
    """

    def __init__(self, config: AdapterConfig | None = None) -> None:
        self.config = config or AdapterConfig()
        self.emitted = 0
        self.unknown_token_skips = 0  # live swaps of tokens with no known price, skipped
        self._feed: Feed | None = None
        self.client: Any = None  # the EthLogClient while streaming live (for its counters)

    @property
    def feed(self) -> Feed:
        """The replay feed (loaded once)."""
        if self._feed is None:
            self._feed = load_feed(self.config.feed_path)
        return self._feed

    def expected_swaps(self) -> int | None:
        """How many swaps a replay will produce (None for a live source)."""
        if self.config.source != "replay":
            return None
        total = len(self.feed)
        return total if self.config.limit is None else min(total, self.config.limit)

    def swaps(self) -> Iterator[V2Swap]:
        """The replay, in feed order."""
        for swap in self.feed.replay(self.config.limit):
            self.emitted += 1
            yield swap

    async def stream(self) -> AsyncIterator[V2Swap]:
        """Swaps from the configured source (replay or live)."""
        if self.config.source == "replay":
            for swap in self.swaps():
                yield swap
            return
        from bandit.ethrpc import EthLogClient
        from bandit.tokens import is_known

        self.client = EthLogClient(self.config.ws_url, pools=self.config.pools,
                                   snapshot=self.config.snapshot)
        async for swap in self.client.swaps():
            if not (is_known(swap.token0) and is_known(swap.token1)):
                # Issue 14: an unpriced token is a counted skip, never a crash of the detector.
                self.unknown_token_skips += 1
                continue
            self.emitted += 1
            yield swap

    async def run(self, ctx: ServiceContext) -> None:
        """Service body on a ``ServiceRuntime``: publish every swap, stop at shutdown."""
        async for swap in self.stream():
            await ctx.emit(swap)
            if ctx.shutting_down:
                return
