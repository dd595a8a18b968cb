"""``mycelium-mono cache info|clean [-n]``: the import hook's bytecode cache files.

``info`` also says, for each file, whether the next import would use it (for the default hook
options) and if not, why: the same answer the hook itself would reach. That includes the names
the rewrite imported (a handler module choosing its class from an environment variable): like
the hook before it uses a file, ``info`` imports those modules and looks each name up again.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import TextIO

from mycelium_mono.cli.target import UsageError, module_name_of
from mycelium_mono.routing.cache import (
    CACHE_SUFFIX,
    CacheEntry,
    CacheKey,
    CacheMiss,
    clean_cache,
    find_cache_files,
    optimize_level_of,
    read_cache,
)
from mycelium_mono.routing.hook import usable_cache
from mycelium_mono.routing.pipeline import RewriteOptions

__all__ = ["cache_status", "run_cache"]


def run_cache(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    roots = args.roots or [os.getcwd()]
    for root in roots:
        if not os.path.isdir(root):
            # A typo'd directory used to report "0 cache files ... under /nonexistent", exit 0.
            what = "not a directory" if os.path.exists(root) else "no such directory"
            raise UsageError(f"{root}: {what}\nhelp: pass the project directories to search "
                             "(default: the current directory)")
    if args.action == "info":
        return _info(roots, out)
    return _clean(roots, out, dry_run=args.dry_run)


def cache_status(path: str) -> str:
    """``current``, ``stale (why)`` or ``orphan`` for one hook cache file."""
    source = _source_of(path)
    if source is None:
        return "leftover temporary file" if not path.endswith(CACHE_SUFFIX) else "unknown source"
    try:
        with open(source, "rb") as file:
            data = file.read()
    except OSError:
        return f"orphan: {source} is gone"
    tag = _cache_tag_of(path)
    if tag and tag != sys.implementation.cache_tag:
        # This Python's hook never opens that file (it reads its own tag's), so "stale
        # (written by another Python version)" was wrong for a project run by 3.11 and 3.12
        # alike: the other file is current for its own Python, which alone can judge it.
        return (f"for another Python ({tag}): run `mycelium-mono cache info` with that "
                "Python to judge it")
    # Judged for the level it was written for: `cache info` without -O must not call the
    # -O file stale.
    key = CacheKey.current(data, RewriteOptions().key(), optimize_level_of(path), source)
    found = read_cache(path, key)
    if isinstance(found, CacheEntry):
        # Unchanged files are not enough: the hook also looks every imported name up again
        # (a class picked by an environment variable), and `info` said "current" for a file
        # the next import rewrites while `doctor` called it a miss.
        found = _as_the_hook_sees(path, key, source, found)
    return "current" if isinstance(found, CacheEntry) else f"stale ({found})"


def _as_the_hook_sees(path: str, key: CacheKey, source: str, entry: CacheEntry
                      ) -> CacheEntry | CacheMiss:
    """:func:`usable_cache` with the source's project on ``sys.path``, as the application
    would import it; the modules imported for it are forgotten after, so one project's
    ``myapp`` does not answer for another's."""
    root = _project_root(os.path.abspath(source), entry)
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        return usable_cache(path, key)
    finally:
        sys.path[:] = saved_path
        inside = os.path.join(root, "")
        for name in set(sys.modules) - saved_modules:
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(inside):
                del sys.modules[name]


def _project_root(source: str, entry: CacheEntry) -> str:
    """The directory the application imports the source's package from: above the regular
    packages around it, or, in a namespace package (no ``__init__.py``), above the directory
    named like a package the rewrite imported (``kitchen/routing.py`` importing
    ``kitchen.messages``). Read as a top-level ``routing`` instead, every name failed to
    import and ``info`` called the file stale, while the hook's next import used it."""
    root = module_name_of(source)[0]
    if root != os.path.dirname(source):
        return root  # inside a regular package: its name is known
    tops = {res.module.split(".")[0] for res in entry.resolutions}
    directory = root
    while os.path.dirname(directory) != directory:
        if os.path.basename(directory) in tops:
            return os.path.dirname(directory)
        directory = os.path.dirname(directory)
    return root


def _cache_tag_of(path: str) -> str:
    """``cpython-312`` for ``routing.cpython-312[.opt-1].mycelium.pyc``."""
    stem = os.path.basename(path).removesuffix(CACHE_SUFFIX)
    parts = stem.split(".")
    if len(parts) > 2 and parts[-1].startswith("opt-"):
        parts.pop()
    return parts[-1] if len(parts) > 1 else ""


def _source_of(path: str) -> str | None:
    if not path.endswith(CACHE_SUFFIX):
        return None
    # routing.cpython-311.mycelium.pyc is importlib's routing.cpython-311.pyc with our suffix,
    # so importlib can map it back (sys.pycache_prefix included).
    standard = path[: -len(CACHE_SUFFIX)] + ".pyc"
    try:
        return importlib.util.source_from_cache(standard)
    except (ValueError, NotImplementedError):
        return None


def _info(roots: list[str], out: TextIO) -> int:
    files = find_cache_files(roots)
    for file in files:
        out.write(f"{file.size:>9}  {file.path}  [{cache_status(file.path)}]\n")
    total = sum(f.size for f in files)
    out.write(f"{len(files)} cache file{'' if len(files) == 1 else 's'} (*{CACHE_SUFFIX}), "
              f"{_size(total)}, under {', '.join(roots)}\n")
    if sys.pycache_prefix:
        out.write(f"note: sys.pycache_prefix is {sys.pycache_prefix}; its mirror was searched "
                  "too\n")
    return 0


def _clean(roots: list[str], out: TextIO, *, dry_run: bool) -> int:
    report = clean_cache(roots, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for file in report.files:
        out.write(f"{verb} {file.path}\n")
    for error in report.errors:
        sys.stderr.write(f"error: cannot remove {error}\n")
    count = len(report.files) - len(report.errors)
    out.write(f"{verb} {count} cache file{'' if count == 1 else 's'} ({_size(report.total_size)})"
              f"{'; nothing was deleted (dry run)' if dry_run else ''}\n")
    return 1 if report.errors else 0


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"
