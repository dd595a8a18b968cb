"""What the import hook costs at import time.

One generated package, ``bench_import_pkg``: 10 messages, 10 handlers, and a routing module
routing each message to its own handler and to an auditor that handles all ten.
``plain_routing`` is the same text with the decorator replaced by an identity function (and no
``routing_config`` bytes), so the hook leaves it to the standard loader and its ``.pyc``.
Each round drops the module from ``sys.modules`` and imports it again (finder, loader, cache
read, module execution); handler and message modules stay imported, as in an application.

Rows (group "import of a 10-message routing module"), reference = the plain module imported
with no hook in ``sys.meta_path`` at all:

- the same plain import with a hook installed for *another* package (bar: nothing measurable);
- the plain module inside the hook's package (the hook reads it once for the byte search);
- cached import of the routing module (the hook's cache hit; DESIGN bar: adds <= 2 ms);
- cold import (rewrite + compile + exec, nothing cached).

Run: ``python benchmarks/report.py -k bench_import``
(or ``python -m pytest benchmarks/bench_import.py``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.cache import cache_path
from mycelium_mono.routing.hook import (
    MyceliumFinder,
    Outcome,
    clear_import_records,
    import_records,
    install_import_hook,
)

GROUP = "import of a 10-message routing module"
PACKAGE = "bench_import_pkg"
ROUTING = f"{PACKAGE}.routing"
PLAIN = f"{PACKAGE}.plain_routing"
MESSAGE_COUNT = 10
FIRST_TYPE_ID = 4180  # tests/hookpkgs reserves 4100-4199 for the hook's packages

PLAIN_LABEL = "plain import, no hook (same module without routing_config, standard .pyc)"
CACHED_LABEL = "cached import of the routing module (hook cache hit)"

pytestmark = pytest.mark.benchmark(group=GROUP)

_medians: dict[str, float] = {}


def _sources() -> dict[str, str]:
    names = [f"Msg{i}" for i in range(MESSAGE_COUNT)]
    messages = ["from mycelium_mono import U64, message\n"]
    handlers = [
        "from mycelium_mono import MessageHandler, handles\n",
        f"from {PACKAGE}.messages import {', '.join(names)}\n",
    ]
    auditor = ["\n\nclass Auditor:\n    def __init__(self) -> None:\n        self.seen = 0\n"]
    routes = []
    for i, name in enumerate(names):
        messages.append(
            f"\n\n@message(type_id={FIRST_TYPE_ID + i}, topic='t{i}')\n"
            f"class {name}:\n    seq: U64\n    value: U64\n"
        )
        handlers.append(
            f"\n\nclass Handler{i}(MessageHandler[{name}]):\n"
            "    def __init__(self) -> None:\n        self.n = 0\n\n"
            f"    def handle(self, msg: {name}) -> None:\n        self.n += msg.value\n"
        )
        auditor.append(
            f"\n    @handles({name})\n    def on_{name.lower()}(self, msg: {name}) -> None:\n"
            "        self.seen += 1\n"
        )
        routes.append(f"    {name} = [Handler{i}, Auditor]\n")
    handlers.extend(auditor)
    imports = (
        f"from {PACKAGE}.handlers import Auditor, "
        f"{', '.join(f'Handler{i}' for i in range(MESSAGE_COUNT))}\n"
        f"from {PACKAGE}.messages import {', '.join(names)}\n"
    )
    routing = (
        "from mycelium_mono import routing_config\n"
        + imports
        + "\n\n@routing_config\nclass MonolithBus:\n"
        + "".join(routes)
    )
    plain = routing.replace(
        "from mycelium_mono import routing_config\n", "def identity(cls):\n    return cls\n"
    ).replace("@routing_config", "@identity")
    return {
        "__init__": "",
        "messages": "".join(messages),
        "handlers": "".join(handlers),
        "routing": routing,
        "plain_routing": plain,
    }


@pytest.fixture(scope="module")
def package(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """The package on disk and on sys.path, bytecode writing on, the hook installed for it."""
    root = tmp_path_factory.mktemp("bench_import")
    directory = root / PACKAGE
    directory.mkdir()
    for name, text in _sources().items():
        (directory / f"{name}.py").write_text(text)
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    sys.path.insert(0, str(root))
    manager = install_import_hook([PACKAGE])
    try:
        for module in (ROUTING, PLAIN):  # warm: .pyc and hook cache written, handlers imported
            importlib.import_module(module)
        yield directory
    finally:
        manager.uninstall()
        forget_modules(PACKAGE)
        sys.path.remove(str(root))
        sys.dont_write_bytecode = writes
    _print_ratios(request.config)


def _reimport(name: str) -> Callable[[], Any]:
    def run() -> Any:
        return importlib.import_module(name)

    return run


def _forget(name: str) -> Callable[[], None]:
    def setup() -> None:
        sys.modules.pop(name, None)

    return setup


def measure(
    benchmark: Any,
    run: Callable[[], Any],
    setup: Callable[[], None],
    label: str,
    rounds: int = 300,
    **extra: Any,
) -> None:
    benchmark.extra_info.update(label=label, ops=1, **extra)
    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=5)
    if benchmark.stats is not None:  # None under --benchmark-disable
        _medians[label] = benchmark.stats.stats.median


@pytest.fixture
def no_hooks() -> Iterator[None]:
    """Take every import hook out of sys.meta_path (the session's too), then put them back."""
    saved = list(sys.meta_path)
    sys.meta_path[:] = [f for f in saved if not isinstance(f, MyceliumFinder)]
    yield
    sys.meta_path[:] = saved


def test_plain_import(benchmark: Any, package: Path, no_hooks: None) -> None:
    measure(benchmark, _reimport(PLAIN), _forget(PLAIN), PLAIN_LABEL, reference=True)
    assert type(sys.modules[PLAIN].__loader__).__name__ == "SourceFileLoader"


def test_plain_import_with_a_hook_for_another_package(
    benchmark: Any, package: Path, no_hooks: None
) -> None:
    with install_import_hook(["some_other_package"]):
        measure(
            benchmark,
            _reimport(PLAIN),
            _forget(PLAIN),
            "plain import, hook installed for another package",
            bar={"vs": PLAIN_LABEL, "at_most": 1.1},
        )


def test_plain_module_inside_the_hooks_package(benchmark: Any, package: Path) -> None:
    measure(
        benchmark,
        _reimport(PLAIN),
        _forget(PLAIN),
        "plain import inside the hook's package (one byte search, standard loader)",
    )
    assert type(sys.modules[PLAIN].__loader__).__name__ == "SourceFileLoader"


def test_cached_import(benchmark: Any, package: Path) -> None:
    clear_import_records()
    measure(benchmark, _reimport(ROUTING), _forget(ROUTING), CACHED_LABEL,
            bar={"vs": PLAIN_LABEL, "adds_at_most": 0.002})
    assert import_records()[ROUTING].outcome is Outcome.CACHE_HIT


def test_cold_rewrite(benchmark: Any, package: Path) -> None:
    cached = cache_path(str(package / "routing.py"))
    assert cached is not None

    def setup() -> None:
        sys.modules.pop(ROUTING, None)
        if os.path.exists(cached):
            os.unlink(cached)

    clear_import_records()
    measure(
        benchmark, _reimport(ROUTING), setup, "cold import (rewrite + compile + exec)", rounds=60
    )
    assert import_records()[ROUTING].outcome is Outcome.REWRITTEN


def _print_ratios(config: pytest.Config) -> None:
    plain = _medians.get(PLAIN_LABEL)
    if not plain:
        return
    lines = [f"{GROUP}: medians, and ratio to the plain import ({plain * 1e3:.3f} ms)"]
    for label, median in _medians.items():
        lines.append(f"  {median * 1e3:8.3f} ms  {median / plain:6.2f}x  {label}")
    if CACHED_LABEL in _medians:
        extra_ms = (_medians[CACHED_LABEL] - plain) * 1e3
        lines.append(f"  cached import adds {extra_ms:.3f} ms over the plain import (bar: 2 ms)")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # fixture teardown runs under output capture
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
