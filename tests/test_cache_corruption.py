"""A damaged hook cache file is detected, rewritten, and the import still works (issue 15 item 6).

Before the file carried a checksum, 11 of 60 single bit flips in a cached file were loaded and
then failed at every import until `mycelium-mono cache clean`.
"""

from __future__ import annotations

import importlib
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.cache import (
    CacheEntry,
    CacheKey,
    CacheMiss,
    MissReason,
    cache_path,
    read_cache,
)
from mycelium_mono.routing.hook import Outcome, clear_import_records, import_records
from mycelium_mono.routing.hook import install_import_hook as install
from mycelium_mono.routing.pipeline import RewriteOptions

HOOKSHOP = Path(__file__).parent / "hookpkgs" / "hookshop"
DEMO_RESULT = (7, ["order 1", "order 2", "shipped 1"])
HEADER_BYTES = 4 + 2 + 4 + 4 + 32  # magic, format, Python magic, metadata length, SHA-256


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    package = tmp_path / "hookshop"
    shutil.copytree(HOOKSHOP, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_modules("hookshop")
    clear_import_records()
    with install(["hookshop"]):
        yield package
    forget_modules("hookshop")


def import_routing() -> tuple[Outcome, CacheMiss | None, object]:
    sys.modules.pop("hookshop.routing", None)
    routing = importlib.import_module("hookshop.routing")
    record = import_records()["hookshop.routing"]
    return record.outcome, record.miss, routing.run_demo()


def flip(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def bits_to_flip(size: int, body_samples: int) -> list[int]:
    header = list(range(HEADER_BYTES * 8))
    body = random.Random(15).sample(range(HEADER_BYTES * 8, size * 8), body_samples)
    return header + sorted(body)


def test_every_header_bit_and_sampled_body_bits_flipped_are_misses(shop: Path) -> None:
    import_routing()
    path = cache_path(str(shop / "routing.py"))
    assert path is not None
    good = Path(path).read_bytes()
    key = CacheKey.current((shop / "routing.py").read_bytes(), RewriteOptions().key())
    assert isinstance(read_cache(path, key), CacheEntry)
    loaded = []
    for bit in bits_to_flip(len(good), body_samples=400):
        Path(path).write_bytes(flip(good, bit))
        found = read_cache(path, key)
        if not isinstance(found, CacheMiss):
            loaded.append(bit)
    assert loaded == []


def test_a_flipped_body_bit_is_reported_as_corrupt(shop: Path) -> None:
    import_routing()
    path = Path(str(cache_path(str(shop / "routing.py"))))
    path.write_bytes(flip(path.read_bytes(), (HEADER_BYTES + 10) * 8 + 3))
    outcome, miss, _ = import_routing()
    assert outcome is Outcome.REWRITTEN
    assert miss is not None and miss.reason is MissReason.CORRUPT


def test_a_damaged_cache_is_rewritten_and_the_next_import_hits_it(shop: Path) -> None:
    assert import_routing()[0] is Outcome.REWRITTEN
    path = Path(str(cache_path(str(shop / "routing.py"))))
    good = path.read_bytes()
    for bit in bits_to_flip(len(good), body_samples=24)[::4]:
        path.write_bytes(flip(good, bit))
        outcome, miss, demo = import_routing()
        assert (outcome, demo) == (Outcome.REWRITTEN, DEMO_RESULT), f"bit {bit}: {miss}"
        outcome, miss, demo = import_routing()
        assert (outcome, demo) == (Outcome.CACHE_HIT, DEMO_RESULT), f"bit {bit}: {miss}"


def test_a_garbage_header_gives_a_short_miss_reason(shop: Path) -> None:
    import_routing()
    path = Path(str(cache_path(str(shop / "routing.py"))))
    rng = random.Random(9235)
    # A true header (magic, format, Python, metadata length), then garbage where the JSON was.
    path.write_bytes(path.read_bytes()[:14] + rng.randbytes(10_000))
    key = CacheKey.current((shop / "routing.py").read_bytes(), RewriteOptions().key())
    found = read_cache(str(path), key)
    assert isinstance(found, CacheMiss)
    assert len(str(found)) <= 200


def test_a_miss_detail_is_cut_to_one_readable_line() -> None:
    miss = CacheMiss(MissReason.DEPENDENCY_CHANGED, "/very/long/path/" * 600)
    text = str(miss)
    assert text.startswith("a handler or message module changed: /very/long/path/")
    assert len(text) <= 200
    assert text.endswith("…")
