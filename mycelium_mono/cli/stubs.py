"""``mycelium-mono stubs``: write ``.pyi`` files for routing modules."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
from typing import TextIO

from mycelium_mono.cli.target import (
    Target,
    UsageError,
    find_target,
    resolved_tables,
    use_color,
)
from mycelium_mono.routing.errors import render_diagnostic
from mycelium_mono.routing.resolve import StaticScope
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
        if not tables:
            # A stub beside a module with no bus adds nothing and shadows the module for the
            # type checker, which then reads only the stub.
            raise UsageError(f"{target.display}: no @routing_config class, no stub written\n"
                             "help: `stubs` takes a routing module (one with a "
                             "@routing_config class)")
        tree = ast.parse(target.text, target.filename)
        scope = StaticScope(tree, target.module_name, target.filename, 0, text=target.text)
        text = module_stub(tree, tables, scope=scope)
        path = stub_path(target.filename, target.module_name, args.output)
        write_stub(path, text)
        buses = ", ".join(t.name for t in tables)
        out.write(f"wrote {path} ({buses})\n")
        if args.output is not None:
            for parent in _write_parent_stubs(target, args.output):
                out.write(f"wrote {parent} (parent package)\n")
    return status


def _write_parent_stubs(target: Target, output: str) -> list[str]:
    """Stubs of the parent packages' ``__init__.py`` under ``output``.

    A type checker resolves ``pkg.routing`` in the output directory only if ``pkg`` itself is a
    regular package there (a bare directory is a namespace package, which loses to the real
    ``pkg``); the parent stubs are complete stubs of the real ``__init__.py`` files, so nothing
    they define disappears.
    """
    written = []
    parts = target.module_name.split(".")
    directory = os.path.dirname(target.filename)
    if os.path.basename(target.filename) == "__init__.py":
        parts, directory = parts[:-1], os.path.dirname(directory)
    for depth in range(len(parts) - 1, 0, -1):
        init = os.path.join(directory, "__init__.py")
        name = ".".join(parts[:depth])
        with open(init, "rb") as file:
            source = importlib.util.decode_source(file.read())
        path = stub_path(init, name, output)
        tree = ast.parse(source, init)
        write_stub(path, module_stub(tree, [], scope=StaticScope(tree, name, init, 0,
                                                                 text=source)))
        written.append(path)
        directory = os.path.dirname(directory)
    return written
