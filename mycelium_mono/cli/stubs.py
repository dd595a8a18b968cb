"""``mycelium-mono stubs``: write ``.pyi`` files for routing modules."""

from __future__ import annotations

import argparse
import ast
import sys
from typing import TextIO

from mycelium_mono.cli.target import find_target, resolved_tables, use_color
from mycelium_mono.routing.errors import render_diagnostic
from mycelium_mono.stubs import module_stub, stub_path, write_stub

__all__ = ["run_stubs"]


def run_stubs(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Exit status 1 if a module has routing errors (its stub is not written), else 0."""
    status = 0
    for name in args.modules:
        target = find_target(name)
        tables, problems = resolved_tables(target)
        if problems:
            lines = target.text.splitlines()
            for diag in problems:
                sys.stderr.write(render_diagnostic(diag, lines, color=use_color(sys.stderr))
                                 + "\n\n")
            sys.stderr.write(f"error: {target.filename}: no stub written: fix the routing "
                             "errors first\n")
            status = 1
            continue
        text = module_stub(ast.parse(target.text, target.filename), tables)
        path = stub_path(target.filename, target.module_name, args.output)
        write_stub(path, text)
        buses = ", ".join(t.name for t in tables) or "no routing class"
        out.write(f"wrote {path} ({buses})\n")
    return status
