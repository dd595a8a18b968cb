"""The import hook: find routing modules in the given packages, rewrite them, cache their code.

``install_import_hook(packages=["bandit"])`` puts a :class:`MyceliumFinder` at
``sys.meta_path[0]``. For a module inside those packages it asks the finders after it for the
spec; when that spec is a plain source file whose bytes mention ``routing_config`` (a byte
search, no parsing), it swaps in a :class:`MyceliumLoader`. Everything else keeps the spec and
loader the normal finders gave it, and modules outside the packages are never even looked at.

The loader is a :class:`importlib.machinery.SourceFileLoader` (``inspect``, ``linecache`` and
``get_source`` keep working) whose ``get_code`` reads the hook's own cache (:mod:`.cache`) or
runs the rewrite pipeline (:mod:`.pipeline`). What happened to each module is kept in a small
registry, :func:`import_records`, that ``mycelium-mono doctor`` prints.

Thread safety comes from importlib itself: it holds a per-module lock around ``exec_module``, so
one module is rewritten by one thread while the others wait for the finished module.
"""

from __future__ import annotations

import enum
import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import CodeType, ModuleType, TracebackType
from typing import Self

from mycelium_mono.routing.cache import (
    CacheEntry,
    CacheKey,
    CacheMiss,
    CacheWrite,
    MissReason,
    cache_path,
    read_cache,
    write_cache,
)
from mycelium_mono.routing.errors import RoutingError
from mycelium_mono.routing.pipeline import (
    Dependency,
    RewriteOptions,
    register_generated_source,
    rewrite_module,
)
from mycelium_mono.routing.resolve import stale_resolution

__all__ = [
    "ImportHookManager",
    "ImportRecord",
    "MyceliumFinder",
    "MyceliumHookWarning",
    "MyceliumLoader",
    "Outcome",
    "clear_import_records",
    "import_records",
    "install_import_hook",
    "usable_cache",
]

_MARKER = b"routing_config"


class MyceliumHookWarning(UserWarning):
    """A routing module escaped the hook (it was imported before the hook was installed)."""


class Outcome(enum.Enum):
    """What the hook did with one routing module."""

    CACHE_HIT = "loaded from the hook's cache"
    REWRITTEN = "rewritten"
    FAILED = "rewrite failed with a routing error"
    IMPORTED_BEFORE_HOOK = "imported before the hook was installed (runtime build, no cache)"


@dataclass(frozen=True)
class ImportRecord:
    """What happened to one routing module, for ``doctor`` and for tests."""

    module: str
    source_path: str
    outcome: Outcome
    cache_path: str | None = None
    miss: CacheMiss | None = None
    """Why the cache was not used (rewrites and failures only)."""
    write: CacheWrite | None = None
    """What happened when storing the rewrite (rewrites only)."""
    dependencies: tuple[Dependency, ...] = ()
    error: str | None = None

    def describe(self) -> str:
        """One human line: ``bandit.routing: rewritten (cache miss: source changed; written)``."""
        parts = [f"cache miss: {self.miss}"] if self.miss else []
        if self.write:
            parts.append(str(self.write))
        if self.error:
            parts.append(self.error.splitlines()[0])
        details = f" ({'; '.join(parts)})" if parts else ""
        return f"{self.module}: {self.outcome.value}{details}"


_records: dict[str, ImportRecord] = {}
_records_lock = threading.Lock()


def import_records() -> dict[str, ImportRecord]:
    """A snapshot of what the hook did in this process, by module name (latest import wins)."""
    with _records_lock:
        return dict(_records)


def clear_import_records() -> None:
    """Forget every record (tests, or a long-lived process that re-imports modules)."""
    with _records_lock:
        _records.clear()


def _record(record: ImportRecord) -> None:
    with _records_lock:
        _records[record.module] = record


