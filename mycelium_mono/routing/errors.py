"""Routing mistakes as compiler errors: where, what, and what to do.

A :class:`Diagnostic` is one error with its source span; :class:`RoutingError` carries every
diagnostic found in a module at once (a person fixing a routing table should not have to
re-run the import once per typo). ``RoutingError`` subclasses :class:`SyntaxError`, so the
standard traceback printer already shows the file, the line and a caret under the span.
"""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Diagnostic",
    "RoutingError",
    "Span",
    "import_failure_note",
    "render_diagnostic",
    "shown_path",
]


@dataclass(frozen=True)
class Span:
    """A source range; lines are 1-based, columns 0-based (as in :mod:`ast`)."""

    lineno: int
    col_offset: int
    end_lineno: int
    end_col_offset: int

    @classmethod
    def of(cls, node: object) -> Span:
        lineno = getattr(node, "lineno", 1) or 1
        col = getattr(node, "col_offset", 0) or 0
        end_lineno = getattr(node, "end_lineno", None) or lineno
        end_col = getattr(node, "end_col_offset", None)
        return cls(lineno, col, end_lineno, col + 1 if end_col is None else end_col)


UNKNOWN_SPAN = Span(1, 0, 1, 1)


@dataclass(frozen=True)
class Diagnostic:
    """One routing error: an error code (``E0001``…), a message, a span and a ``help:`` line."""

    code: str
    message: str
    filename: str
    span: Span
    help: str | None = None
    note: str | None = None

    def location(self) -> str:
        return f"{self.filename}:{self.span.lineno}:{self.span.col_offset + 1}"


def render_diagnostic(
    diag: Diagnostic, source_lines: Sequence[str] | None, *, color: bool = False
) -> str:
    """Render like a compiler: ``path:line:col: error[E0001]: …``, the line, a caret, ``help:``."""
    red, blue, bold, reset = ("\x1b[31m", "\x1b[34m", "\x1b[1m", "\x1b[0m") if color else ("",) * 4
    out = [f"{bold}{diag.location()}: {red}error[{diag.code}]{reset}{bold}: {diag.message}{reset}"]
    line = _source_line(source_lines, diag.span.lineno)
    if line is not None:
        gutter = str(diag.span.lineno)
        pad = " " * len(gutter)
        start = diag.span.col_offset
        end = diag.span.end_col_offset if diag.span.end_lineno == diag.span.lineno else len(line)
        width = max(1, end - start)
        out.append(f"{blue}{pad} |{reset}")
        out.append(f"{blue}{gutter} |{reset} {line}")
        out.append(f"{blue}{pad} |{reset} {' ' * start}{red}{'^' * width}{reset}")
    if diag.note:
        out.append(f"{blue}note{reset}: {diag.note}")
    if diag.help:
        out.append(f"{bold}help{reset}: {diag.help}")
    return "\n".join(out)


_LIBRARY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep


def shown_path(filename: str) -> str:
    """A path as a diagnostic shows it: relative to the current directory when inside it."""
    relative = os.path.relpath(filename)
    return filename if relative.startswith(os.pardir) else relative


def import_failure_note(exc: BaseException) -> str | None:
    """Where an import failed, as a traceback shows it, without importlib's and our frames.

    E0012 used to say only "cannot import 'app.handlers': No module named 'x'", hiding which
    line of handlers.py failed (issue 15).
    """
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith(("<frozen", _LIBRARY_DIR, _IMPORTLIB_DIR))]
    if not frames:
        return None
    lines = ["the import failed here (most recent call last):"]
    for frame in frames[-3:]:
        lines.append(f'  File "{shown_path(frame.filename)}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    return "\n".join(lines)


def _source_line(source_lines: Sequence[str] | None, lineno: int) -> str | None:
    if not source_lines or not 1 <= lineno <= len(source_lines):
        return None
    return source_lines[lineno - 1].rstrip("\r\n")


class RoutingError(SyntaxError):
    """Every routing mistake in one module, reported together at import time.

    ``filename``, ``lineno``, ``offset`` (1-based), ``end_lineno``, ``end_offset`` and ``text``
    describe the first error, as for any ``SyntaxError``; ``code`` and ``help`` too.
    ``diagnostics`` holds all of them, and ``str(error)`` renders all of them.
    """

    diagnostics: tuple[Diagnostic, ...]
    code: str
    help: str | None

    def __init__(self, diagnostics: Sequence[Diagnostic], source: str | None = None) -> None:
        if not diagnostics:
            raise ValueError("RoutingError needs at least one diagnostic")
        ordered = sorted(diagnostics, key=lambda d: (d.filename, d.span.lineno, d.span.col_offset))
        first = ordered[0]
        self.source_lines = source.splitlines() if source is not None else None
        text = _source_line(self.source_lines, first.span.lineno)
        more = len(ordered) - 1
        summary = f"[{first.code}] {first.message}" + (
            f" (and {more} more routing error{'s' if more > 1 else ''})" if more else ""
        )
        super().__init__(
            summary,
            (
                first.filename,
                first.span.lineno,
                first.span.col_offset + 1,
                text,
                first.span.end_lineno,
                first.span.end_col_offset + 1,
            ),
        )
        self.diagnostics = tuple(ordered)
        self.code = first.code
        self.help = first.help
        # Notes are printed by the standard traceback after the caret: the help line for the
        # first error, then every other error in full.
        if first.note:
            self.add_note(f"note: {first.note}")
        if first.help:
            self.add_note(f"help: {first.help}")
        for diag in ordered[1:]:
            self.add_note(render_diagnostic(diag, self.source_lines))

    def render(self, *, color: bool = False) -> str:
        """All diagnostics, compiler style, separated by blank lines."""
        return "\n\n".join(
            render_diagnostic(d, self.source_lines, color=color) for d in self.diagnostics
        )

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self) -> tuple[object, ...]:
        source = "\n".join(self.source_lines) if self.source_lines is not None else None
        return (type(self), (self.diagnostics, source))
