"""The bundled market feed: a deterministic generator and the replay that turns it into swaps.

The file stores only what cannot be recomputed: the pools with their opening reserves, and per
swap the pool, the direction, the input amount and the time step. Replaying it re-runs the pair
contract's integer ``getAmountOut`` to get every output amount and post-swap reserve, so the
generator and the replay share one market simulation (:class:`Market`) and cannot disagree.

Layout (little-endian, then gzip with ``mtime=0`` so the file is reproducible)::

    header   8s magic "BANDITF1", I pools, I swaps, I injected, Q start_ns, Q start_block
    pools    20s address, B token0 index, B token1 index, 16s reserve0, 16s reserve1
    injected I swap seq, one per injected mispricing
    swaps    B pool index, B zero_for_one, I microseconds since previous, 16s amount_in

Regenerate the bundled file byte-for-byte with ``python -m bandit.feed --write`` (and check
it with ``python -m bandit.feed --check``). The generator is integer-only apart from
``random.Random.randrange``, which is exact, so the output does not depend on the platform.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import random
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bandit.arbitrage import get_amount_out, optimal_input
from bandit.protocol import V2Swap
from bandit.tokens import TOKENS, Token

__all__ = [
    "BUNDLED_FEED",
    "Feed",
    "FeedError",
    "GeneratorParams",
    "Market",
    "Pool",
    "generate",
    "load_feed",
]

MAGIC = b"BANDITF1"
_HEADER = struct.Struct("<8sIIIQQ")
_POOL = struct.Struct("<20sBB16s16s")
_SEQ = struct.Struct("<I")
_SWAP = struct.Struct("<BBI16s")
BLOCK_TIME_NS = 2_000_000_000  # Polygon PoS: about one block every two seconds.

BUNDLED_FEED = "feed.bin.gz"


class FeedError(ValueError):
    """A feed file is truncated, has the wrong magic, or names a pool that does not exist."""


@dataclass
class Pool:
    """A Uniswap-V2-style pair and its current reserves (mutable simulation state)."""

    address: bytes
    token0: Token
    token1: Token
    reserve0: int
    reserve1: int

    def swap(self, zero_for_one: bool, amount_in: int) -> int:
        """Apply a swap exactly as the pair contract would; return the output amount."""
        if zero_for_one:
            out = get_amount_out(amount_in, self.reserve0, self.reserve1)
            self.reserve0 += amount_in
            self.reserve1 -= out
        else:
            out = get_amount_out(amount_in, self.reserve1, self.reserve0)
            self.reserve1 += amount_in
            self.reserve0 -= out
        return out


@dataclass(frozen=True)
class SwapRecord:
    """One stored swap: everything else is recomputed on replay."""

    pool: int
    zero_for_one: bool
    dt_us: int
    amount_in: int


@dataclass(frozen=True)
class Opening:
    """A pool as it opens the feed."""

    address: bytes
    token0: int
    token1: int
    reserve0: int
    reserve1: int


@dataclass(frozen=True)
class Feed:
    """A decoded feed file."""

    pools: tuple[Opening, ...]
    swaps: tuple[SwapRecord, ...]
    injected: tuple[int, ...]
    start_ns: int
    start_block: int

    def __len__(self) -> int:
        return len(self.swaps)

    def replay(self, limit: int | None = None) -> Iterator[V2Swap]:
        """The feed as ``V2Swap`` messages, with amounts out and reserves recomputed."""
        market = Market.open(self.pools)
        ts = self.start_ns
        for seq, record in enumerate(self.swaps[:limit]):
            ts += record.dt_us * 1000
            pool = market.pools[record.pool]
            out = pool.swap(record.zero_for_one, record.amount_in)
            yield V2Swap(
                pool_address=pool.address,
                token0=pool.token0.address,
                token1=pool.token1.address,
                amount_in=record.amount_in,
                amount_out=out,
                zero_for_one=record.zero_for_one,
                reserve0=pool.reserve0,
                reserve1=pool.reserve1,
                timestamp_ns=ts,
                block_number=self.start_block + (ts - self.start_ns) // BLOCK_TIME_NS,
                seq=seq,
            )


@dataclass
class Market:
    """Every pool of the feed, simulated."""

    pools: list[Pool] = field(default_factory=list)

    @classmethod
    def open(cls, openings: Sequence[Opening]) -> Market:
        return cls(
            [
                Pool(o.address, TOKENS[o.token0], TOKENS[o.token1], o.reserve0, o.reserve1)
                for o in openings
            ]
        )


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GeneratorParams:
    """Knobs of the synthetic market; the defaults produce the bundled feed."""

    seed: int = 5
    swaps: int = 20_000
    # One whale swap (1.5-5 % of a pool's reserve) every ~`whale_every` swaps: the injected
    # mispricings. Noise swaps move 0.01-0.25 %; a competing arbitrage bot closes gaps.
    whale_every: int = 600
    competitor_every: int = 3
    start_ns: int = 1_700_000_000_000_000_000
    start_block: int = 50_000_000


PAIRS: tuple[tuple[str, str, int], ...] = (
    # (token, token, pools in this pair)
    ("WMATIC", "USDC", 5),
    ("WETH", "USDC", 5),
    ("WETH", "WMATIC", 4),
    ("WBTC", "WETH", 4),
    ("DAI", "USDC", 4),
    ("LINK", "WETH", 4),
    ("AAVE", "WETH", 3),
    ("FOT", "WETH", 3),
)


def _pool_address(index: int) -> bytes:
    return hashlib.blake2b(b"bandit-pool:%d" % index, digest_size=20).digest()


def _openings(rng: random.Random) -> list[Opening]:
    index = {t.symbol: i for i, t in enumerate(TOKENS)}
    openings: list[Opening] = []
    for sym_a, sym_b, count in PAIRS:
        # Uniswap orders a pair's tokens by address.
        i0, i1 = sorted((index[sym_a], index[sym_b]), key=lambda i: TOKENS[i].address)
        t0, t1 = TOKENS[i0], TOKENS[i1]
        for _ in range(count):
            side_usd = rng.randrange(100_000, 2_500_000)
            r0 = side_usd * 10**6 * 10**t0.decimals // t0.price_usd_e6
            r1 = side_usd * 10**6 * 10**t1.decimals // t1.price_usd_e6
            r1 = r1 * (10_000 + rng.randrange(-15, 16)) // 10_000  # opening price dispersion
            openings.append(Opening(_pool_address(len(openings)), i0, i1, r0, r1))
    return openings


def _best_cycle(pools: list[Pool], members: list[int]) -> tuple[int, int, bool, int] | None:
    """The competitor's view: the biggest x* over all ordered pool pairs and both tokens."""
    best: tuple[int, int, bool, int] | None = None
    best_value = 0
    for a in members:
        for b in members:
            if a == b:
                continue
            pa, pb = pools[a], pools[b]
            for zero_in in (True, False):
                if zero_in:
                    x = optimal_input(pa.reserve0, pa.reserve1, pb.reserve1, pb.reserve0)
                    value = x * pa.token0.price_usd_e6 // 10**pa.token0.decimals
                else:
                    x = optimal_input(pa.reserve1, pa.reserve0, pb.reserve0, pb.reserve1)
                    value = x * pa.token1.price_usd_e6 // 10**pa.token1.decimals
                if value > best_value:
                    best, best_value = (a, b, zero_in, x), value
    return best


