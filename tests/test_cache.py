"""The hook's bytecode cache alone: key, staleness, file format, atomic writes, housekeeping."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from mycelium_mono.routing.cache import (
    CACHE_SUFFIX,
    CacheEntry,
    CacheKey,
    CacheMiss,
    MissReason,
    WriteOutcome,
    cache_dirs,
    cache_path,
    clean_cache,
    find_cache_files,
    read_cache,
    write_cache,
)
from mycelium_mono.routing.pipeline import LIBRARY_VERSION, Dependency, file_digest

SOURCE = b"ANSWER = 6 * 7\n"


@pytest.fixture(autouse=True)
def _writing_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test machine exports PYTHONDONTWRITEBYTECODE=1; these tests are about writing.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)


@pytest.fixture
def handler_file(tmp_path: Path) -> Path:
    path = tmp_path / "handlers.py"
    path.write_text("class Handler: ...\n")
    return path


def make_entry(dependency: Path, key: CacheKey | None = None) -> CacheEntry:
    return CacheEntry(
        key=key or CacheKey.current(SOURCE, "inline=None"),
        dependencies=(Dependency(str(dependency), file_digest(str(dependency))),),
        generated_source="class MonolithBus: ...\n",
        code=compile(SOURCE, "routing.py", "exec"),
    )


def stored(tmp_path: Path, handler_file: Path) -> tuple[str, CacheEntry]:
    path = cache_path(str(tmp_path / "routing.py"))
    assert path is not None
    entry = make_entry(handler_file)
    assert write_cache(path, entry).outcome is WriteOutcome.WRITTEN
    return path, entry


def test_cache_path_sits_next_to_importlibs_pyc_with_its_own_tag(tmp_path: Path) -> None:
    path = cache_path(str(tmp_path / "routing.py"))
    tag = sys.implementation.cache_tag
    assert path == str(tmp_path / "__pycache__" / f"routing.{tag}{CACHE_SUFFIX}")


def test_cache_path_follows_pycache_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "prefix"))
    path = cache_path(str(tmp_path / "src" / "routing.py"))
    assert path is not None
    assert path.startswith(str(tmp_path / "prefix"))
    assert path.endswith(f"src{os.sep}routing.{sys.implementation.cache_tag}{CACHE_SUFFIX}")


def test_written_entry_reads_back_and_runs(tmp_path: Path, handler_file: Path) -> None:
    path, entry = stored(tmp_path, handler_file)
    found = read_cache(path, entry.key)
    assert isinstance(found, CacheEntry)
    assert found.dependencies == entry.dependencies
    assert found.generated_source == entry.generated_source
    namespace: dict[str, object] = {}
    exec(found.code, namespace)
    assert namespace["ANSWER"] == 42


def test_missing_file_is_a_miss(tmp_path: Path) -> None:
    found = read_cache(str(tmp_path / "nothing.pyc"), CacheKey.current(SOURCE, ""))
    assert found == CacheMiss(MissReason.NO_FILE)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"source_sha256": "0" * 64}, MissReason.SOURCE_CHANGED),
        ({"library_version": LIBRARY_VERSION + ".post1"}, MissReason.VERSION_CHANGED),
        ({"options": "inline=True"}, MissReason.OPTIONS_CHANGED),
        ({"optimize": 2}, MissReason.OPTIMIZE_CHANGED),
    ],
)
def test_any_key_difference_is_a_miss_naming_it(
    tmp_path: Path, handler_file: Path, change: dict[str, object], reason: MissReason
) -> None:
    path, entry = stored(tmp_path, handler_file)
    found = read_cache(path, dataclasses.replace(entry.key, **change))  # type: ignore[arg-type]
    assert isinstance(found, CacheMiss)
    assert found.reason is reason


def test_edited_dependency_is_a_miss(tmp_path: Path, handler_file: Path) -> None:
    path, entry = stored(tmp_path, handler_file)
    handler_file.write_text("class Handler:\n    x = 1\n")
    assert read_cache(path, entry.key) == CacheMiss(
        MissReason.DEPENDENCY_CHANGED, str(handler_file)
    )


def test_deleted_dependency_is_a_miss(tmp_path: Path, handler_file: Path) -> None:
    path, entry = stored(tmp_path, handler_file)
    handler_file.unlink()
    assert read_cache(path, entry.key) == CacheMiss(
        MissReason.DEPENDENCY_MISSING, str(handler_file)
    )


def test_dependency_touched_but_unchanged_is_still_a_hit(
    tmp_path: Path, handler_file: Path
) -> None:
    path, entry = stored(tmp_path, handler_file)
    os.utime(handler_file, (0, 0))  # content decides, not mtime
    assert isinstance(read_cache(path, entry.key), CacheEntry)


@pytest.mark.parametrize("keep", [0, 5, 20, -3])
def test_truncated_file_is_a_miss_not_a_crash(
    tmp_path: Path, handler_file: Path, keep: int
) -> None:
    path, entry = stored(tmp_path, handler_file)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep])
    found = read_cache(path, entry.key)
    assert isinstance(found, CacheMiss)
    assert found.reason in (MissReason.BAD_FORMAT, MissReason.CORRUPT)


def test_standard_pyc_is_not_mistaken_for_ours(tmp_path: Path, handler_file: Path) -> None:
    import py_compile

    source = tmp_path / "routing.py"
    source.write_bytes(SOURCE)
    path = cache_path(str(source))
    assert path is not None
    py_compile.compile(str(source), cfile=path)
    found = read_cache(path, CacheKey.current(SOURCE, ""))
    assert isinstance(found, CacheMiss)
    assert found.reason is MissReason.BAD_FORMAT


def test_file_from_another_python_is_a_miss(tmp_path: Path, handler_file: Path) -> None:
    path, entry = stored(tmp_path, handler_file)
    data = bytearray(Path(path).read_bytes())
    data[6:10] = b"\x00\x00\r\n"  # importlib's magic number lives right after ours
    Path(path).write_bytes(bytes(data))
    found = read_cache(path, entry.key)
    assert isinstance(found, CacheMiss)
    assert found.reason is MissReason.PYTHON_CHANGED


def test_write_leaves_no_temporary_file(tmp_path: Path, handler_file: Path) -> None:
    path, _ = stored(tmp_path, handler_file)
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_unwritable_directory_means_not_written(tmp_path: Path, handler_file: Path) -> None:
    # Tests run as root, where chmod does not stop writes; a directory *under a regular file*
    # cannot be created by anyone, which is the same OSError a read-only tree gives.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    written = write_cache(str(blocker / "__pycache__" / "x.pyc"), make_entry(handler_file))
    assert written.outcome is WriteOutcome.OS_ERROR
    assert written.detail  # the OS error text, for doctor


def test_dont_write_bytecode_writes_nothing(
    tmp_path: Path, handler_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    path = str(tmp_path / "__pycache__" / "x.pyc")
    assert write_cache(path, make_entry(handler_file)).outcome is WriteOutcome.DONT_WRITE_BYTECODE
    assert not os.path.exists(os.path.dirname(path))


def test_find_and_clean_list_then_delete_only_our_files(tmp_path: Path, handler_file: Path) -> None:
    path, _ = stored(tmp_path, handler_file)
    leftover = Path(f"{path}.12345.678")  # a writer killed between write and replace
    leftover.write_bytes(b"partial")
    standard = tmp_path / "__pycache__" / "other.cpython-311.pyc"
    standard.write_bytes(b"not ours")

    files = find_cache_files([str(tmp_path)])
    assert [f.path for f in files] == sorted([path, str(leftover)])
    assert cache_dirs([str(tmp_path)]) == [os.path.dirname(path)]

    dry = clean_cache([str(tmp_path)], dry_run=True)
    assert not dry.removed
    assert dry.total_size == sum(f.size for f in files) > 0
    assert os.path.exists(path)

    report = clean_cache([str(tmp_path)])
    assert report.removed and not report.errors
    assert not os.path.exists(path) and not leftover.exists()
    assert standard.exists()


def test_find_looks_in_the_pycache_prefix_mirror(
    tmp_path: Path, handler_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "prefix"))
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    path = cache_path(str(source_dir / "routing.py"))
    assert path is not None and path.startswith(str(tmp_path / "prefix"))
    assert write_cache(path, make_entry(handler_file)).outcome is WriteOutcome.WRITTEN
    assert [f.path for f in find_cache_files([str(source_dir)])] == [path]
