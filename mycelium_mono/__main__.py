"""``python -m mycelium_mono run``: run a script or module with the import hook installed.

::

    python -m mycelium_mono run [--packages a,b] script.py [args...]
    python -m mycelium_mono run [--packages a,b] -m package.module [args...]

The packages whose routing modules are rewritten come from ``--packages``, else the
``MYCELIUM_PACKAGES`` environment variable (comma-separated), else a default: for ``-m`` the
module's top-level package, or for a top-level module that is not a package (``-m main``) the
packages beside its file, as for a script; for a script, the top-level package containing it,
or else every package directory next to it.

``multiprocessing`` children get the hook too. ``fork`` children inherit it. ``spawn`` and
``forkserver`` children start a fresh interpreter whose first step is re-running the parent's
main module (as ``__mp_main__``); ``run`` points that step at this file, which installs the hook
from ``MYCELIUM_PACKAGES`` and then runs the real main module exactly as ``multiprocessing``
would have. Plain subprocesses get the hook by being started with ``python -m mycelium_mono run``
themselves (``MYCELIUM_PACKAGES`` is already in their environment).

The script itself runs as ``__main__`` from its file, not through the import system, so a
``@routing_config`` class written in the script is built at run time (the same bus, uncached);
the hook rewrites routing modules the script imports.

Any other command (``check``, ``show``, ``doctor``, ...), ``--help`` and no command at all are
passed to ``mycelium-mono``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import runpy
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PACKAGES_ENV = "MYCELIUM_PACKAGES"
_MAIN_ENV = "MYCELIUM_RUN_MAIN"
"""``path:<script>`` or ``module:<name>``: what a spawned child must run as ``__mp_main__``."""

_BOOTSTRAP = os.path.abspath(__file__)
"""This file; spawned children run it first (``__file__`` is overwritten there, see the end)."""

USAGE = """\
usage: python -m mycelium_mono run [--packages PKG[,PKG...]] script.py [args...]
       python -m mycelium_mono run [--packages PKG[,PKG...]] -m module [args...]"""

RUN_HELP = f"""\
Run a script or module with the import hook installed (the same as `mycelium-mono run`).

options (before the target; everything after it belongs to the target):
  --packages PKG[,PKG...]  the packages whose routing modules the hook rewrites
                           (repeatable)
  -m MODULE                run MODULE as __main__, as `python -m MODULE` would

Which packages are rewritten: --packages, else the {PACKAGES_ENV} environment variable
(comma-separated, e.g. {PACKAGES_ENV}=myapp,shared), else a default:
  -m pkg.mod         the top-level package, pkg
  -m main            (a module, not a package) the packages beside main.py
  script.py          the top-level package containing it, or every package beside it
