"""The import hook's own bytecode cache: where a rewritten module's code lives, when it is stale.

A rewritten routing module depends on more than its own source: the handler and message modules
the rewrite inspected, the library version, the hook options and ``sys.flags.optimize``. The
standard ``.pyc`` only knows the source, so the hook keeps its code in a file of its own, next to
importlib's (``__pycache__/routing.cpython-311.mycelium.pyc``; under ``python -O`` and ``-OO``
``routing.cpython-311.opt-1.mycelium.pyc`` and ``opt-2``, as importlib names its own, so
alternating them does not keep invalidating one file; or the mirror under
``sys.pycache_prefix``), and never touches the standard one.

File format (version 3)::

    b"MYCM" | u16 format version | importlib MAGIC_NUMBER (4 bytes) | u32 metadata length
    | SHA-256 of everything else in the file (32 bytes)
    | metadata (UTF-8 JSON: key, dependencies, resolutions, generated source)
    | marshal(code object)

Version 3 added the resolutions (what each imported name meant, see
:class:`~mycelium_mono.routing.resolve.Resolution`): a version 2 file is a miss.

The checksum is there because ``marshal`` accepts much of a damaged file: before it, 11 of 60
single bit flips loaded and then failed at every import until ``cache clean`` (issue 15). A
file whose checksum does not match is a miss, so the hook rewrites it.

Nothing is unpickled: the metadata is JSON and the code is ``marshal``, exactly what importlib
reads from a ``.pyc``. Writes are atomic (``{path}.{pid}.{thread}`` then :func:`os.replace`), so a
reader in another process sees the old file or the new one, never half of one; a writer killed
before its replace leaves its temporary file, which the next successful write removes. Every
:class:`OSError` means "no cache": the import still works, it just rewrites again.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
import marshal
import os
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from types import CodeType
from typing import Any

from mycelium_mono.routing.pipeline import LIBRARY_VERSION, Dependency, file_digest
from mycelium_mono.routing.resolve import Resolution

__all__ = [
    "CACHE_SUFFIX",
    "CacheEntry",
    "CacheFile",
    "CacheKey",
    "CacheMiss",
    "CacheWrite",
    "CleanReport",
    "MissReason",
    "WriteOutcome",
    "cache_dirs",
    "cache_path",
    "clean_cache",
    "find_cache_files",
    "optimize_level_of",
    "read_cache",
    "write_cache",
]

CACHE_SUFFIX = ".mycelium.pyc"
_MAGIC = b"MYCM"
_FORMAT_VERSION = 3
_PREFIX = struct.Struct("<4sH4sI")
_DIGEST_SIZE = hashlib.sha256().digest_size
_HEADER_SIZE = _PREFIX.size + _DIGEST_SIZE
_MAX_DETAIL = 160
"""A miss reason is one readable line (a garbage header once gave a 9,235-character one)."""


@dataclass(frozen=True)
class CacheKey:
    """Every input of a rewrite except the dependencies (whose digests live in the file)."""

    source_sha256: str
    library_version: str
    options: str
    optimize: int
    source_path: str = ""
    """The routing module's file: the code's frames name it and the dependencies are absolute
    paths beside it, so a ``__pycache__`` copied along with a project (``cp -r``, an image
    built from a checkout) must not serve the copy. Empty: not compared."""

    @classmethod
    def current(cls, source: bytes, options_key: str, optimize: int | None = None,
                source_path: str = "") -> CacheKey:
        """The key for ``source`` rewritten now, by this library, with these options.

        ``optimize`` defaults to this interpreter's ``sys.flags.optimize``; ``source_path``
        (the file ``source`` was read from) is compared only when given.
        """
        return cls(
            source_sha256=hashlib.sha256(source).hexdigest(),
            library_version=LIBRARY_VERSION,
            options=options_key,
            optimize=sys.flags.optimize if optimize is None else optimize,
            source_path=source_path,
        )


@dataclass(frozen=True)
class CacheEntry:
    """What a cache file holds: the key it was written under and the rewrite's output."""

    key: CacheKey
    dependencies: tuple[Dependency, ...]
    generated_source: str
    code: CodeType
    resolutions: tuple[Resolution, ...] = ()
    """Checked by the hook before it uses the entry (:func:`stale_resolution`): it imports."""


