"""pytest plugin: the import hook for the test session, and fixtures for testing a bus.

Set the packages whose routing modules the hook rewrites in the ini file::

    [tool.pytest.ini_options]
    mycelium_packages = ["myapp"]

The hook is installed before pytest imports any conftest or test module (like pytest's own
assertion rewriting) and removed when the session ends. Fixtures:

- ``monolith_hook("pkg", ...)`` installs the hook for more packages in one test; at teardown it
  uninstalls it and forgets the modules of those packages, so the next test imports them fresh.
- ``routing_module(source, modules={...})`` writes a routing module (and any handler or message
  modules next to it) into a temporary package, imports it under the hook and returns it.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # Imported when first used: a session that names no packages and uses no fixture never
    # loads the rewrite pipeline.
    from mycelium_mono.routing.hook import ImportHookManager
    from mycelium_mono.routing.pipeline import RewriteOptions

__all__ = [
    "MonolithHook",
    "RoutingModuleFactory",
    "forget_modules",
    "monolith_hook",
    "routing_module",
    "session_hook",
]

_SESSION_HOOK = pytest.StashKey["ImportHookManager"]()

MonolithHook = Callable[..., "ImportHookManager"]
"""``monolith_hook(*packages, options=None) -> ImportHookManager``."""

RoutingModuleFactory = Callable[..., ModuleType]
"""``routing_module(source, *, modules=None, name="routing", package=..., options=None)``."""

DEFAULT_TEST_PACKAGE = "mycelium_testpkg"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "mycelium_packages",
        "packages whose routing modules the mycelium-mono import hook rewrites",
        type="linelist",
        default=[],
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # The earliest moment a plugin can act: before conftest.py files (and the test modules they
    # import) are imported. Only setuptools plugins get this call; see pytest_configure.
    _install_session_hook(early_config)


def pytest_configure(config: pytest.Config) -> None:
    # A plugin loaded late (`-p`, `pytest_plugins`) missed pytest_load_initial_conftests; the
    # test modules are still to come, so installing here is still early enough for them.
    _install_session_hook(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    manager = config.stash.get(_SESSION_HOOK, None)
    if manager is not None:
        manager.uninstall()
        del config.stash[_SESSION_HOOK]


def pytest_collection_finish(session: pytest.Session) -> None:
    # Once every conftest and test module is imported (sys.path as the tests see it): a
    # package the ini file names that cannot be found is most likely a typo, and with it the
    # whole session silently tested the runtime-built buses instead of the rewritten ones.
    if session_hook(session.config) is None:
        return
    import importlib.util
    import warnings

    for name in session.config.getini("mycelium_packages"):
        if not name or name in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            warnings.warn(pytest.PytestConfigWarning(
                f"mycelium_packages names {name!r}, which is not importable here: the import "
                f"hook rewrites nothing for it (a typo? check the ini file's "
                "mycelium_packages)"), stacklevel=1)


def _install_session_hook(config: pytest.Config) -> None:
    if _SESSION_HOOK in config.stash:
        return
    packages = [name for name in config.getini("mycelium_packages") if name]
    if packages:
        from mycelium_mono.routing.hook import install_import_hook

        config.stash[_SESSION_HOOK] = install_import_hook(packages)


def session_hook(config: pytest.Config) -> ImportHookManager | None:
    """The hook this plugin installed for the session, if the ini file named any packages."""
    return config.stash.get(_SESSION_HOOK, None)


@pytest.fixture
def monolith_hook() -> Iterator[MonolithHook]:
    """Install the import hook for some packages during one test.

    ``monolith_hook("myapp", options=RewriteOptions(inline=False))`` returns the manager. At
    teardown every hook it installed is removed and the modules of its packages are dropped from
    ``sys.modules``, so the next test imports (and caches) them afresh.
    """
    from mycelium_mono.routing.hook import install_import_hook

    managers: list[ImportHookManager] = []

    def install(*packages: str, options: RewriteOptions | None = None) -> ImportHookManager:
        manager = install_import_hook(packages, options)
        managers.append(manager)
        return manager

    yield install
    for manager in reversed(managers):
        manager.uninstall()
        forget_modules(*manager.finder.packages)
    importlib.invalidate_caches()


@pytest.fixture
def routing_module(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    monolith_hook: MonolithHook,
) -> RoutingModuleFactory:
    """Write a routing module into a fresh package and import it under the hook.

    ``routing_module(source, modules={"handlers": "...", "messages": "..."})`` dedents every
    text, writes ``<package>/<name>.py`` and each extra module, puts the package on
    ``sys.path`` and returns the imported routing module. Extra modules import each other as
    ``from <package>.messages import ...``; the package defaults to ``mycelium_testpkg``.
    Message ``type_id``s are process-wide: give each test's messages their own.
    """

    def make(
        source: str,
        *,
        modules: Mapping[str, str] | None = None,
        name: str = "routing",
        package: str = DEFAULT_TEST_PACKAGE,
        options: RewriteOptions | None = None,
    ) -> ModuleType:
        root = tmp_path_factory.mktemp("routing_module")
        package_dir = root / package
        package_dir.mkdir()
        (package_dir / "__init__.py").write_text("")
        for module_name, text in {**(modules or {}), name: source}.items():
            (package_dir / f"{module_name}.py").write_text(textwrap.dedent(text))
        forget_modules(package)  # a previous test's package of the same name
        monkeypatch.syspath_prepend(str(root))
        monolith_hook(package, options=options)
        return importlib.import_module(f"{package}.{name}")

    return make


def forget_modules(*packages: str) -> None:
    """Drop ``packages`` and their submodules from ``sys.modules``: the next import re-runs them."""
    prefixes = tuple(f"{name}." for name in packages)
    for module_name in [m for m in sys.modules if m in packages or m.startswith(prefixes)]:
        del sys.modules[module_name]