multiprocessing children get the hook too; {PACKAGES_ENV} is set for subprocesses."""


class UsageError(Exception):
    """The command line cannot be understood; the message says what to type instead."""


class HelpRequested(Exception):
    """``run --help``: the message is the help text, printed to stdout, exit status 0."""


@dataclass(frozen=True)
class RunRequest:
    """What ``run`` was asked to do."""

    target: str
    is_module: bool
    args: tuple[str, ...]
    packages: tuple[str, ...] | None
    """From ``--packages``; ``None`` means: environment variable, then the default."""


def parse_run_args(argv: Sequence[str]) -> RunRequest:
    """Parse the arguments after ``run``; everything after the target belongs to the target."""
    packages: list[str] | None = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in {"-h", "--help"}:
            raise HelpRequested(RUN_HELP)
        if arg == "--packages" or arg.startswith("--packages="):
            value, index = _option_value(argv, index, "--packages")
            packages = (packages or []) + _split_names(value)
        elif arg == "-m":
            module, index = _option_value(argv, index, "-m")
            return RunRequest(module, True, tuple(argv[index:]), _frozen(packages))
        elif arg.startswith("-"):
            raise UsageError(f"run: unknown option {arg!r}\n{USAGE}")
        else:
            return RunRequest(arg, False, tuple(argv[index + 1 :]), _frozen(packages))
    raise UsageError(f"run: nothing to run\n{USAGE}")


def _option_value(argv: Sequence[str], index: int, name: str) -> tuple[str, int]:
    arg = argv[index]
    if arg.startswith(f"{name}="):
        return arg.partition("=")[2], index + 1
    if index + 1 >= len(argv):
        raise UsageError(f"run: {name} needs a value\n{USAGE}")
    return argv[index + 1], index + 2


def _split_names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _frozen(packages: list[str] | None) -> tuple[str, ...] | None:
    return None if packages is None else tuple(packages)


def resolve_packages(request: RunRequest, environ: Mapping[str, str]) -> list[str]:
    """``--packages``, else ``MYCELIUM_PACKAGES``, else the default for the target."""
    if request.packages:
        return list(request.packages)
    from_env = _split_names(environ.get(PACKAGES_ENV, ""))
    if from_env:
        return from_env
    if request.is_module:
        top = request.target.partition(".")[0]
        beside = _top_level_module_file(top)
        if beside is None:
            return [top]
        # Issue 15: `-m main` used to hook the package "main", i.e. nothing, silently.
        found = default_script_packages(beside)
    else:
        found = default_script_packages(request.target)
    if not found:
        raise UsageError(
            f"run: found no package to rewrite for {request.target}\n"
            "help: say which packages hold routing modules: --packages myapp "
            f"(or set {PACKAGES_ENV}=myapp)"
        )
    return found


def _top_level_module_file(name: str) -> str | None:
    """The file of ``name`` if it is a plain top-level module (not a package), else ``None``."""
    spec = _find_module(name)
    if spec is None or getattr(spec, "submodule_search_locations", None) is not None:
        return None
    origin = getattr(spec, "origin", None)
    return origin if isinstance(origin, str) and os.path.isfile(origin) else None


def check_target(request: RunRequest) -> None:
    """A one-line usage error for a target that does not exist (not a runpy traceback)."""
    if request.is_module:
        spec = _find_module(request.target)
        if spec is None:
            # What `python -m nosuch` says, instead of runpy's traceback.
            raise UsageError(f"no module named {request.target!r}")
        if getattr(spec, "submodule_search_locations", None) is not None and _find_module(
                f"{request.target}.__main__") is None:
            raise UsageError(f"{request.target!r} is a package and has no __main__.py\n"
                             f"help: run one of its modules (-m {request.target}.main), or "
                             f"add {request.target.replace('.', '/')}/__main__.py")
    elif not os.path.isfile(request.target):
        where = "" if os.path.isabs(request.target) else f" (in {os.getcwd()})"
        raise UsageError(f"cannot run {request.target}: no such file{where}")


def default_script_packages(script: str) -> list[str]:
    """The top-level package containing ``script``, or every package directory beside it."""
    directory = os.path.dirname(os.path.abspath(script))
    if _is_package(directory):
        while _is_package(os.path.dirname(directory)):
            directory = os.path.dirname(directory)
        return [os.path.basename(directory)]
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    return [
        name
        for name in entries
        if name.isidentifier() and _is_package(os.path.join(directory, name))
    ]


def _is_package(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, "__init__.py"))


def run(request: RunRequest, packages: Sequence[str]) -> None:
    """Install the hook, prepare `multiprocessing` children, run the target as ``__main__``."""
    from mycelium_mono.routing.hook import install_import_hook

    os.environ[PACKAGES_ENV] = ",".join(packages)
    os.environ[_MAIN_ENV] = f"{'module' if request.is_module else 'path'}:{request.target}"
    install_import_hook(packages)
    _point_spawned_children_here()
    if request.is_module:
        _warn_missing_packages(packages)
        sys.argv = [request.target, *request.args]  # run_module puts the file path in argv[0]
        runpy.run_module(request.target, run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(request.target)
        sys.argv = [request.target, *request.args]
        sys.path[0] = os.path.dirname(script)  # what `python script.py` would have put there
        _warn_missing_packages(packages)
        runpy.run_path(script, run_name="__main__")


def _warn_missing_packages(packages: Sequence[str]) -> None:
    """``--packages wrd`` (for ward) rewrote nothing and said nothing: the program ran on the
    runtime-built buses. One warning per name no import could find from here."""
    for name in packages:
        if name not in sys.modules and _find_module(name) is None:
            print(f"warning: run: no package named {name!r} is importable here, so the hook "
                  f"rewrites nothing for it (from --packages or {PACKAGES_ENV}: a typo?)",
                  file=sys.stderr)


def _find_module(name: str) -> object | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _point_spawned_children_here() -> None:
    import multiprocessing.spawn as spawn

    original = spawn.get_preparation_data
    if getattr(original, "_mycelium", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        # The child re-runs this file as __mp_main__ (see _spawned_child_main) instead of the
        # real main module, which that function then runs itself, with the hook installed.
        data.pop("init_main_from_name", None)
        data["init_main_from_path"] = _BOOTSTRAP
        return data

    get_preparation_data._mycelium = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


def _spawned_child_main() -> dict[str, Any]:
    """In a spawned child: install the hook, then run the parent's main as ``__mp_main__``."""
    from mycelium_mono.routing.hook import install_import_hook

    packages = _split_names(os.environ.get(PACKAGES_ENV, ""))
    if packages:
        install_import_hook(packages)
    _point_spawned_children_here()  # grandchildren too
    kind, _, target = os.environ.get(_MAIN_ENV, "").partition(":")
    if kind == "path":
        return runpy.run_path(target, run_name="__mp_main__")
    if kind == "module" and target != "__main__" and not target.endswith(".__main__"):
        # multiprocessing itself skips re-running a package's __main__: it must not start again.
        return runpy.run_module(target, run_name="__mp_main__", alter_sys=True)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mycelium_mono``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["run"]:
        # Bare, --help and every other command: what `mycelium-mono` says and does, so the
        # two spellings are the same command (bare `python -m mycelium_mono` used to print
        # only run's usage, hiding check, show, doctor, stubs, cache and bench).
        return _other_command(args)
    try:
        request = parse_run_args(args[1:])
        check_target(request)
        packages = resolve_packages(request, os.environ)
        run(request, packages)
    except HelpRequested as text:
        print(text)
        return 0
    except SyntaxError as exc:
        if not _is_routing_error(exc):
            raise
        # Python 3.11 and 3.12 print an uncaught SyntaxError *subclass* with a one-character
        # caret (their C printer reads the end of the span only for SyntaxError itself); the
        # traceback module underlines the whole name, as `check` does (issue 15).
        traceback.print_exception(exc)
        return 1
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _is_routing_error(exc: SyntaxError) -> bool:
    from mycelium_mono.routing.errors import RoutingError

    return isinstance(exc, RoutingError)


def _other_command(args: list[str]) -> int:
    try:
        cli = importlib.import_module("mycelium_mono.cli")
    except ImportError:
        print(f"error: unknown command {args[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    sys.argv = ["mycelium-mono", *args]
    result = cli.main()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
elif __name__ == "__mp_main__":
    globals().update(_spawned_child_main())
