"""What changes between the supported Pythons (3.11, 3.12, 3.13), and that we follow it.

`make test` runs this suite on every supported version (noxfile.py). The tests here are about
the differences themselves: AST node fields that a newer version added (3.12's
``type_params``, PEP 695), syntax only a newer version parses, and 3.13's ``frame.f_locals``
(PEP 667), which the run-time build reads to resolve a routing table inside a function. Each
test asserts the behaviour every version must share and says which version differs and how.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import ModuleType

import helpers_modules
import pytest
import typing_extensions
from conftest import HANDLERS, MESSAGES, ROUTING, write_package
from helpers_modules import ROOT

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.pipeline import RewriteOptions, rewrite_module
from mycelium_mono.stubs import module_stub

PACKAGE = "mm_fields"
FIELDS_MESSAGES = MESSAGES.replace("6100", "6192")  # type ids are process-wide: our own


def _missing_fields(tree: ast.AST) -> list[str]:
    return [f"{type(node).__name__}.{name} (line {getattr(node, 'lineno', '?')})"
            for node in ast.walk(tree) for name in node._fields if not hasattr(node, name)]


@pytest.mark.parametrize("inline", [False, True])
def test_every_generated_node_has_every_field_this_python_defines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    # 3.12 added ClassDef/FunctionDef.type_params: a node built without it has no such attribute
    # on 3.12, and on 3.13 its constructor fills it in with a DeprecationWarning ("will become
    # an error in Python 3.15"). Either is a generated bus that only works by accident.
    write_package(tmp_path, PACKAGE, {"messages": FIELDS_MESSAGES, "handlers": HANDLERS,
                                      "routing": ROUTING})
    monkeypatch.syspath_prepend(str(tmp_path))
    routing = tmp_path / PACKAGE / "routing.py"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            result = rewrite_module(routing.read_bytes(), str(routing), f"{PACKAGE}.routing",
                                    RewriteOptions(inline=inline))
    finally:
        forget_modules(PACKAGE)
    assert result.generated_source, "the routing class was not rewritten"
    assert _missing_fields(result.tree) == []
    ast_warnings = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert ast_warnings == []


GENERIC_MODULE = """\
def first[T](items: list[T]) -> T:
    return items[0]


class Box[T]:
    def get(self) -> T:
        raise NotImplementedError
"""


def test_stubs_keep_pep_695_type_parameters_where_the_syntax_exists() -> None:
    # `def f[T]` and `class C[T]` are syntax from 3.12 on (PEP 695); on 3.11 the same module is a
    # SyntaxError, so there is nothing for a stub to keep. From 3.12 on the stub must keep [T]:
    # without it `T` in the signature is an undefined name for the type checker.
    if sys.version_info < (3, 12):
        with pytest.raises(SyntaxError):
            ast.parse(GENERIC_MODULE)
        return
    stub = module_stub(ast.parse(GENERIC_MODULE), [])
    assert "def first[T](items: list[T]) -> T:" in stub
    assert "class Box[T]:" in stub


LOCAL_PACKAGE = "mm_local"
LOCAL_MESSAGES = MESSAGES.replace("6100", "6190")


def test_a_routing_class_in_a_function_routes_that_functions_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run-time build resolves names through the defining frame's f_locals. Up to 3.12 that
    # is a dict snapshot; on 3.13 it is a write-through FrameLocalsProxy (PEP 667), a mapping
    # but not a dict. Both must resolve a handler class local to the function.
    write_package(tmp_path, LOCAL_PACKAGE, {"messages": LOCAL_MESSAGES})
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / LOCAL_PACKAGE / "local_bus.py"
    module.write_text(textwrap.dedent(f"""\
        import sys
        from mycelium_mono import MessageHandler, routing_config
        from {LOCAL_PACKAGE}.messages import Swap

        def build():
            class Local(MessageHandler[Swap]):
                def __init__(self):
                    self.seen = []

                def handle(self, swap):
                    self.seen.append(swap.amount)

            frame_locals = type(sys._getframe().f_locals).__name__

            @routing_config
            class Bus:
                Swap = [Local]

            return Bus(Local()), frame_locals
        """))
    try:
        from importlib import import_module

        bus, frame_locals = import_module(f"{LOCAL_PACKAGE}.local_bus").build()
        swap_type = import_module(f"{LOCAL_PACKAGE}.messages").Swap
        bus.emit_swap(swap_type(pool=bytes(20), amount=7))
    finally:
        forget_modules(LOCAL_PACKAGE)
    assert bus.local.seen == [7]
    assert frame_locals == ("FrameLocalsProxy" if sys.version_info >= (3, 13) else "dict")


CROSS_PACKAGE = "mm_xver"
IMPORT_UNDER_HOOK = f"""
import mycelium_mono
from mycelium_mono.routing.hook import import_records
with mycelium_mono.install_import_hook(packages=["{CROSS_PACKAGE}"]):
    import {CROSS_PACKAGE}.routing
record = import_records()["{CROSS_PACKAGE}.routing"]
print(record.outcome.name, record.cache_path)
"""


@pytest.fixture(scope="module")
def noxfile() -> ModuleType:
    return helpers_modules.noxfile()


def test_each_python_writes_its_own_cache_file_and_hits_only_that_one(
    tmp_path: Path, noxfile: ModuleType
) -> None:
    # Every supported Python imports one routing module under the hook, twice, in turn: each
    # rewrites once into a file named by its own cache tag, and then hits that file, although
    # the other versions wrote theirs beside it in between.
    write_package(tmp_path, CROSS_PACKAGE, {"messages": MESSAGES, "handlers": HANDLERS,
                                            "routing": ROUTING})
    # typing_extensions is this library's one dependency; pure Python, so one copy serves all.
    shared = os.pathsep.join([str(tmp_path), str(ROOT),
                              str(Path(typing_extensions.__file__).parent)])
    env = {**os.environ, "PYTHONPATH": shared}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    outcomes: dict[str, list[tuple[str, str]]] = {}
    for _round in range(2):
        for version in noxfile.VERSIONS:
            found = noxfile.find_interpreter(version)
            assert isinstance(found, noxfile.Interpreter), found.message()
            done = subprocess.run([found.path, "-c", IMPORT_UNDER_HOOK], env=env,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stderr
            outcome, path = done.stdout.split()
            outcomes.setdefault(version, []).append((outcome, os.path.basename(path)))
    for version in noxfile.VERSIONS:
        own = f"routing.cpython-{version.replace('.', '')}.mycelium.pyc"
        assert outcomes[version] == [("REWRITTEN", own), ("CACHE_HIT", own)]