class _Generator:
    def __init__(self, params: GeneratorParams) -> None:
        self.params = params
        self.rng = random.Random(params.seed)
        self.openings = _openings(self.rng)
        self.market = Market.open(self.openings)
        self.by_pair: dict[tuple[str, str], list[int]] = {}
        for i, pool in enumerate(self.market.pools):
            self.by_pair.setdefault((pool.token0.symbol, pool.token1.symbol), []).append(i)
        self.swaps: list[SwapRecord] = []
        self.injected: list[int] = []

    def add(self, pool: int, zero_for_one: bool, amount_in: int) -> int:
        out = self.market.pools[pool].swap(zero_for_one, amount_in)
        self.swaps.append(SwapRecord(pool, zero_for_one, self.rng.randrange(20_000, 400_000),
                                     amount_in))
        return out

    def reserve_in(self, pool: int, zero_for_one: bool) -> int:
        p = self.market.pools[pool]
        return p.reserve0 if zero_for_one else p.reserve1

    def step(self) -> None:
        rng = self.rng
        pool = rng.randrange(len(self.market.pools))
        zero_for_one = rng.randrange(2) == 0
        if rng.randrange(self.params.whale_every) == 0:
            self.injected.append(len(self.swaps))
            self.add(pool, zero_for_one, self.reserve_in(pool, zero_for_one)
                     * rng.randrange(150, 500) // 10_000)
        elif rng.randrange(self.params.competitor_every) == 0 and self.compete():
            return
        else:
            self.add(pool, zero_for_one, self.reserve_in(pool, zero_for_one)
                     * rng.randrange(1, 25) // 10_000)

    def compete(self) -> bool:
        """A rival bot closes 60-100 % of the widest gap of a random pair (two swaps)."""
        pairs = sorted(self.by_pair)
        members = self.by_pair[pairs[self.rng.randrange(len(pairs))]]
        found = _best_cycle(self.market.pools, members)
        if found is None:
            return False
        a, b, zero_in, x = found
        x = x * self.rng.randrange(60, 101) // 100
        if x <= 0:
            return False
        mid = self.add(a, zero_in, x)
        self.add(b, not zero_in, mid)
        return True


def generate(params: GeneratorParams | None = None) -> bytes:
    """The feed file's uncompressed bytes for ``params`` (the defaults give the bundled feed)."""
    params = params or GeneratorParams()
    gen = _Generator(params)
    while len(gen.swaps) < params.swaps:
        gen.step()
    del gen.swaps[params.swaps :]
    injected = [s for s in gen.injected if s < params.swaps]
    parts = [
        _HEADER.pack(MAGIC, len(gen.openings), len(gen.swaps), len(injected),
                     params.start_ns, params.start_block)
    ]
    parts += [
        _POOL.pack(o.address, o.token0, o.token1, o.reserve0.to_bytes(16, "little"),
                   o.reserve1.to_bytes(16, "little"))
        for o in gen.openings
    ]
    parts += [_SEQ.pack(s) for s in injected]
    parts += [
        _SWAP.pack(s.pool, s.zero_for_one, s.dt_us, s.amount_in.to_bytes(16, "little"))
        for s in gen.swaps
    ]
    return b"".join(parts)


def compress(raw: bytes) -> bytes:
    """gzip with a fixed header (no name, ``mtime=0``) so the output is reproducible."""
    return gzip.compress(raw, compresslevel=9, mtime=0)


# --------------------------------------------------------------------------- decoding


def parse_feed(raw: bytes) -> Feed:
    """Decode uncompressed feed bytes; :class:`FeedError` says what is wrong and where."""
    if len(raw) < _HEADER.size:
        raise FeedError(f"feed is {len(raw)} bytes, shorter than its {_HEADER.size}-byte header")
    magic, n_pools, n_swaps, n_injected, start_ns, start_block = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise FeedError(f"feed starts with {magic!r}, expected {MAGIC!r}\n"
                        "help: regenerate it with `python -m bandit.feed --write`")
    expected = (_HEADER.size + n_pools * _POOL.size + n_injected * _SEQ.size
                + n_swaps * _SWAP.size)
    if len(raw) != expected:
        raise FeedError(f"feed is {len(raw)} bytes, its header promises {expected}")
    offset = _HEADER.size
    pools = []
    for _ in range(n_pools):
        address, t0, t1, r0, r1 = _POOL.unpack_from(raw, offset)
        offset += _POOL.size
        pools.append(Opening(address, t0, t1, int.from_bytes(r0, "little"),
                             int.from_bytes(r1, "little")))
    injected = []
    for _ in range(n_injected):
        injected.append(_SEQ.unpack_from(raw, offset)[0])
        offset += _SEQ.size
    swaps = []
    for pool, zero_for_one, dt_us, amount in _SWAP.iter_unpack(raw[offset:]):
        if pool >= n_pools:
            raise FeedError(f"swap {len(swaps)} names pool {pool}, the feed has {n_pools}")
        swaps.append(SwapRecord(pool, bool(zero_for_one), dt_us, int.from_bytes(amount, "little")))
    return Feed(tuple(pools), tuple(swaps), tuple(injected), start_ns, start_block)


def bundled_path() -> Path:
    """Where the bundled feed lives inside the installed package."""
    return Path(str(resources.files("bandit") / "data" / BUNDLED_FEED))


def load_feed(path: str | Path | None = None) -> Feed:
    """Load a feed file (``.gz`` or raw); the bundled one by default."""
    file = Path(path) if path is not None else bundled_path()
    data = file.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return parse_feed(data)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bandit.feed --write|--check [--out PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m bandit.feed",
                                     description="Write or check the bundled Bandit feed.")
    parser.add_argument("--out", type=Path, default=None, help="feed file (default: bundled)")
    parser.add_argument("--check", action="store_true", help="verify the file regenerates exactly")
    parser.add_argument("--write", action="store_true", help="(re)write the file")
    args = parser.parse_args(argv)
    out = args.out or bundled_path()
    raw = generate()
    if args.check:
        current = gzip.decompress(out.read_bytes())
        same = current == raw
        print(f"{out}: {'identical to' if same else 'DIFFERS from'} the generator's output")
        return 0 if same else 1
    if args.write:
        out.write_bytes(compress(raw))
        feed = parse_feed(raw)
        digest = hashlib.sha256(raw).hexdigest()[:16]
        print(f"wrote {out}: {len(feed.pools)} pools, {len(feed)} swaps, "
              f"{len(feed.injected)} injected mispricings, sha256 {digest}")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