class MissReason(enum.Enum):
    """Why a cache file could not be used; the values are what ``doctor`` prints."""

    NO_CACHE_PATH = "no cache location (this Python has no sys.implementation.cache_tag)"
    NO_FILE = "no cache file"
    UNREADABLE = "cache file unreadable"
    BAD_FORMAT = "not a mycelium cache file, or an older format"
    CORRUPT = "cache file corrupt (checksum mismatch)"
    PYTHON_CHANGED = "written by another Python version"
    SOURCE_CHANGED = "source changed"
    SOURCE_MOVED = "written for the module at another path (a copied or moved project)"
    VERSION_CHANGED = "library version changed"
    OPTIONS_CHANGED = "hook options changed"
    OPTIMIZE_CHANGED = "sys.flags.optimize changed"
    DEPENDENCY_CHANGED = "a handler or message module changed"
    DEPENDENCY_MISSING = "a handler or message module is missing"
    RESOLUTION_CHANGED = "an imported name means another class now"


@dataclass(frozen=True)
class CacheMiss:
    """A cache lookup that found nothing usable, and why."""

    reason: MissReason
    detail: str = ""

    def __str__(self) -> str:
        if not self.detail:
            return self.reason.value
        detail = self.detail
        if len(detail) > _MAX_DETAIL:
            detail = detail[: _MAX_DETAIL - 1] + "…"
        return f"{self.reason.value}: {detail}"


class WriteOutcome(enum.Enum):
    """What happened when the hook tried to store a rewritten module."""

    WRITTEN = "written"
    DONT_WRITE_BYTECODE = "not written: sys.dont_write_bytecode is set"
    NO_CACHE_PATH = "not written: no cache location"
    OS_ERROR = "not written: the cache directory is not writable"


@dataclass(frozen=True)
class CacheWrite:
    """The outcome of :func:`write_cache`, with the OS error text when there was one."""

    outcome: WriteOutcome
    path: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.outcome.value} ({self.detail})" if self.detail else self.outcome.value


def cache_path(source_path: str, optimize: int | None = None) -> str | None:
    """Where the hook caches ``source_path``, mirroring importlib (``sys.pycache_prefix`` too).

    One file per optimize level (default: this interpreter's ``sys.flags.optimize``), named as
    importlib names its own (``opt-1``). ``None`` when this Python keeps no bytecode cache
    (``sys.implementation.cache_tag is None``).
    """
    level = sys.flags.optimize if optimize is None else optimize
    try:
        standard = importlib.util.cache_from_source(
            source_path, optimization="" if level == 0 else level)
    except NotImplementedError:
        return None
    base, _ = os.path.splitext(standard)
    return base + CACHE_SUFFIX


def optimize_level_of(path: str) -> int:
    """The optimize level a cache file is for, from its name (``...opt-1.mycelium.pyc`` → 1)."""
    stem = os.path.basename(path).removesuffix(CACHE_SUFFIX)
    _, dot, last = stem.rpartition(".")
    if dot and last.startswith("opt-") and last[4:].isdigit():
        return int(last[4:])
    return 0


