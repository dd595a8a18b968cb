"""``mycelium-mono run script.py | -m module [args]``: the same as ``python -m mycelium_mono run``.

The hook's own runner (:func:`mycelium_mono.__main__.main`) owns what "run under the hook"
means: which packages (``--packages``, ``MYCELIUM_PACKAGES``, or the target's package), and how
spawned ``multiprocessing`` children get the hook too. This command calls it, so there is one
implementation.
"""

from __future__ import annotations

import argparse
import os
import sys

from mycelium_mono.cli.target import UsageError

__all__ = ["run_run"]


def run_run(args: argparse.Namespace) -> int:
    rest: list[str] = list(args.rest)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if not rest:
        raise UsageError("nothing to run\nhelp: mycelium-mono run script.py [args] | "
                         "mycelium-mono run -m package.module [args]")
    from mycelium_mono.__main__ import main as run_main

    # `python -m mycelium_mono run -m pkg.mod` finds pkg in the current directory because
    # `-m` puts it first on sys.path; the console script put its own bin directory there.
    sys.path[0] = os.getcwd()
    return run_main(["run", *rest])
