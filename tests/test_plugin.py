"""The pytest plugin: the session hook from the ini file, and the two fixtures."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from mycelium_mono.pytest_plugin import DEFAULT_TEST_PACKAGE, MonolithHook, RoutingModuleFactory
from mycelium_mono.routing.hook import MyceliumFinder, MyceliumLoader, Outcome, import_records
from mycelium_mono.routing.pipeline import RewriteOptions

pytest_plugins = ["pytester"]

HOOKPKGS = Path(__file__).parent / "hookpkgs"
INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:asyncio")

MESSAGES = """
    from mycelium_mono import U64, message

    @message(type_id=4150, topic="pings")
    class Ping:
        seq: U64
"""

HANDLERS = """
    from mycelium_mono import MessageHandler
    from mycelium_testpkg.messages import Ping

    class Recorder(MessageHandler[Ping]):
        def __init__(self):
            self.seen = []

        def handle(self, ping):
            self.seen.append(ping.seq)
"""

ROUTING = """
    from mycelium_mono import routing_config
    from mycelium_testpkg.handlers import Recorder
    from mycelium_testpkg.messages import Ping

    @routing_config
    class MonolithBus:
        Ping = [Recorder]
"""


def hook_finders(package: str) -> list[MyceliumFinder]:
    return [f for f in sys.meta_path if isinstance(f, MyceliumFinder) and package in f.packages]


def test_routing_module_fixture_imports_under_the_hook(
    routing_module: RoutingModuleFactory,
) -> None:
    routing = routing_module(ROUTING, modules={"messages": MESSAGES, "handlers": HANDLERS})
    assert isinstance(routing.__loader__, MyceliumLoader)
    assert routing.__name__ == f"{DEFAULT_TEST_PACKAGE}.routing"
    handlers = sys.modules[f"{DEFAULT_TEST_PACKAGE}.handlers"]
    messages = sys.modules[f"{DEFAULT_TEST_PACKAGE}.messages"]
    recorder = handlers.Recorder()
    bus = routing.MonolithBus(recorder=recorder)
    bus.emit_ping(messages.Ping(seq=5))
    bus.emit_ping(messages.Ping(seq=6))
    assert recorder.seen == [5, 6]
    record = import_records()[routing.__name__]
    assert record.outcome in {Outcome.REWRITTEN, Outcome.CACHE_HIT}


def test_routing_module_fixture_passes_options(routing_module: RoutingModuleFactory) -> None:
    routing = routing_module(
        ROUTING,
        modules={"messages": MESSAGES, "handlers": HANDLERS},
        options=RewriteOptions(inline=True),
    )
    assert routing.__loader__.options == RewriteOptions(inline=True)


def test_monolith_hook_fixture_installs_first_in_meta_path(monolith_hook: MonolithHook) -> None:
    manager = monolith_hook("some_app", options=RewriteOptions(inline=False))
    assert sys.meta_path[0] is manager.finder
    assert manager.finder.options == RewriteOptions(inline=False)


def copy_shop(pytester: pytest.Pytester) -> None:
    shutil.copytree(
        HOOKPKGS / "hookshop",
        pytester.path / "hookshop",
        ignore=shutil.ignore_patterns("__pycache__"),
    )


INNER_CHECK = """
    import hookshop.routing
    from mycelium_mono.routing.hook import import_records

    def test_rewritten_before_collection():
        assert type(hookshop.routing.__loader__).__name__ == "MyceliumLoader"
        assert import_records()["hookshop.routing"].outcome.name in {"REWRITTEN", "CACHE_HIT"}
        assert hookshop.routing.run_demo()[0] == 7
"""


def test_ini_packages_are_rewritten_even_when_a_conftest_imports_them(
    pytester: pytest.Pytester,
) -> None:
    copy_shop(pytester)
    pytester.makeini("[pytest]\nmycelium_packages =\n    hookshop\n")
    # conftest.py files are imported before pytest_configure: the hook must already be there.
    pytester.makeconftest("import hookshop.routing\n")
    pytester.makepyfile(test_inner=INNER_CHECK)
    result = pytester.runpytest_subprocess(*INNER_ARGS)
    result.assert_outcomes(passed=1)


def test_without_ini_packages_no_hook_is_installed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_inner="""
        import sys
        from mycelium_mono.routing.hook import MyceliumFinder

        def test_no_hook():
            assert not any(isinstance(f, MyceliumFinder) for f in sys.meta_path)
        """
    )
    result = pytester.runpytest_subprocess(*INNER_ARGS)
    result.assert_outcomes(passed=1)


def test_session_hook_is_removed_when_the_session_ends(pytester: pytest.Pytester) -> None:
    copy_shop(pytester)
    pytester.makeini("[pytest]\nmycelium_packages = hookshop_session_only\n")
    pytester.makepyfile(
        test_inner="""
        import sys
        from mycelium_mono.routing.hook import MyceliumFinder

        def test_hook_present():
            assert any(
                isinstance(f, MyceliumFinder) and f.packages == ("hookshop_session_only",)
                for f in sys.meta_path
            )
        """
    )
    result = pytester.runpytest_inprocess(*INNER_ARGS)
    result.assert_outcomes(passed=1)
    assert hook_finders("hookshop_session_only") == []


INNER_FIXTURES = """
import sys
from mycelium_mono.routing.hook import MyceliumFinder

ROUTING = ROUTING_TEXT
MODULES = MODULES_DICT

def test_first_uses_the_fixture(routing_module):
    routing = routing_module(ROUTING, modules=MODULES)
    assert type(routing.__loader__).__name__ == "MyceliumLoader"

def test_second_sees_nothing_left(routing_module):
    assert not any(name.startswith("mycelium_testpkg") for name in sys.modules)
    assert not any(isinstance(f, MyceliumFinder) for f in sys.meta_path)
    # and the same package name can be written and imported again
    routing = routing_module(ROUTING, modules=MODULES)
    assert routing.MonolithBus is not None
"""


def test_fixtures_clean_up_after_each_test(pytester: pytest.Pytester) -> None:
    source = INNER_FIXTURES.replace("ROUTING_TEXT", repr(ROUTING)).replace(
        "MODULES_DICT", repr({"messages": MESSAGES, "handlers": HANDLERS})
    )
    pytester.makepyfile(test_inner=source)
    result = pytester.runpytest_subprocess(*INNER_ARGS)
    result.assert_outcomes(passed=2)
