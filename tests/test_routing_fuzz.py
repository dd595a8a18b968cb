"""Fuzzing: any routing module either loads or raises RoutingError — never anything else.

Hypothesis writes routing modules from a vocabulary of good and bad names, statements and
options. Each one goes through the hook's static path (``rewrite_module`` then executing the
rewritten module) and through the decorator's run-time path; both must agree on the verdict
and on the error codes.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import tempfile
from pathlib import Path

from conftest import write_package
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium_mono import RoutingError
from mycelium_mono.routing.pipeline import rewrite_module

PACKAGE = "mm_fuzz_pkg"
DEFS = """
from mycelium_mono import MessageHandler, handles, message, U64

@message(type_id=62001)
class M1:
    x: U64

@message(type_id=62002)
class M2:
    x: U64

@message(type_id=62003)
class M3:
    x: U64

class H1(MessageHandler[M1]):
    def handle(self, m):
        pass

class H2:
    @handles(M1)
    def one(self, m):
        pass

    @handles(M2)
    def two(self, m):
        pass

class H3:
    @handles(M2)
    async def two(self, m):
        pass

class H4(H1):
    @handles(M3)
    def three(self, m):
        pass

class Plain:
    pass

def func():
    pass

CONST = 3
"""

ROOT = Path(tempfile.mkdtemp(prefix="mm_fuzz_"))
write_package(ROOT, PACKAGE, {"defs": DEFS})
sys.path.insert(0, str(ROOT))
COUNTER = itertools.count()

MESSAGE_NAMES = ["M1", "M2", "M3", "H1", "CONST", "func", "Missing", "defs.M1"]
HANDLER_NAMES = ["H1", "H2", "H3", "H4", "Plain", "M1", "CONST", "func", "Missing", "defs.H2",
                 "defs.Nope", "Local"]
JUNK = ["x = 1", "def f(self):\n        pass", "pass", "'''doc'''", "M1: list = [H1]",
        "M1 = H1", "M2 = route(H1)", "M2 = route(sync=H1)", "M1 = [H1()]", "M3 = [*[H4]]"]
OPTIONS = ["", "(inline=True)", "(inline=False)", "(inline=None)", "(inline=1)", "(fast=True)",
           "(True)"]

handler_lists = st.lists(st.sampled_from(HANDLER_NAMES), max_size=4)


@st.composite
def entries(draw: st.DrawFn) -> str:
    message = draw(st.sampled_from(MESSAGE_NAMES)).replace("defs.", "")
    kind = draw(st.sampled_from(["list", "route", "junk"]))
    if kind == "junk":
        return draw(st.sampled_from(JUNK))
    if kind == "list":
        return f"{message} = [{', '.join(draw(handler_lists))}]"
    sync = ", ".join(draw(handler_lists))
    background = ", ".join(draw(handler_lists))
    return f"{message} = route(sync=[{sync}], background=[{background}])"


@st.composite
def routing_modules(draw: st.DrawFn) -> str:
    lines = draw(st.lists(entries(), max_size=6))
    option = draw(st.sampled_from(OPTIONS))
    local = "class Local:\n    @handles(M1)\n    def on(self, m):\n        pass\n"
    header = (
        "from mycelium_mono import routing_config, route, handles\n"
        f"from {PACKAGE} import defs\n"
        f"from {PACKAGE}.defs import M1, M2, M3, H1, H2, H3, H4, Plain, func, CONST\n"
        + (local if draw(st.booleans()) else "")
    )
    body = "\n    ".join(lines) or "pass"
    return f"{header}\n@routing_config{option}\nclass Bus:\n    {body}\n"


def static_verdict(source: str, path: Path, name: str) -> list[str]:
    try:
        result = rewrite_module(source.encode(), str(path), name)
    except RoutingError as error:
        return sorted(d.code for d in error.diagnostics)
    namespace = {"__name__": name, "__file__": str(path)}
    exec(compile(result.tree, str(path), "exec"), namespace)  # the rewritten module loads
    assert namespace["Bus"].__mycelium_origin__ == "import hook"
    return []


def runtime_verdict(name: str) -> list[str] | None:
    """Codes from the decorator path; None when Python itself failed in the class body."""
    try:
        module = importlib.import_module(name)
    except RoutingError as error:
        return sorted(d.code for d in error.diagnostics)
    except (NameError, AttributeError, TypeError):
        # Without the hook, Python runs the class body before the decorator sees it, so an
        # unknown name is Python's NameError, `[H1()]` its TypeError. Reporting these as
        # routing errors before anything runs is what the hook is for.
        return None
    assert module.Bus.__mycelium_origin__ == "runtime"
    return []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=routing_modules())
def test_routing_modules_load_or_raise_routing_error_on_both_paths(source: str) -> None:
    name = f"r{next(COUNTER)}"
    path = ROOT / PACKAGE / f"{name}.py"
    path.write_text(source)
    importlib.invalidate_caches()
    module_name = f"{PACKAGE}.{name}"
    static = static_verdict(source, path, module_name)
    runtime = runtime_verdict(module_name)
    if runtime is None:
        assert static, source
    else:
        assert static == runtime, source
