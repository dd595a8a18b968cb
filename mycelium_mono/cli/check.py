"""``mycelium-mono check`` and ``mycelium-mono show``: the rewrite, run without running the module.

``check`` reports every routing error of every file, compiler style (or as JSON for tools);
``show`` prints the code the import hook generates, and how each handler is called.

Checking imports the handler and message modules, so two applications checked in one process
can collide (a ``type_id`` reused across two apps gave false E0012 errors, issue 15). When the
files belong to more than one top-level package, each package is checked in a process of its
own (``check --format json`` on its files) and the results merged.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from typing import Any, TextIO

from mycelium_mono.cli.target import (
    Skipped,
    Target,
    UsageError,
    being_imported,
    find_target,
    find_targets,
    use_color,
)
from mycelium_mono.routing.errors import (
    Diagnostic,
    RoutingError,
    Span,
    import_failure_note,
    render_diagnostic,
    shown_path,
)
from mycelium_mono.routing.generate import CallNote
from mycelium_mono.routing.parse import parse_module
from mycelium_mono.routing.pipeline import rewrite_module
from mycelium_mono.routing.resolve import StaticScope, Unresolved

__all__ = ["CheckResult", "check_target", "import_diagnostic", "run_check", "run_show",
           "syntax_diagnostic"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one routing module."""

    target: Target
    diagnostics: tuple[Diagnostic, ...]
    source_lines: tuple[str, ...]
    buses: int
    """How many ``@routing_config`` classes the module defines (whether or not they compile)."""


def check_target(target: Target) -> CheckResult:
    """Run the hook's rewrite on ``target`` and collect its errors (never raises for them)."""
    lines = tuple(target.text.splitlines())
    try:
        tree = ast.parse(target.text, target.display)
    except SyntaxError as exc:
        return CheckResult(target, (_syntax_diagnostic(target, exc),), lines, 0)
    count = len(parse_module(tree, target.display).classes)
    try:
        with being_imported(target.module_name, target.filename):
            try:
                rewrite_module(target.source, target.display, target.module_name)
            except RoutingError as exc:
                # Every mistake at once: an unused import that fails was reported only once
                # the table itself was clean, so fixing an E0001 revealed an E0012 next run.
                found = _with_unimportable(exc.diagnostics, _unimportable_names(target, tree))
                return CheckResult(target, found, lines, count)
            unimportable = _unimportable_names(target, tree)
    except SyntaxError as exc:
        if exc.filename and os.path.abspath(exc.filename) != os.path.abspath(target.filename):
            # A handler or message module that does not parse: its import failed (E0012),
            # at the routing module's import line; the note shows the file and line.
            return CheckResult(target, (import_diagnostic(target, tree, exc),), lines, count)
        return CheckResult(target, (_syntax_diagnostic(target, exc),), lines, count)
    except Exception as exc:  # a handler module that raises on import
        return CheckResult(target, (import_diagnostic(target, tree, exc),), lines, count)
    return CheckResult(target, unimportable, lines, count)


def _with_unimportable(diagnostics: tuple[Diagnostic, ...],
                       unimportable: tuple[Diagnostic, ...]) -> tuple[Diagnostic, ...]:
    """The table's errors and the failing imports, each once (a failing import the table uses
    is already among the table's errors, at the name's use: the same message), in file order."""
    seen = {(d.code, d.message) for d in diagnostics}
    extra = [d for d in unimportable if (d.code, d.message) not in seen]
    if not extra:
        return diagnostics
    merged = [*diagnostics, *extra]
    return tuple(sorted(merged, key=lambda d: (d.span.lineno, d.span.col_offset)))


def _unimportable_names(target: Target, tree: ast.Module) -> tuple[Diagnostic, ...]:
    """The module's own top-level imports that fail, used by a routing table or not.

    The rewrite looks up only the names the tables use, so `from app.services import Audit,
    Typo` with Typo unused passed `check` ("1 routing class ok") and then failed at every
    import with ImportError. Guarded imports (``try``, ``if``) are Python's business."""
    found: list[Diagnostic] = []
    for node in tree.body:
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        scope = StaticScope(tree, target.module_name, target.display,
                            before_line=(node.end_lineno or node.lineno) + 1, text=target.text)
        for alias in node.names:
            if alias.name == "*":
                continue
            if isinstance(node, ast.Import):
                symbol = _import_module(alias.name)
            else:
                symbol = scope.resolve(alias.asname or alias.name)
            if isinstance(symbol, Unresolved):
                found.append(Diagnostic(symbol.code, symbol.reason, target.display,
                                        Span.of(alias), help=symbol.help, note=symbol.note))
    return tuple(found)


