"""``mycelium-mono check`` and ``mycelium-mono show``: the rewrite, run without running the module.

``check`` reports every routing error of every file, compiler style (or as JSON for tools);
``show`` prints the code the import hook generates, and how each handler is called.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, TextIO

from mycelium_mono.cli.target import Target, UsageError, find_target, find_targets, use_color
from mycelium_mono.routing.errors import Diagnostic, RoutingError, Span, render_diagnostic
from mycelium_mono.routing.generate import CallNote
from mycelium_mono.routing.pipeline import RewriteResult, rewrite_module

__all__ = ["CheckResult", "check_target", "run_check", "run_show"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one routing module."""

    target: Target
    diagnostics: tuple[Diagnostic, ...]
    source_lines: tuple[str, ...]
    buses: int
    """How many ``@routing_config`` classes were generated (0 when there are errors)."""


def check_target(target: Target) -> CheckResult:
    """Run the hook's rewrite on ``target`` and collect its errors (never raises for them)."""
    lines = tuple(target.text.splitlines())
    try:
        result = rewrite_module(target.source, target.display, target.module_name)
    except RoutingError as exc:
        return CheckResult(target, exc.diagnostics, lines, 0)
    except SyntaxError as exc:
        return CheckResult(target, (_syntax_diagnostic(target, exc),), lines, 0)
    except Exception as exc:  # a handler module that raises on import
        return CheckResult(target, (_import_diagnostic(target, exc),), lines, 0)
    return CheckResult(target, (), lines, _count_routing_classes(result))


def _count_routing_classes(result: RewriteResult) -> int:
    # One generated class per routing class; the generated ones are what the rewrite spliced in.
    if not result.generated_source:
        return 0
    generated = ast.parse(result.generated_source)
    return sum(isinstance(node, ast.ClassDef) for node in generated.body)


def _syntax_diagnostic(target: Target, exc: SyntaxError) -> Diagnostic:
    line = exc.lineno or 1
    col = max(0, (exc.offset or 1) - 1)
    same_line = exc.end_lineno in (None, line)
    end = max(col + 1, (exc.end_offset or col + 2) - 1) if same_line else col + 1
    return Diagnostic("syntax", f"invalid Python syntax: {exc.msg}", target.display,
                      Span(line, col, line, end),
                      help="fix the syntax first: routing is checked on a module that parses")


def _import_diagnostic(target: Target, exc: Exception) -> Diagnostic:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    note = f"raised at {where.filename}:{where.lineno}" if where else None
    return Diagnostic("E0012", f"importing a module named by the routing table raised "
                      f"{type(exc).__name__}: {exc}", target.display, Span(1, 0, 1, 1),
                      help="the handler and message modules must import cleanly on their own",
                      note=note)


def run_check(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Exit status 1 if any module has a routing error, else 0."""
    results = [check_target(target) for target in find_targets(args.targets)]
    errors = sum(len(r.diagnostics) for r in results)
    if args.format == "json":
        json.dump(_json_report(results), out, indent=2)
        out.write("\n")
    else:
        _print_text(results, out, color=use_color(out))
    return 1 if errors else 0


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


def _json_report(results: list[CheckResult]) -> dict[str, Any]:
    return {
        "ok": not any(r.diagnostics for r in results),
        "error_count": sum(len(r.diagnostics) for r in results),
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
        result = rewrite_module(target.source, target.filename, target.module_name)
    except RoutingError as exc:
        sys.stderr.write(exc.render(color=use_color(sys.stderr)) + "\n")
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
