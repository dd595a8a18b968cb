"""The ``mycelium-mono`` command: check, show, doctor, stubs, cache, bench, run.

Each subcommand lives in its own module and is a function ``run_<name>(args) -> exit status``.
Exit status: 0 all good, 1 the command found problems (routing errors, failed doctor checks),
2 a usage error (a module that cannot be found, a bad option).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import TypeAlias

from mycelium_mono.cli.bench import run_bench
from mycelium_mono.cli.cache import run_cache
from mycelium_mono.cli.check import run_check, run_show, syntax_diagnostic
from mycelium_mono.cli.doctor import run_doctor
from mycelium_mono.cli.run import run_run
from mycelium_mono.cli.stubs import run_stubs
from mycelium_mono.cli.target import UsageError, use_color
from mycelium_mono.routing.errors import RoutingError, render_diagnostic, shown_path

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]
# What add_subparsers returns; a string because the class is not subscriptable at run time.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="mycelium-mono",
        description="Check, explain and benchmark mycelium-mono routing modules.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_check(commands)
    _add_show(commands)
    _add_doctor(commands)
    _add_stubs(commands)
    _add_cache(commands)
    _add_bench(commands)
    _add_run(commands)
    return parser


def _add_check(commands: Subcommands) -> None:
    sub = commands.add_parser("check", help="report every routing error, compiler style")
    sub.add_argument("targets", nargs="+", metavar="PATH|MODULE",
                     help="a routing module's file or dotted name, or a directory: every .py "
                     "file under it that mentions routing_config")
    sub.add_argument("--format", choices=("text", "json"), default="text")
    sub.set_defaults(handler=run_check)


def _add_show(commands: Subcommands) -> None:
    sub = commands.add_parser("show",
                              help="print the generated bus code and how handlers are called")
    sub.add_argument("module", metavar="PATH|MODULE")
    sub.add_argument("--whole-module", action="store_true",
                     help="print the whole rewritten module, not only the generated classes")
    sub.set_defaults(handler=run_show)


def _add_doctor(commands: Subcommands) -> None:
    sub = commands.add_parser("doctor", help="why a handler is not called, why it is not faster")
    sub.add_argument("module", metavar="PATH|MODULE")
    sub.add_argument("--no-hook", action="store_true",
                     help="import the module without the import hook (the run-time build path)")
    sub.add_argument("--factory", metavar="MODULE:FUNCTION", default=None,
                     help="a function returning a constructed bus, for the emit timing")
    sub.add_argument("--no-timing", action="store_true",
                     help="skip the quick emit timing, which calls every routed handler "
                     "thousands of times with all-zero messages")
    sub.add_argument("--format", choices=("text", "json"), default="text")
    sub.set_defaults(handler=run_doctor)


def _add_stubs(commands: Subcommands) -> None:
    sub = commands.add_parser("stubs", help="write .pyi stubs so type checkers see generated buses")
    sub.add_argument("modules", nargs="+", metavar="PATH|MODULE")
    sub.add_argument("-o", "--output", metavar="DIR", default=None,
                     help="write DIR/<package path>/<module>.pyi (add DIR to mypy_path) "
                     "instead of next to the module")
    sub.set_defaults(handler=run_stubs)


def _add_cache(commands: Subcommands) -> None:
    sub = commands.add_parser("cache", help="list or delete the import hook's bytecode cache")
    sub.add_argument("action", choices=("info", "clean"))
    sub.add_argument("roots", nargs="*", metavar="DIR", default=None,
                     help="directories to search (default: the current directory)")
    sub.add_argument("-n", "--dry-run", action="store_true",
                     help="clean: list what would be deleted, delete nothing")
    sub.set_defaults(handler=run_cache)


def _add_bench(commands: Subcommands) -> None:
    sub = commands.add_parser("bench", help="ns per emit_*, against a dict-and-loop dispatcher")
    sub.add_argument("module", metavar="PATH|MODULE")
    sub.add_argument("--factory", metavar="MODULE:FUNCTION", default=None,
                     help="a function returning a constructed bus (default: construct every "
                     "service with no arguments)")
    sub.add_argument("--number", type=_positive_int, default=20_000,
                     help="emits per timing run")
    sub.add_argument("--repeat", type=_positive_int, default=5,
                     help="timing runs; the best is reported")
    sub.add_argument("--no-hook", action="store_true",
                     help="import the module without the import hook")
    sub.set_defaults(handler=run_bench)


def _positive_int(text: str) -> int:
    """``--number 0`` timed nothing and divided by zero; ``-5`` raised a traceback."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _add_run(commands: Subcommands) -> None:
    from mycelium_mono.__main__ import RUN_HELP

    sub = commands.add_parser(
        "run", help="run a script or -m module under the import hook",
        usage="mycelium-mono run [--packages PKG[,PKG...]] script.py | -m module [args...]",
        description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("rest", nargs=argparse.REMAINDER, metavar="script.py | -m module [args]")
    sub.set_defaults(handler=run_run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and argv[1:2] not in (["-h"], ["--help"]):
        # Everything after `run` belongs to the runner and the target (`-m`, `--packages`,
        # the script's own options): argparse's REMAINDER would try to parse leading options.
        argv = ["run", "--", *argv[1:]]
    if argv[:1] == ["cache"] and "--" not in argv:
        # `cache clean -n DIR`: argparse has given `roots` its (empty) share by the time it
        # meets -n, and then refuses DIR as unrecognized; the flag goes first instead.
        flags = [a for a in argv[1:] if a in ("-n", "--dry-run")]
        argv = ["cache", *flags, *[a for a in argv[1:] if a not in flags]]
    parser = build_parser()
    if not argv:
        # A bare command is a usage error, but one that shows every command and what it does
        # (argparse would only say that COMMAND is required).
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        sys.stderr.write(f"mycelium-mono {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except SyntaxError as exc:
        if args.command == "run":
            raise  # the program's own: its runner prints it as Python would, traceback and all
        # The routing module, or a module it imports, does not parse (a RoutingError is a
        # SyntaxError too): compiler style, like `check`, not a traceback.
        sys.stderr.write(_render_syntax_error(exc) + "\n")
        return EXIT_PROBLEMS
    except BrokenPipeError:
        # `mycelium-mono show ... | head`: the reader left; that is not an error.
        sys.stderr.close()
        return EXIT_OK


def _render_syntax_error(exc: SyntaxError) -> str:
    color = use_color(sys.stderr)
    if isinstance(exc, RoutingError):
        return exc.render(color=color)
    lines: list[str] = []
    if exc.filename:
        try:
            with open(exc.filename, "rb") as file:
                lines = importlib.util.decode_source(file.read()).splitlines()
        except (OSError, SyntaxError, UnicodeDecodeError):
            lines = []
    filename = shown_path(exc.filename) if exc.filename else "<unknown>"
    return render_diagnostic(syntax_diagnostic(exc, filename), lines, color=color) + "\n"
