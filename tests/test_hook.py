"""The import hook end to end: real packages on disk, real imports, real subprocesses."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import inspect
import json
import linecache
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from mycelium_mono.pytest_plugin import MonolithHook, forget_modules
from mycelium_mono.routing.cache import (
    CacheEntry,
    CacheKey,
    MissReason,
    WriteOutcome,
    cache_path,
    read_cache,
    write_cache,
)
from mycelium_mono.routing.errors import RoutingError
from mycelium_mono.routing.hook import (
    MyceliumFinder,
    MyceliumHookWarning,
    MyceliumLoader,
    Outcome,
    clear_import_records,
    import_records,
    install_import_hook,
)
from mycelium_mono.routing.pipeline import RewriteOptions, generated_filename

HOOKPKGS = Path(__file__).parent / "hookpkgs"
DEMO_RESULT = [7, ["order 1", "order 2", "shipped 1"]]

# A child interpreter that imports the shop under the hook and reports what happened.
CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from mycelium_mono.routing.hook import import_records, install_import_hook
install_import_hook(["hookshop"])
import hookshop.routing
record = import_records()["hookshop.routing"]
print(json.dumps({
    "outcome": record.outcome.name,
    "miss": record.miss.reason.name if record.miss else None,
    "write": record.write.outcome.name if record.write else None,
    "demo": hookshop.routing.run_demo(),
}))
"""


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh copy of tests/hookpkgs/hookshop on sys.path, with bytecode writing allowed."""
    # The test machine exports PYTHONDONTWRITEBYTECODE=1; most of these tests are about writing.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    package = tmp_path / "hookshop"
    shutil.copytree(HOOKPKGS / "hookshop", package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_modules("hookshop")
    clear_import_records()
    yield package
    forget_modules("hookshop")


def routing_cache(package: Path, module: str = "routing") -> Path:
    path = cache_path(str(package / f"{module}.py"))
    assert path is not None
    return Path(path)


def run_child(package: Path, *flags: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, *flags, "-c", CHILD, str(package.parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def import_shop(monolith_hook: MonolithHook, **options: bool | None) -> ModuleType:
    monolith_hook("hookshop", options=RewriteOptions(**options))
    return importlib.import_module("hookshop.routing")


def test_routing_module_is_rewritten_and_cached(shop: Path, monolith_hook: MonolithHook) -> None:
    routing = import_shop(monolith_hook)
    assert isinstance(routing.__loader__, MyceliumLoader)
    assert list(routing.run_demo()) == DEMO_RESULT
    record = import_records()["hookshop.routing"]
    assert record.outcome is Outcome.REWRITTEN
    assert record.miss is not None and record.miss.reason is MissReason.NO_FILE
    assert record.write is not None and record.write.outcome is WriteOutcome.WRITTEN
    assert routing_cache(shop).is_file()
    dependencies = {Path(dep.path).name for dep in record.dependencies}
    assert {"handlers.py", "messages.py"} <= dependencies


def test_hook_never_writes_the_standard_pyc_of_a_routing_module(
    shop: Path, monolith_hook: MonolithHook
) -> None:
    import_shop(monolith_hook)
    standard = importlib.util.cache_from_source(str(shop / "routing.py"))
    assert not os.path.exists(standard)  # a later import without the hook must not run our code


def test_second_process_imports_from_cache_and_behaves_the_same(shop: Path) -> None:
    first = run_child(shop)
    second = run_child(shop)
    assert (first["outcome"], first["write"]) == ("REWRITTEN", "WRITTEN")
    assert (second["outcome"], second["miss"]) == ("CACHE_HIT", None)
    assert first["demo"] == second["demo"] == DEMO_RESULT


def test_editing_a_handler_module_invalidates_the_cache(shop: Path) -> None:
    run_child(shop)
    handlers = shop / "handlers.py"
    handlers.write_text(handlers.read_text().replace("+= order.quantity", "+= 10 * order.quantity"))
    after = run_child(shop)
    assert (after["outcome"], after["miss"]) == ("REWRITTEN", "DEPENDENCY_CHANGED")
    assert after["demo"] == [70, DEMO_RESULT[1]]


def test_editing_the_routing_module_invalidates_the_cache(shop: Path) -> None:
    run_child(shop)
    routing = shop / "routing.py"
    routing.write_text(routing.read_text().replace("Shipment = [Auditor]", "Shipment = []"))
    after = run_child(shop)
    assert (after["outcome"], after["miss"]) == ("REWRITTEN", "SOURCE_CHANGED")
    assert after["demo"] == [7, ["order 1", "order 2"]]


def test_optimized_and_plain_runs_keep_separate_caches(shop: Path) -> None:
    # Issue 15: one slot for both meant `python -O` and `python` invalidated each other.
    first = [run_child(shop), run_child(shop, "-O")]
    again = [run_child(shop), run_child(shop, "-O")]
    assert [(r["outcome"], r["miss"]) for r in first] == [("REWRITTEN", "NO_FILE")] * 2
    assert [r["outcome"] for r in again] == ["CACHE_HIT"] * 2
    names = sorted(p.name for p in (shop / "__pycache__").glob("routing.*.mycelium.pyc"))
    tag = sys.implementation.cache_tag
    assert names == [f"routing.{tag}.mycelium.pyc", f"routing.{tag}.opt-1.mycelium.pyc"]


def test_options_change_is_a_miss(shop: Path) -> None:
    with install_import_hook(["hookshop"], RewriteOptions(inline=False)):
        importlib.import_module("hookshop.routing")
    forget_modules("hookshop")
    with install_import_hook(["hookshop"], RewriteOptions(inline=True)):
        routing = importlib.import_module("hookshop.routing")
    record = import_records()["hookshop.routing"]
    assert record.miss is not None and record.miss.reason is MissReason.OPTIONS_CHANGED
    assert list(routing.run_demo()) == DEMO_RESULT


def test_cache_written_by_another_library_version_is_a_miss(
    shop: Path, monolith_hook: MonolithHook
) -> None:
    with install_import_hook(["hookshop"]):
        importlib.import_module("hookshop.routing")
    forget_modules("hookshop")
    path = str(routing_cache(shop))
    source = (shop / "routing.py").read_bytes()
    current = read_cache(path, CacheKey.current(source, RewriteOptions().key()))
    assert isinstance(current, CacheEntry)
    # What version 0.0.1 would have written for the very same inputs.
    old_key = dataclasses.replace(current.key, library_version="0.0.1")
    write_cache(path, dataclasses.replace(current, key=old_key))

    import_shop(monolith_hook)
    record = import_records()["hookshop.routing"]
    assert record.miss is not None and record.miss.reason is MissReason.VERSION_CHANGED


def test_eight_threads_importing_at_once_get_one_module(
    shop: Path, monolith_hook: MonolithHook
) -> None:
    monolith_hook("hookshop")
    barrier = threading.Barrier(8)
    modules: list[ModuleType] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            modules.append(importlib.import_module("hookshop.routing"))
        except BaseException as exc:  # reported below, with its traceback in the assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(modules) == 8 and all(m is modules[0] for m in modules)
    assert list(modules[0].run_demo()) == DEMO_RESULT
    assert import_records()["hookshop.routing"].outcome is Outcome.REWRITTEN


def test_unwritable_cache_directory_still_imports(
    shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monolith_hook: MonolithHook
) -> None:
    # Tests run as root, and chmod does not stop root from writing. A pycache_prefix *under a
    # regular file* cannot be created by anyone: the same OSError a read-only tree gives.
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setattr(sys, "pycache_prefix", str(blocker / "cache"))
    routing = import_shop(monolith_hook)
    assert list(routing.run_demo()) == DEMO_RESULT
    record = import_records()["hookshop.routing"]
    assert record.outcome is Outcome.REWRITTEN
    assert record.write is not None and record.write.outcome is WriteOutcome.OS_ERROR
    assert not list(tmp_path.rglob("*.mycelium.pyc*"))


def test_dont_write_bytecode_writes_no_cache_file(
    shop: Path, monkeypatch: pytest.MonkeyPatch, monolith_hook: MonolithHook
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    routing = import_shop(monolith_hook)
    assert list(routing.run_demo()) == DEMO_RESULT
    record = import_records()["hookshop.routing"]
    assert record.write is not None and record.write.outcome is WriteOutcome.DONT_WRITE_BYTECODE
    assert not routing_cache(shop).exists()


def test_dont_write_bytecode_still_reads_an_existing_cache(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with install_import_hook(["hookshop"]):
        importlib.import_module("hookshop.routing")
    forget_modules("hookshop")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    with install_import_hook(["hookshop"]):
        importlib.import_module("hookshop.routing")
    assert import_records()["hookshop.routing"].outcome is Outcome.CACHE_HIT


def test_pycache_prefix_receives_the_cache(
    shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monolith_hook: MonolithHook
) -> None:
    prefix = tmp_path / "prefix"
    monkeypatch.setattr(sys, "pycache_prefix", str(prefix))
    import_shop(monolith_hook)
    written = list(prefix.rglob("routing.*.mycelium.pyc"))
    assert len(written) == 1
    assert str(written[0]) == import_records()["hookshop.routing"].cache_path
    assert not (shop / "__pycache__").exists() or not list(
        (shop / "__pycache__").glob("*.mycelium.pyc")
    )


def test_concurrent_processes_never_see_a_torn_cache_file(shop: Path) -> None:
    routing = shop / "routing.py"
    original = routing.read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for round_number in range(3):
        # A new source each round: all four processes miss and write at the same moment.
        routing.write_text(f"{original}\n# round {round_number}\n")
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, str(shop.parent)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(4)
        ]
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            report = json.loads(out)
            assert report["outcome"] in {"REWRITTEN", "CACHE_HIT"}
            assert report["demo"] == DEMO_RESULT
        key = CacheKey.current(routing.read_bytes(), RewriteOptions().key())
        assert isinstance(read_cache(str(routing_cache(shop)), key), CacheEntry)
        assert [p.name for p in routing_cache(shop).parent.glob("*.mycelium.pyc.*")] == []


def test_module_imported_before_the_hook_is_warned_about(shop: Path) -> None:
    routing = importlib.import_module("hookshop.routing")  # no hook: runtime build
    assert list(routing.run_demo()) == DEMO_RESULT
    with pytest.warns(MyceliumHookWarning, match=r"hookshop\.routing .*before") as caught:
        manager = install_import_hook(["hookshop"])
    manager.uninstall()
    assert len(caught) == 1  # handlers/messages/plain never mention routing_config
    assert "help:" in str(caught[0].message)
    assert import_records()["hookshop.routing"].outcome is Outcome.IMPORTED_BEFORE_HOOK


def test_no_warning_when_nothing_was_imported_early(shop: Path) -> None:
    importlib.import_module("hookshop.plain")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MyceliumHookWarning)
        install_import_hook(["hookshop"]).uninstall()


def test_modules_outside_the_packages_are_not_touched(shop: Path) -> None:
    with install_import_hook(["some_other_package"]):
        routing = importlib.import_module("hookshop.routing")
    assert type(routing.__loader__) is importlib.machinery.SourceFileLoader
    assert "hookshop.routing" not in import_records()


def test_modules_without_routing_config_keep_the_standard_loader(
    shop: Path, monolith_hook: MonolithHook
) -> None:
    monolith_hook("hookshop")
    for name in ("hookshop", "hookshop.plain", "hookshop.handlers", "hookshop.messages"):
        module = importlib.import_module(name)
        assert type(module.__loader__) is importlib.machinery.SourceFileLoader, name
    assert import_records() == {}


def test_should_rewrite_can_be_overridden(shop: Path) -> None:
    class SkipRouting(MyceliumFinder):
        def should_rewrite(self, module_name: str) -> bool:
            return super().should_rewrite(module_name) and not module_name.endswith(".routing")

    with install_import_hook(["hookshop"], finder_class=SkipRouting):
        routing = importlib.import_module("hookshop.routing")
    assert type(routing.__loader__) is importlib.machinery.SourceFileLoader


def test_inspect_getsource_works_on_the_rewritten_module(
    shop: Path, monolith_hook: MonolithHook
) -> None:
    routing = import_shop(monolith_hook)
    source = (shop / "routing.py").read_text()
    assert inspect.getsource(routing) == source
    assert "Order = [Counter, Auditor]" in inspect.getsource(routing.MonolithBus)
    generated = linecache.getlines(generated_filename("hookshop.routing"))
    assert any("def emit_order" in line for line in generated)


def test_cache_hit_registers_the_generated_source_too(shop: Path) -> None:
    with install_import_hook(["hookshop"]):
        importlib.import_module("hookshop.routing")
    forget_modules("hookshop")
    linecache.cache.pop(generated_filename("hookshop.routing"), None)
    with install_import_hook(["hookshop"]):
        importlib.import_module("hookshop.routing")
    assert import_records()["hookshop.routing"].outcome is Outcome.CACHE_HIT
    assert any(
        "def emit_order" in line
        for line in linecache.getlines(generated_filename("hookshop.routing"))
    )


BROKEN = """
from mycelium_mono import routing_config
from hookshop.messages import Order