class MyceliumLoader(importlib.machinery.SourceFileLoader):
    """Loads a routing module through the rewrite pipeline and the hook's own bytecode cache.

    Only ``get_code`` changes: it never reads or writes the standard ``.pyc`` (which would let a
    later import without the hook run rewritten code, or the hook run stale code).
    """

    def __init__(
        self, fullname: str, path: str, options: RewriteOptions, *, source: bytes | None = None
    ) -> None:
        super().__init__(fullname, path)
        self.options = options
        self._prefetched = source
        """The bytes the finder already read for its byte search: used once, then dropped, so
        ``importlib.reload`` reads the file again."""

    def get_code(self, fullname: str) -> CodeType:
        source_path = self.get_filename(fullname)
        source, self._prefetched = self._prefetched, None
        if source is None:
            source = self.get_data(source_path)
        key = CacheKey.current(source, self.options.key(), source_path=source_path)
        location = cache_path(source_path)
        found = usable_cache(location, key)
        if isinstance(found, CacheEntry):
            _record(
                ImportRecord(
                    fullname,
                    source_path,
                    Outcome.CACHE_HIT,
                    location,
                    dependencies=found.dependencies,
                )
            )
            _show_generated(fullname, found.generated_source)
            return found.code
        return self._rewrite(fullname, source_path, source, key, location, found)

    def _rewrite(
        self,
        fullname: str,
        source_path: str,
        source: bytes,
        key: CacheKey,
        location: str | None,
        miss: CacheMiss,
    ) -> CodeType:
        try:
            result = rewrite_module(source, source_path, fullname, self.options)
        except RoutingError as exc:
            # Never cached: the next import must report the same errors (or load the fix).
            _record(
                ImportRecord(fullname, source_path, Outcome.FAILED, location, miss, error=str(exc))
            )
            # The pipeline's frames say nothing to the person whose routing table is wrong:
            # the traceback ends at this loader, then shows the file, line and caret.
            raise exc.with_traceback(None) from None
        code = compile(result.tree, source_path, "exec", dont_inherit=True)
        entry = CacheEntry(key, result.dependencies, result.generated_source, code,
                           result.resolutions)
        written = write_cache(location, entry)
        _show_generated(fullname, result.generated_source)
        _record(
            ImportRecord(
                fullname,
                source_path,
                Outcome.REWRITTEN,
                location,
                miss,
                written,
                result.dependencies,
            )
        )
        return code


def usable_cache(location: str | None, key: CacheKey) -> CacheEntry | CacheMiss:
    """The cache entry the hook would run for ``key``, or why it would rewrite instead."""
    if location is None:
        return CacheMiss(MissReason.NO_CACHE_PATH)
    found = read_cache(location, key)
    return _still_resolves(found) if isinstance(found, CacheEntry) else found


def _still_resolves(entry: CacheEntry) -> CacheEntry | CacheMiss:
    """The entry, unless a name its rewrite imported means something else now (a handler
    module that picks its class at import, a module shadowed on sys.path): unchanged files
    alone let such a cache call methods the class no longer has."""
    changed = stale_resolution(entry.resolutions)
    if changed is None:
        return entry
    name = ".".join([changed.module, *filter(None, [changed.attr]), *changed.rest])
    return CacheMiss(MissReason.RESOLUTION_CHANGED, name)


def _show_generated(module_name: str, generated_source: str) -> None:
    # In linecache on every import, hit or rewrite, so `show` and debuggers find the text.
    if generated_source:
        register_generated_source(module_name, generated_source)


