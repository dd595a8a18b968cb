"""What every subcommand starts from: a routing module named by path or by module name.

A PATH is a ``.py`` file; its module name is read from the packages around it (directories
with an ``__init__.py``), and the directory above the top package goes on ``sys.path`` so the
handler modules it imports resolve as they would in the application. A MODULE is found with
:func:`importlib.util.find_spec`, which runs parent packages' ``__init__`` but never the
routing module itself.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

from mycelium_mono.routing.check import ResolvedTable, check_class
from mycelium_mono.routing.errors import Diagnostic, shown_path
from mycelium_mono.routing.parse import RoutingClass, parse_module
from mycelium_mono.routing.resolve import StaticScope

__all__ = [
    "Found",
    "Skipped",
    "Target",
    "UsageError",
    "being_imported",
    "find_target",
    "find_targets",
    "module_name_of",
    "resolved_tables",
    "routing_files",
    "use_color",
]


class UsageError(Exception):
    """A command-line mistake: the command prints it and exits with status 2."""


@dataclass(frozen=True)
class Target:
    """A routing module on disk: where it is, what it is called, and its bytes."""

    filename: str
    module_name: str
    source: bytes

    @property
    def text(self) -> str:
        return importlib.util.decode_source(self.source)

    @property
    def display(self) -> str:
        """The path as a diagnostic shows it: relative to the current directory when inside it."""
        return shown_path(self.filename)

    @property
    def top_package(self) -> str:
        return self.module_name.partition(".")[0]


def use_color(stream: object) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


@dataclass(frozen=True)
class Skipped:
    """A directory a search did not walk into, and why (the command says so)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Found:
    """The routing modules named on the command line, and the directories skipped on the way."""

    targets: tuple[Target, ...]
    skipped: tuple[Skipped, ...] = ()


def find_targets(names: list[str]) -> Found:
    """Each PATH or MODULE; a directory stands for every routing module under it."""
    targets: list[Target] = []
    skipped: list[Skipped] = []
    for name in names:
        if os.path.isdir(name):
            paths, passed = routing_files(name)
            skipped += passed
            if not paths:
                raise UsageError(f"{name}: no .py file under it mentions routing_config"
                                 f"{_skipped_clause(passed)}\n"
                                 "help: pass the routing module itself, or its package directory")
            targets += [find_target(path) for path in paths]
        else:
            targets.append(find_target(name))
    return Found(tuple(targets), tuple(skipped))


def _skipped_clause(skipped: list[Skipped]) -> str:
    return f" (skipped: {', '.join(s.path for s in skipped)})" if skipped else ""


_VENDORED = {"node_modules": "vendored JavaScript packages",
             "site-packages": "installed packages", "dist-packages": "installed packages",
             "__pycache__": "bytecode cache"}


def _skip_reason(directory: str, name: str) -> str | None:
    """Why ``check DIR`` must not walk into ``directory``: it holds someone else's code."""
    if os.path.isfile(os.path.join(directory, "pyvenv.cfg")):
        return "a virtual environment (pyvenv.cfg)"
    if name.startswith("."):
        return "hidden directory"  # .git, .tox, .mypy_cache ...
    return _VENDORED.get(name)


def routing_files(directory: str) -> tuple[list[str], list[Skipped]]:
    """``.py`` files under ``directory`` that mention ``routing_config`` (the hook's own test).

    Virtual environments, installed and vendored trees and hidden directories are skipped
    (issue 15: `check .` walked into venv/ and node_modules/); the second list says which.
    """
    found: list[str] = []
    skipped: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        keep = []
        for name in sorted(dirnames):
            reason = _skip_reason(os.path.join(dirpath, name), name)
            if reason is None:
                keep.append(name)
            elif reason not in ("hidden directory", "bytecode cache"):
                # .git and __pycache__ are skipped silently, as every tool does.
                skipped.append(Skipped(os.path.join(dirpath, name), reason))
        dirnames[:] = keep
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            if filename.endswith(".py") and _MARKER in _read(path):
                found.append(path)
    return found, skipped