def _import_module(name: str) -> object:
    """``import a.b.c`` as Python runs it (every package on the way), or why it fails."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        return Unresolved(f"cannot import {name!r}: {exc}",
                          "check the module name and that its package is importable",
                          code="E0012", note=import_failure_note(exc))


def _syntax_diagnostic(target: Target, exc: SyntaxError) -> Diagnostic:
    return syntax_diagnostic(exc, target.display)


def syntax_diagnostic(exc: SyntaxError, filename: str) -> Diagnostic:
    """``exc`` as a compiler-style diagnostic of ``filename`` (the file it is about)."""
    line = exc.lineno or 1
    col = max(0, (exc.offset or 1) - 1)
    same_line = exc.end_lineno in (None, line)
    end = max(col + 1, (exc.end_offset or col + 2) - 1) if same_line else col + 1
    return Diagnostic("syntax", f"invalid Python syntax: {exc.msg}", filename,
                      Span(line, col, line, end),
                      help="fix the syntax first: routing is checked on a module that parses")


def import_diagnostic(target: Target, tree: ast.Module, exc: Exception) -> Diagnostic:
    frames = traceback.extract_tb(exc.__traceback__)
    note = import_failure_note(exc)
    if isinstance(exc, SyntaxError) and exc.filename:
        # The file that does not parse is no frame of the traceback: point at it here.
        frames.append(traceback.FrameSummary(exc.filename, exc.lineno or 1, "<module>"))
        where = f'  File "{shown_path(exc.filename)}", line {exc.lineno}'
        text = (exc.text or "").strip()
        note = "the import failed here:\n" + where + (f"\n    {text}" if text else "")
    first, *rest = str(exc).splitlines() or [""]
    # The exception's own `help:` line (ours have one) replaces the generic one, not adds to it.
    own_help = next((line[len("help:"):].strip() for line in rest if line.startswith("help:")),
                    None)
    return Diagnostic("E0012", f"importing a module named by the routing table raised "
                      f"{type(exc).__name__}: {first}", target.display,
                      _import_span(tree, frames), note=note,
                      help=own_help or "the handler and message modules must import cleanly "
                      "on their own")


def _import_span(tree: ast.Module, frames: list[traceback.FrameSummary]) -> Span:
    """The routing module's import statement that led to the failing file, else line 1."""
    failing = {os.path.abspath(f.filename) for f in frames}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import) and _imports_any(node, failing):
            return Span.of(node)
    return Span(1, 0, 1, 1)


def _imports_any(node: ast.Import | ast.ImportFrom, files: set[str]) -> bool:
    names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    for name in filter(None, names):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) or _spec_origin(name)
        if path is not None and os.path.abspath(path) in files:
            return True
    return False