def read_cache(path: str, key: CacheKey) -> CacheEntry | CacheMiss:
    """The entry at ``path`` if it was written under ``key`` and its dependencies are unchanged."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return CacheMiss(MissReason.NO_FILE)
    except OSError as exc:
        return CacheMiss(MissReason.UNREADABLE, str(exc))
    decoded = _decode(data)
    if isinstance(decoded, CacheMiss):
        return decoded
    stored_key, dependencies, generated_source, resolutions, code_bytes = decoded
    stale = _compare_keys(stored_key, key) or _stale_dependency(dependencies)
    if stale is not None:
        return stale
    try:
        code = marshal.loads(code_bytes)
    except (EOFError, ValueError, TypeError) as exc:
        return CacheMiss(MissReason.BAD_FORMAT, f"bad code object: {exc}")
    if not isinstance(code, CodeType):
        return CacheMiss(MissReason.BAD_FORMAT, "payload is not a code object")
    return CacheEntry(stored_key, dependencies, generated_source, code, resolutions)


def write_cache(path: str | None, entry: CacheEntry) -> CacheWrite:
    """Store ``entry`` at ``path`` atomically; any :class:`OSError` just means "not written"."""
    if path is None:
        return CacheWrite(WriteOutcome.NO_CACHE_PATH)
    if sys.dont_write_bytecode:
        return CacheWrite(WriteOutcome.DONT_WRITE_BYTECODE, path)
    payload = _encode(entry)
    # pid + thread: two processes (or two hooks in one process) never share a temporary file.
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as file:
            file.write(payload)
        os.replace(temporary, path)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(temporary)
        return CacheWrite(WriteOutcome.OS_ERROR, path, str(exc))
    _sweep_dead_writers(path)
    return CacheWrite(WriteOutcome.WRITTEN, path)


def _sweep_dead_writers(path: str) -> None:
    """Delete the temporary files of writers of ``path`` that died before their
    :func:`os.replace` (SIGKILL, the OOM killer): each left up to a whole cache file behind,
    one more per crash, until ``cache clean``. A process that is still alive keeps its file.
    (A writer in another PID namespace sharing the directory may look dead: losing its
    temporary file only fails its replace, which means "not written", never a torn cache.)"""
    if os.name != "posix":
        return  # os.kill(pid, 0) is no liveness probe elsewhere (Windows terminates pid)
    directory, name = os.path.split(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for other in names:
        pid, dot, thread = other.removeprefix(f"{name}.").partition(".")
        if not (other.startswith(f"{name}.") and dot and pid.isdigit() and thread.isdigit()):
            continue
        if int(pid) == os.getpid() or _alive(int(pid)):
            continue
        with suppress(OSError):
            os.unlink(os.path.join(directory, other))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (PermissionError: another user's)
    return True


def _encode(entry: CacheEntry) -> bytes:
    metadata = json.dumps(
        {
            "key": {
                "source_sha256": entry.key.source_sha256,
                "library_version": entry.key.library_version,
                "options": entry.key.options,
                "optimize": entry.key.optimize,
                "source_path": entry.key.source_path,
            },
            "dependencies": [[dep.path, dep.digest] for dep in entry.dependencies],
            "resolutions": [[r.module, r.attr, list(r.rest), r.found]
                            for r in entry.resolutions],
            "generated_source": entry.generated_source,
        }
    ).encode()
    prefix = _PREFIX.pack(_MAGIC, _FORMAT_VERSION, importlib.util.MAGIC_NUMBER, len(metadata))
    body = metadata + marshal.dumps(entry.code)
    return prefix + _checksum(prefix, body) + body


def _checksum(prefix: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prefix + body).digest()


_Decoded = tuple[CacheKey, tuple[Dependency, ...], str, tuple[Resolution, ...], bytes]


def _decode(data: bytes) -> _Decoded | CacheMiss:
    if len(data) < _HEADER_SIZE:
        return CacheMiss(MissReason.BAD_FORMAT, "file shorter than its header")
    magic, version, python_magic, meta_len = _PREFIX.unpack_from(data)
    if magic != _MAGIC or version != _FORMAT_VERSION:
        return CacheMiss(MissReason.BAD_FORMAT)
    if python_magic != importlib.util.MAGIC_NUMBER:
        return CacheMiss(MissReason.PYTHON_CHANGED)
    stored_digest = data[_PREFIX.size : _HEADER_SIZE]
    body = data[_HEADER_SIZE:]
    if _checksum(data[: _PREFIX.size], body) != stored_digest:
        return CacheMiss(MissReason.CORRUPT)
    if len(body) < meta_len:
        return CacheMiss(MissReason.BAD_FORMAT, "truncated metadata")
    try:
        return (*_parse_metadata(json.loads(body[:meta_len])), body[meta_len:])
    except (ValueError, KeyError, TypeError) as exc:
        # The type only: a repr of undecodable bytes can run to thousands of characters.
        return CacheMiss(MissReason.BAD_FORMAT, f"bad metadata ({type(exc).__name__})")


def _parse_metadata(meta: Any
                    ) -> tuple[CacheKey, tuple[Dependency, ...], str, tuple[Resolution, ...]]:
    raw_key = meta["key"]
    key = CacheKey(
        source_sha256=str(raw_key["source_sha256"]),
        library_version=str(raw_key["library_version"]),
        options=str(raw_key["options"]),
        optimize=int(raw_key["optimize"]),
        source_path=str(raw_key["source_path"]),
    )
    dependencies = tuple(
        Dependency(str(path), str(digest)) for path, digest in meta["dependencies"]
    )
    resolutions = tuple(
        Resolution(str(module), None if attr is None else str(attr), tuple(map(str, rest)),
                   str(found))
        for module, attr, rest, found in meta["resolutions"]
    )
    return key, dependencies, str(meta["generated_source"]), resolutions


def _compare_keys(stored: CacheKey, current: CacheKey) -> CacheMiss | None:
    if stored.source_sha256 != current.source_sha256:
        return CacheMiss(MissReason.SOURCE_CHANGED)
    if current.source_path and not _same_file(stored.source_path, current.source_path):
        return CacheMiss(MissReason.SOURCE_MOVED, stored.source_path)
    if stored.library_version != current.library_version:
        detail = f"{stored.library_version} -> {current.library_version}"
        return CacheMiss(MissReason.VERSION_CHANGED, detail)
    if stored.options != current.options:
        return CacheMiss(MissReason.OPTIONS_CHANGED, f"{stored.options} -> {current.options}")
    if stored.optimize != current.optimize:
        return CacheMiss(MissReason.OPTIMIZE_CHANGED, f"{stored.optimize} -> {current.optimize}")
    return None


def _same_file(stored: str, current: str) -> bool:
    """One file under two names (a symlinked directory) is no move: two processes reaching
    the package through each would otherwise rewrite each other's cache forever."""
    return stored == current or os.path.realpath(stored) == os.path.realpath(current)


