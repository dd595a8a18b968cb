"""``mycelium-mono run script.py | -m module [args]``: the same as ``python -m mycelium_mono run``.

The hook's own runner (:mod:`mycelium_mono.__main__`) owns what "run under the hook" means:
which packages, how spawned children get the hook too. This command replaces the process
with it, so there is one implementation, and signals and the exit status pass through
unchanged.
"""

from __future__ import annotations

import argparse
import importlib.util
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
    if importlib.util.find_spec("mycelium_mono.__main__") is None:
        raise UsageError("this installation has no `python -m mycelium_mono run`\n"
                         "help: install the hook yourself with "
                         "mycelium_mono.routing.hook.install_import_hook([...])")
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, "-m", "mycelium_mono", "run", *rest]
    os.execv(sys.executable, command)
    return 0  # not reached: execv replaced the process