_MARKER = b"routing_config"


def find_target(name: str) -> Target:
    """Resolve a PATH (a file that exists, or any ``*.py``) or a dotted MODULE name."""
    if name.endswith(".py") or os.sep in name or os.path.isfile(name):
        return _target_from_path(name)
    return _target_from_module(name)


def _target_from_path(path: str) -> Target:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file\nhelp: pass a routing module's .py file or its "
                         "dotted module name (e.g. myapp.routing)")
    filename = os.path.abspath(path)
    source = _read(filename)
    root, module_name = module_name_of(filename)
    is_package = os.path.basename(filename) == "__init__.py"  # its `.` is itself
    if (_relative_depth(source) > module_name.count(".") + is_package
            or _imports_its_namespace(source, filename, root)):
        root, module_name = _namespace_name_of(filename, root, module_name)
    _prepend_path(root)
    return Target(filename, module_name, source)


def _relative_depth(source: bytes) -> int:
    """How many package levels the module's relative imports climb (0: none, or unparsable:
    the checker reports the syntax error itself)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return 0
    return max((n.level for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)), default=0)


def _imports_its_namespace(source: bytes, filename: str, root: str) -> bool:
    """Whether the module imports, by absolute name, the namespace package (a directory
    without ``__init__.py``) it sits in: ``check kitchen/routing.py`` read the file as a
    top-level ``routing`` with ``kitchen/`` on sys.path, and its ``from kitchen.messages import
    ...`` failed (E0012 "No module named 'kitchen'") while ``check kitchen.routing`` and the
    hook import it."""
    relative = os.path.relpath(root, os.getcwd())
    if relative == os.curdir or relative.startswith(os.pardir):
        return False
    top = relative.split(os.sep)[0]
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                 and node.module else [])
        if any(name.split(".")[0] == top for name in names):
            return True
    return False


def _namespace_name_of(filename: str, root: str, module_name: str) -> tuple[str, str]:
    """The name under the current directory, for a module in a namespace package (directories
    without ``__init__.py``): ``check ns/`` read ``ns/sub/routing.py`` as a top-level
    ``routing``, and its ``from .messages import ...`` failed (E0012 "Empty module name")
    while ``python -m ns.sub.routing`` and the hook import it. Kept as it was unless every
    directory between here and the file is a valid package name."""
    here = os.getcwd()
    relative = os.path.relpath(filename, here)
    parts = relative.split(os.sep)
    parts[-1] = os.path.splitext(parts[-1])[0]
    if parts[-1] == "__init__":
        parts.pop()
    if relative.startswith(os.pardir) or not all(p.isidentifier() for p in parts):
        return root, module_name
    return here, ".".join(parts)


def module_name_of(filename: str) -> tuple[str, str]:
    """(sys.path root, dotted name): walk up while directories are packages."""
    directory, base = os.path.split(filename)
    parts = [] if base == "__init__.py" else [os.path.splitext(base)[0]]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.insert(0, package)
    return directory, ".".join(parts)


def _target_from_module(name: str) -> Target:
    if not all(part.isidentifier() for part in name.split(".")):
        raise UsageError(f"{name!r} is neither a file nor a module name\n"
                         "help: pass a path to a .py file, or a dotted name such as myapp.routing")
    _prepend_path(os.getcwd())
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"cannot look up module {name!r}: {exc}\n{_search_help()}") from None
    except Exception as exc:
        # find_spec imports the parent packages; their __init__ may fail in its own way.
        raise UsageError(f"importing the packages around {name!r} raised "
                         f"{type(exc).__name__}: {exc}\nhelp: pass the routing module's path "
                         "to check it without importing its package") from None
    if spec is None:
        raise UsageError(f"no module named {name!r}\n{_search_help()}")
    origin = spec.origin
    if origin is not None and origin.endswith(".py") and not os.path.exists(origin):
        # "is not a Python source file ... help: routing modules are .py files" for a .py
        # member of a zip: true of neither.
        raise UsageError(f"module {name!r} is inside an archive (origin: {origin}): the import "
                         "hook rewrites only files on disk, so its bus is built at run time, "
                         "and this command reads files on disk too\n"
                         "help: run it on the unpacked source tree (the directory the archive "
                         "was built from)")
    if origin is None or not origin.endswith(".py") or not os.path.isfile(origin):
        raise UsageError(f"module {name!r} is not a Python source file (origin: {origin})\n"
                         "help: routing modules are .py files")
    root, full_name = module_name_of(os.path.abspath(origin))
    if full_name.endswith(f".{name}"):
        # `show routing` from inside the package directory: the file is ward.routing, and
        # importing it as `routing` failed on its own `from ward.messages import ...` (E0012
        # "No module named 'ward'"). Read it as the path names it.
        _prepend_path(root)
        return Target(origin, full_name, _read(origin))
    return Target(origin, name, _read(origin))


def _search_help() -> str:
    return ("help: run the command from your project's root directory (it is put on sys.path), "
            "or pass the routing module's path instead")


def _read(filename: str) -> bytes:
    try:
        with open(filename, "rb") as file:
            return file.read()
    except OSError as exc:
        raise UsageError(f"{filename}: cannot read: {exc.strerror}") from None


def _prepend_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def resolved_tables(target: Target) -> tuple[list[ResolvedTable], list[Diagnostic]]:
    """Each routing class of ``target`` resolved and checked, as the hook would see it.

    Raises :class:`SyntaxError` for source that is not Python.
    """
    filename = target.display
    tree = ast.parse(target.text, filename)
    parsed = parse_module(tree, filename)
    with being_imported(target.module_name, target.filename):
        tables, problems = _resolve_classes(target, tree, parsed.classes,
                                            list(parsed.diagnostics))
    # In the file's order, as `check` and the hook print them: the parse stage's errors
    # (an E0007 on the last line) came first in doctor, stubs and bench.
    problems.sort(key=lambda d: (d.span.lineno, d.span.col_offset))
    return tables, problems


@contextlib.contextmanager
def being_imported(module_name: str, filename: str) -> Iterator[None]:
    """The routing module in ``sys.modules``, empty, while its names are resolved: the state
    the hook resolves them in (importlib adds a module before running it). A handler module
    that imports the routing module back (``import myapp.routing``) works under the hook and
    in plain Python, but `check` imported it with the routing module absent, ran the routing
    module from the handler module, and reported a circular import (E0012) that no real
    import has."""
    if module_name in sys.modules:
        yield
        return
    placeholder = types.ModuleType(module_name)
    placeholder.__file__ = filename
    if os.path.basename(filename) == "__init__.py":
        # A package's routing: its handler modules are its submodules, found on __path__.
        placeholder.__path__ = [os.path.dirname(filename)]
    sys.modules[module_name] = placeholder
    try:
        yield
    finally:
        if sys.modules.get(module_name) is placeholder:
            del sys.modules[module_name]


def _resolve_classes(target: Target, tree: ast.Module, classes: tuple[RoutingClass, ...],
                     diagnostics: list[Diagnostic]
                     ) -> tuple[list[ResolvedTable], list[Diagnostic]]:
    filename = target.display
    tables: list[ResolvedTable] = []
    for routing in classes:
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and
                    n.lineno == routing.lineno)
        first_line = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        scope = StaticScope(tree, target.module_name, filename, before_line=first_line)
        try:
            table, problems = check_class(routing, scope, filename)
        except SyntaxError:
            raise  # a module that does not parse: main() renders it compiler style
        except Exception as exc:
            # A message or handler module that raises on import (a MessageError from a bad
            # @message, a RuntimeError of its own): `check` reports it as E0012, but show,
            # doctor, stubs and bench ended in a traceback. The same diagnostic here.
            from mycelium_mono.cli.check import import_diagnostic

            diagnostics.append(import_diagnostic(target, tree, exc))
            return tables, diagnostics
        tables.append(table)
        diagnostics.extend(problems)
    return tables, diagnostics