def _stale_dependency(dependencies: Iterable[Dependency]) -> CacheMiss | None:
    for dep in dependencies:
        try:
            digest = file_digest(dep.path)
        except OSError:
            return CacheMiss(MissReason.DEPENDENCY_MISSING, dep.path)
        if digest != dep.digest:
            return CacheMiss(MissReason.DEPENDENCY_CHANGED, dep.path)
    return None


# --- housekeeping for `mycelium-mono cache info|clean` ---------------------------------------


@dataclass(frozen=True)
class CacheFile:
    """One file the hook wrote (a cache file, or a temporary file a killed writer left)."""

    path: str
    size: int


@dataclass(frozen=True)
class CleanReport:
    """What :func:`clean_cache` found, and whether it removed it."""

    files: tuple[CacheFile, ...]
    removed: bool
    errors: tuple[str, ...] = ()

    @property
    def total_size(self) -> int:
        return sum(file.size for file in self.files)


def cache_dirs(roots: Iterable[str]) -> list[str]:
    """Directories under ``roots`` (and their ``sys.pycache_prefix`` mirror) holding our files."""
    return sorted({os.path.dirname(file.path) for file in find_cache_files(roots)})


def find_cache_files(roots: Iterable[str]) -> list[CacheFile]:
    """Every hook cache file (and leftover temporary file) under ``roots``, sorted by path."""
    found: dict[str, CacheFile] = {}
    for root in roots:
        for directory in _search_dirs(root):
            for path in _our_files(directory):
                with suppress(OSError):
                    found[path] = CacheFile(path, os.stat(path).st_size)
    return [found[path] for path in sorted(found)]


def clean_cache(roots: Iterable[str], *, dry_run: bool = False) -> CleanReport:
    """Delete every hook cache file under ``roots``; with ``dry_run`` only list them."""
    files = tuple(find_cache_files(roots))
    if dry_run:
        return CleanReport(files, removed=False)
    errors = []
    for file in files:
        try:
            os.unlink(file.path)
        except FileNotFoundError:
            pass  # another process cleaned it first: the goal is reached
        except OSError as exc:
            errors.append(f"{file.path}: {exc}")
    return CleanReport(files, removed=True, errors=tuple(errors))


def _search_dirs(root: str) -> Iterator[str]:
    root = os.path.abspath(root)
    yield root
    prefix = sys.pycache_prefix
    if prefix:
        # importlib mirrors the source directory's absolute path (drive dropped) under the prefix.
        yield os.path.join(prefix, os.path.splitdrive(root)[1].lstrip(os.sep))


def _our_files(directory: str) -> Iterator[str]:
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            if name.endswith(CACHE_SUFFIX) or f"{CACHE_SUFFIX}." in name:
                yield os.path.join(dirpath, name)