class MyceliumFinder(importlib.abc.MetaPathFinder):
    """Wraps routing modules inside ``packages``; subclass and override :meth:`should_rewrite`."""

    def __init__(self, packages: Sequence[str], options: RewriteOptions) -> None:
        self.packages = tuple(packages)
        self.options = options
        self._prefixes = tuple(f"{name}." for name in self.packages)

    def should_rewrite(self, module_name: str) -> bool:
        """Whether ``module_name`` is inside the hook's packages (exact name or ``pkg.`` prefix)."""
        return module_name in self.packages or module_name.startswith(self._prefixes)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not self.should_rewrite(fullname):
            return None
        spec = self._find_with_other_finders(fullname, path, target)
        source = _routing_source(spec) if spec is not None else None
        if spec is None or spec.origin is None or source is None:
            # Hand back what the normal finders found: importlib would only search again.
            return spec
        spec.loader = MyceliumLoader(fullname, spec.origin, self.options, source=source)
        return spec

    def _find_with_other_finders(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        finders = list(sys.meta_path)
        after = next((i + 1 for i, finder in enumerate(finders) if finder is self), 0)
        for finder in finders[after:]:
            if isinstance(finder, MyceliumFinder):
                continue  # itself, or another hook: never wrap twice
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


def _routing_source(spec: importlib.machinery.ModuleSpec) -> bytes | None:
    """The source bytes of a plain source module that mentions ``routing_config``, else None."""
    loader = spec.loader
    if not isinstance(loader, importlib.machinery.SourceFileLoader) or spec.origin is None:
        return None
    if isinstance(loader, MyceliumLoader):
        return None
    source = _read(spec.origin)
    return source if source is not None and _MARKER in source else None


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None  # the normal loader will report it, with its own message


class ImportHookManager:
    """The installed hook: a context manager; :meth:`uninstall` removes it (idempotent).

    Uninstalling stops rewriting new imports; modules already imported stay as they are.
    """

    def __init__(self, finder: MyceliumFinder) -> None:
        self.finder = finder

    @property
    def installed(self) -> bool:
        return any(finder is self.finder for finder in sys.meta_path)

    def uninstall(self) -> None:
        """Remove the finder from ``sys.meta_path``; calling it twice is harmless."""
        sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self.finder]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "installed" if self.installed else "uninstalled"
        return f"<ImportHookManager packages={list(self.finder.packages)} {state}>"


def install_import_hook(
    packages: str | Iterable[str],
    options: RewriteOptions | None = None,
    *,
    finder_class: type[MyceliumFinder] = MyceliumFinder,
) -> ImportHookManager:
    """Rewrite the routing modules of ``packages`` when they are imported from now on.

    Install it before anything imports those packages: a routing module imported earlier ran
    without the hook (a :class:`MyceliumHookWarning` names it). ``options`` apply to every
    module the hook rewrites and are part of the cache key.
    """
    names = _package_names(packages)
    finder = finder_class(names, options if options is not None else RewriteOptions())
    _warn_imported_before(finder)
    sys.meta_path.insert(0, finder)
    return ImportHookManager(finder)


def _package_names(packages: str | Iterable[str]) -> tuple[str, ...]:
    names = (packages,) if isinstance(packages, str) else tuple(packages)
    if not names:
        raise ValueError(
            "install_import_hook() needs at least one package\n"
            "help: name the packages that hold routing modules, "
            'e.g. install_import_hook(["bandit"])'
        )
    for name in names:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(
                f"install_import_hook(): {name!r} is not a package name\n"
                "help: pass dotted module names such as 'bandit' or 'myapp.services', not paths"
            )
    return names


def _warn_imported_before(finder: MyceliumFinder) -> None:
    for name, module in list(sys.modules.items()):
        loader = getattr(module, "__loader__", None)
        if not finder.should_rewrite(name) or isinstance(loader, MyceliumLoader):
            continue
        origin = getattr(module, "__file__", None)
        if not isinstance(origin, str) or not origin.endswith(".py"):
            continue
        source = _read(origin)
        if source is None or _MARKER not in source:
            continue
        _record(ImportRecord(name, origin, Outcome.IMPORTED_BEFORE_HOOK))
        warnings.warn(
            f"{name} ({origin}) was imported before the mycelium-mono import hook was installed: "
            "its @routing_config was built at run time (same code, no bytecode cache)\n"
            f"help: install the hook before the first import of {name.partition('.')[0]} "
            "(pytest: set `mycelium_packages` in the ini file; scripts: "
            "`python -m mycelium_mono run ...`)",
            MyceliumHookWarning,
            stacklevel=3,
        )
