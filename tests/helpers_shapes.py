"""Write a small application package and import its routing module by one of the four builds.

A *build* is (path, inline): the import hook or the decorator's run-time path, with
``inline=True`` or ``inline=False`` forced on every routing class. Issue 11 is about the four
builds disagreeing with each other and with the calls a person would write by hand, so the
tests for its items and the differential property test share this one loader.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.hook import install_import_hook


@dataclass(frozen=True)
class Build:
    path: str  # "hook" or "runtime"
    inline: bool

    @property
    def name(self) -> str:
        return f"{self.path}-{'inline' if self.inline else 'call'}"


BUILDS = tuple(Build(path, inline) for path in ("hook", "runtime") for inline in (True, False))

MESSAGES = """
from mycelium_mono import message, I64

@message(type_id={base}, topic="shape.a")
class A:
    value: I64

@message(type_id={base_1}, topic="shape.b")
class B:
    value: I64

@message(type_id={base_2}, topic="shape.c")
class C:
    value: I64
"""


def messages_source(base_type_id: int) -> str:
    return MESSAGES.format(base=base_type_id, base_1=base_type_id + 1, base_2=base_type_id + 2)


def write_package(root: Path, package: str, modules: Mapping[str, str]) -> Path:
    """``root/package/<name>.py`` for each module text (dedented); returns the package dir."""
    directory = root / package
    directory.mkdir(parents=True)
    (directory / "__init__.py").write_text("")
    for name, text in modules.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(text))
    return directory


def load_build(root: Path, package: str, modules: Mapping[str, str], build: Build,
               routing: str = "routing") -> ModuleType:
    """Write the package under ``root/<build>`` and import ``package.routing`` by ``build``.

    ``INLINE`` in any module text becomes ``True``/``False``: the routing text says
    ``@routing_config(inline=INLINE)``, the same words on both paths. The hook is removed
    again before returning; the package is forgotten first so nothing is shared with the
    previous import.
    """
    texts = {name: text.replace("INLINE", str(build.inline)) for name, text in modules.items()}
    base = root / build.name
    write_package(base, package, texts)
    forget_modules(package)
    importlib.invalidate_caches()
    sys.path.insert(0, str(base))
    manager = install_import_hook([package]) if build.path == "hook" else None
    try:
        module = importlib.import_module(f"{package}.{routing}")
    finally:
        if manager is not None:
            manager.uninstall()
        sys.path.remove(str(base))
    expected = "import hook" if build.path == "hook" else "runtime"
    origins = {getattr(v, "__mycelium_origin__", None) for v in vars(module).values()
               if isinstance(v, type) and getattr(v, "__module__", "") == module.__name__}
    assert expected in origins, f"{build.name}: built by {origins}"
    return module


def services_of(bus_cls: type, make: Callable[[type], Any] | None = None) -> dict[str, Any]:
    """One fresh instance per service the bus takes."""
    services: dict[str, type] = bus_cls.__mycelium_services__  # type: ignore[attr-defined]
    return {attr: (make or (lambda cls: cls()))(cls) for attr, cls in services.items()}


def inlined(bus_cls: type) -> set[str]:
    """The service attributes whose bodies the bus inlines."""
    return {attr for attr, *_ in getattr(bus_cls, "__mycelium_inlined__", ())}
