"""The stages glued together: source → parse → resolve/check → generate → rewritten module.

:func:`rewrite_module` is what the import hook calls; :func:`build_tables` is shared with the
no-hook path in :mod:`mycelium_mono.routing.runtime_build`, so both generate the same code.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import linecache
import os
import symtable
from collections.abc import Iterable
from dataclasses import dataclass

from mycelium_mono import __version__
from mycelium_mono.routing.check import ResolvedTable, check_class
from mycelium_mono.routing.errors import Diagnostic, RoutingError
from mycelium_mono.routing.generate import CallNote, GeneratedClass, generate_class, support_import
from mycelium_mono.routing.parse import (
    RoutingClass,
    decorator_names,
    generated_name_clashes,
    is_routing_decorator,
    parse_module,
)
from mycelium_mono.routing.resolve import Resolution, Scope, StaticScope

__all__ = [
    "DEFAULT_INLINE",
    "LIBRARY_VERSION",
    "Dependency",
    "RewriteOptions",
    "RewriteResult",
    "build_tables",
    "file_digest",
    "generated_filename",
    "rewrite_module",
]

def _generator_fingerprint() -> str:
    """The release plus a stamp of the files that generate code.

    A cached rewrite made by different generator code is stale even within one release (an
    editable install being worked on, a patched site-packages): the stamp is the size and
    mtime of each such file, which costs a few stat calls once per process.
    """
    here = os.path.dirname(__file__)
    files = sorted(
        [os.path.join(here, name) for name in os.listdir(here) if name.endswith(".py")]
        + [os.path.join(os.path.dirname(here), "monolith.py")]
    )
    stamp = hashlib.blake2b(digest_size=6)
    for path in files:
        try:
            info = os.stat(path)
        except OSError:
            continue
        stamp.update(f"{os.path.basename(path)}:{info.st_size}:{info.st_mtime_ns};".encode())
    return f"{__version__}+g{stamp.hexdigest()}"


LIBRARY_VERSION = _generator_fingerprint()

DEFAULT_INLINE = False
"""What ``@routing_config`` without ``inline=`` does (see the README for the measurement)."""


@dataclass(frozen=True)
class Dependency:
    """A file the rewrite looked at: if its bytes change, the cached rewrite is stale."""

    path: str
    digest: str


@dataclass(frozen=True)
class RewriteOptions:
    """Hook-level options; part of the cache key."""

    inline: bool | None = None
    """Overrides every ``@routing_config(inline=...)`` when not None."""

    def key(self) -> str:
        return f"inline={self.inline}"


@dataclass(frozen=True)
class RewriteResult:
    tree: ast.Module
    dependencies: tuple[Dependency, ...]
    generated_source: str
    notes: tuple[CallNote, ...] = ()
    resolutions: tuple[Resolution, ...] = ()
    """The names looked up by importing and what they meant: checked again on a cache hit."""


def file_digest(path: str) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def generated_filename(module_name: str) -> str:
    """The stable ``linecache`` name under which a module's generated code is registered."""
    return f"<mycelium-mono generated {module_name}>"


def register_generated_source(module_name: str, source: str) -> str:
    """Put the generated code in ``linecache`` so debuggers and ``show`` can display it."""
    name = generated_filename(module_name)
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    return name


def effective_inline(table: ResolvedTable, options: RewriteOptions) -> bool:
    if options.inline is not None:
        return options.inline
    return DEFAULT_INLINE if table.inline is None else table.inline


def build_tables(
    classes: Iterable[tuple[RoutingClass, Scope]], filename: str, options: RewriteOptions,
    imported: frozenset[str] = frozenset(),
) -> tuple[list[GeneratedClass], list[Diagnostic]]:
    """Check every routing class and generate those without problems; ``imported``: the names
    the module the classes are compiled in binds by import (the hook's rewritten module)."""
    generated: list[GeneratedClass] = []
    diagnostics: list[Diagnostic] = []
    for routing, scope in classes:
        table, problems = check_class(routing, scope, filename)
        diagnostics.extend(problems)
        if not problems:
            generated.append(generate_class(
                table, inline=effective_inline(table, options), imported=imported,
                check_calls=getattr(scope, "guessed_a_branch", False)))
    return generated, diagnostics