@routing_config
class MonolithBus:
    Order = [NoSuchHandler]
"""


def test_routing_error_propagates_and_is_never_cached(
    shop: Path, monolith_hook: MonolithHook
) -> None:
    (shop / "broken.py").write_text(BROKEN)
    monolith_hook("hookshop")
    for _ in range(2):  # the second import must fail the same way, not load a cache
        with pytest.raises(RoutingError) as caught:
            importlib.import_module("hookshop.broken")
        assert caught.value.filename == str(shop / "broken.py")
        assert caught.value.lineno == 7
    assert not routing_cache(shop, "broken").exists()
    assert import_records()["hookshop.broken"].outcome is Outcome.FAILED
    assert "hookshop.broken" not in sys.modules


def test_manager_is_a_context_manager_and_uninstall_is_idempotent() -> None:
    with install_import_hook("hookshop") as manager:
        assert sys.meta_path[0] is manager.finder
        assert manager.installed
    assert not manager.installed
    manager.uninstall()
    assert manager.finder not in sys.meta_path


@pytest.mark.parametrize("packages", [[], ["src/hookshop"], ["hookshop", ""]])
def test_bad_package_names_are_refused_with_help(packages: list[str]) -> None:
    with pytest.raises(ValueError, match="help:"):
        install_import_hook(packages)


def test_reload_reads_the_edited_source_again(shop: Path, monolith_hook: MonolithHook) -> None:
    routing = import_shop(monolith_hook)
    path = shop / "routing.py"
    path.write_text(path.read_text().replace("Shipment = [Auditor]", "Shipment = []"))
    reloaded = importlib.reload(routing)
    assert list(reloaded.run_demo()) == [7, ["order 1", "order 2"]]
    record = import_records()["hookshop.routing"]
    assert record.miss is not None and record.miss.reason is MissReason.SOURCE_CHANGED


def test_record_describes_what_happened_in_one_line(
    shop: Path, monolith_hook: MonolithHook
) -> None:
    import_shop(monolith_hook)
    line = import_records()["hookshop.routing"].describe()
    assert line == "hookshop.routing: rewritten (cache miss: no cache file; written)"