def _spec_origin(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # the package around it failed too: not this import, then
        return None
    return spec.origin if spec is not None else None


def run_check(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Exit status 1 if any module has a routing error, else 0."""
    found = find_targets(args.targets)
    groups = _by_package(found.targets)
    if len(groups) == 1:
        results = [check_target(target) for target in found.targets]
    else:
        results = [result for group in groups for result in _check_in_child(group)]
    errors = sum(len(r.diagnostics) for r in results)
    if args.format == "json":
        json.dump(_json_report(results, found.skipped), out, indent=2)
        out.write("\n")
    else:
        _print_text(results, out, color=use_color(out))
        _print_skipped(found.skipped, out)
    return 1 if errors else 0


def _by_package(targets: tuple[Target, ...]) -> list[list[Target]]:
    """The targets grouped by top-level package (and the directory that package is in)."""
    groups: dict[tuple[str, str], list[Target]] = {}
    for target in targets:
        groups.setdefault((_package_root(target), target.top_package), []).append(target)
    return list(groups.values())


def _package_root(target: Target) -> str:
    directory = os.path.dirname(target.filename)
    levels = target.module_name.count(".") + (os.path.basename(target.filename) == "__init__.py")
    for _ in range(levels):
        directory = os.path.dirname(directory)
    return directory


def _check_in_child(group: list[Target]) -> list[CheckResult]:
    """``check --format json`` on one package's files, in a fresh interpreter."""
    command = [sys.executable, "-m", "mycelium_mono.cli", "check", "--format", "json",
               *(target.filename for target in group)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise UsageError(f"checking {group[0].top_package} in its own process failed "
                         f"(exit {done.returncode}):\n{done.stderr.strip()}")
    files = json.loads(done.stdout)["files"]
    by_path = {target.filename: target for target in group}
    return [_result_from_json(by_path[os.path.abspath(f["path"])], f) for f in files]


def _result_from_json(target: Target, data: dict[str, Any]) -> CheckResult:
    diagnostics = tuple(
        Diagnostic(d["code"], d["message"], d["path"],
                   Span(d["line"], d["column"] - 1, d["end_line"], d["end_column"] - 1),
                   help=d["help"], note=d["note"])
        for d in data["diagnostics"]
    )
    return CheckResult(target, diagnostics, tuple(target.text.splitlines()),
                       data["routing_classes"])


def _print_skipped(skipped: tuple[Skipped, ...], out: TextIO) -> None:
    for item in skipped:
        out.write(f"note: skipped {shown_path(item.path)}{os.sep}: {item.reason}\n")


def _print_text(results: list[CheckResult], out: TextIO, *, color: bool) -> None:
    for result in results:
        for diag in result.diagnostics:
            out.write(render_diagnostic(diag, result.source_lines, color=color) + "\n\n")
    errors = sum(len(r.diagnostics) for r in results)
    files = len(results)
    if errors:
        failing = sum(1 for r in results if r.diagnostics)
        out.write(f"error: {errors} routing error{_s(errors)} in {failing} of {files} "
                  f"file{_s(files)}\n")
        return
    for result in results:
        found = (f"{result.buses} routing class{'es' if result.buses != 1 else ''} ok"
                 if result.buses else "no @routing_config class")
        out.write(f"{result.target.display}: {found}\n")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _json_report(results: list[CheckResult], skipped: tuple[Skipped, ...]) -> dict[str, Any]:
    return {
        "ok": not any(r.diagnostics for r in results),
        "error_count": sum(len(r.diagnostics) for r in results),
        "skipped": [{"path": shown_path(s.path), "reason": s.reason} for s in skipped],
        "files": [
            {
                "path": r.target.display,
                "module": r.target.module_name,
                "routing_classes": r.buses,
                "diagnostics": [_json_diagnostic(d) for d in r.diagnostics],
            }
            for r in results
        ],
    }


def _json_diagnostic(diag: Diagnostic) -> dict[str, Any]:
    return {
        "code": diag.code,
        "message": diag.message,
        "path": diag.filename,
        "line": diag.span.lineno,
        "column": diag.span.col_offset + 1,
        "end_line": diag.span.end_lineno,
        "end_column": diag.span.end_col_offset + 1,
        "help": diag.help,
        "note": diag.note,
    }


def run_show(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Print the generated classes (or the whole rewritten module) and the call notes."""
    target = find_target(args.module)
    try:
        # As `check` reads it: the routing module in sys.modules while its handler modules
        # import (show reported a circular import check did not), and the path as check
        # prints it (show printed the absolute path for the same error).
        with being_imported(target.module_name, target.filename):
            result = rewrite_module(target.source, target.display, target.module_name)
    except RoutingError as exc:
        sys.stderr.write(exc.render(color=use_color(sys.stderr)) + "\n")
        return 1
    except SyntaxError:
        raise  # a module that does not parse: main() renders it compiler style
    except Exception as exc:
        # A handler or message module that raises on import: E0012, as `check` reports it
        # (it used to end `show` in a traceback).
        diag = import_diagnostic(target, ast.parse(target.text, target.display), exc)
        sys.stderr.write(render_diagnostic(diag, target.text.splitlines(),
                                           color=use_color(sys.stderr)) + "\n")
        return 1
    if not result.generated_source:
        raise UsageError(f"{target.display}: no @routing_config class, nothing is generated\n"
                         "help: `show` takes a routing module (one with a @routing_config class)")
    out.write(f"# Generated by the mycelium-mono import hook from {target.display}\n")
    if args.whole_module:
        out.write(ast.unparse(result.tree) + "\n")
    else:
        out.write(result.generated_source)
    out.write(_format_notes(result.notes))
    return 0


def _format_notes(notes: tuple[CallNote, ...]) -> str:
    if not notes:
        return ""
    lines = ["", "# How each handler is called:"]
    width = max(len(f"{n.emit} → {n.handler}.{n.method}") for n in notes)
    for note in notes:
        call = f"{note.emit} → {note.handler}.{note.method}"
        lines.append(f"#   {call:<{width}}  {note.mode:<7}  ({note.reason})")
    return "\n".join(lines) + "\n"