def rewrite_module(
    source: bytes,
    filename: str,
    module_name: str,
    options: RewriteOptions = RewriteOptions(),
) -> RewriteResult:
    """Rewrite every top-level ``@routing_config`` class of a module into its generated bus.

    Raises :class:`RoutingError` with every routing mistake in the module. A genuine syntax
    error is left to the normal ``SyntaxError``.
    """
    text = importlib.util.decode_source(source)
    tree = ast.parse(text, filename)
    parsed = parse_module(tree, filename)
    if not parsed.classes:
        return RewriteResult(tree, (), "")
    scopes: list[StaticScope] = []
    pairs = []
    for routing in parsed.classes:
        scope = StaticScope(tree, module_name, filename, before_line=_first_line(tree, routing),
                            text=text)
        scopes.append(scope)
        pairs.append((routing, scope))
    generated, problems = build_tables(pairs, filename, options, module_imports(text, filename))
    diagnostics = [*parsed.diagnostics, *generated_name_clashes(tree, filename), *problems]
    if diagnostics:
        raise RoutingError(diagnostics, text)
    _splice(tree, generated)
    source_text = "\n\n".join(ast.unparse(g.node) for g in generated) + "\n"
    return RewriteResult(
        tree,
        _dependencies(scopes, filename, [path for g in generated for path in g.sources]),
        source_text,
        tuple(note for g in generated for note in g.notes),
        _resolutions(scopes),
    )


def module_imports(text: str, filename: str) -> frozenset[str]:
    """The names ``text`` binds by ``import`` in its module scope, as the compiler sees them."""
    top = symtable.symtable(text, filename, "exec")
    return frozenset(s.get_name() for s in top.get_symbols() if s.is_imported())


def _first_line(tree: ast.Module, routing: RoutingClass) -> int:
    node = _class_node(tree, routing.lineno)
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def _class_node(tree: ast.Module, lineno: int) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.lineno == lineno:
            return node
    raise LookupError(f"no class statement on line {lineno}")  # parse and splice disagree


def _splice(tree: ast.Module, generated: list[GeneratedClass]) -> None:
    """Replace each routing class by its generated class and import the support module."""
    # By line, not name: a second `class Bus` got the first one's table (issue 11.7).
    by_line = {g.lineno: g for g in generated}
    names = decorator_names(tree)
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.ClassDef) and node.lineno in by_line:
            if not any(is_routing_decorator(d, names) for d in node.decorator_list):
                continue
            new = by_line[node.lineno].node
            new.decorator_list = [d for d in node.decorator_list
                                  if not is_routing_decorator(d, names)]
            tree.body[index] = new
    position = _import_position(tree)
    prelude = [stmt for g in generated for stmt in g.prelude]
    tree.body[position:position] = [support_import(), *prelude]
    ast.fix_missing_locations(tree)


def _import_position(tree: ast.Module) -> int:
    """After the docstring and ``from __future__`` imports, which must come first."""
    position = 0
    for index, node in enumerate(tree.body):
        is_doc = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if is_doc or is_future:
            position = index + 1
    return position


def _resolutions(scopes: list[StaticScope]) -> tuple[Resolution, ...]:
    found: dict[tuple[str, str | None, tuple[str, ...]], Resolution] = {}
    for scope in scopes:
        for key, res in scope.resolutions.items():
            found.setdefault(key, res)
    return tuple(found[key] for key in sorted(found, key=repr))


def _dependencies(scopes: list[StaticScope], filename: str, inlined: Iterable[str] = ()
                  ) -> tuple[Dependency, ...]:
    """The files the rewrite read: every module it imported, and every file a body was
    inlined from (the routing module itself is the key's source digest)."""
    watched = [*(p for s in scopes for p in s.imported_files.values()), *inlined]
    paths = sorted({_watched_file(p) for p in watched if p != filename})
    deps = []
    for path in paths:
        try:
            deps.append(Dependency(path, file_digest(path)))
        except OSError:
            continue  # not a file we can read: nothing to compare on the next import
    return tuple(deps)


def _watched_file(path: str) -> str:
    """``path``, or for a module inside a zip archive (``lib.zip/pkg/handlers.py``) the archive
    itself. Such a member is no file to digest: it was left out, and a cache whose handlers
    were inlined from the zip stayed "current" after the zip was rebuilt with other bodies
    (the bus's guard then refused its inlined path on every run, blaming a replaced method)."""
    if os.path.exists(path):
        return path
    head = os.path.dirname(path)
    while head and os.path.dirname(head) != head:
        if os.path.isfile(head):
            return head
        head = os.path.dirname(head)
    return path
