"""A stranger attacks the import hook's cache: does a cached bus ever run other code than a
fresh rewrite (or hand-written calls) would?

Every test builds a small package under ``tmp_path`` and imports it in fresh interpreters,
with bytecode writing on (the test machine exports PYTHONDONTWRITEBYTECODE=1), so the second
import really reads the hook's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

MESSAGES = """
from mycelium_mono import message, U64

@message(type_id=51, topic="t")
class Ping:
    n: U64
"""

LOG = """
LOG: list[object] = []
"""

ROUTING = """
from mycelium_mono import routing_config
from app.messages import Ping  # noqa: F401
from app.services import Risk

@routing_config(inline={inline})
class Bus:
    Ping = [Risk]
"""

# A child that imports the bus under the hook, emits once and prints what ran and how.
CHILD = """
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("error", RuntimeWarning)   # a coroutine never awaited fails loudly
import mycelium_mono
from mycelium_mono.routing.hook import import_records
mycelium_mono.install_import_hook(["app"])
try:
    from app.routing import Bus
except Exception as exc:
    print(json.dumps({"import_error": type(exc).__name__ + ": " + str(exc).splitlines()[0]}))
    raise SystemExit(0)
from app.services import Risk
from app.messages import Ping
from app.log import LOG
try:
    Bus(risk=Risk()).emit_ping(Ping(n=3))
    error = None
except BaseException as exc:
    error = repr(exc)
print(json.dumps({
    "log": LOG, "error": error,
    "outcome": import_records()["app.routing"].outcome.name,
    "miss": str(import_records()["app.routing"].miss),
    "calls": Bus.__mycelium_calls__,
}))
"""


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "app" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def app(root: Path, services: str, *, inline: bool = False,
        extra: dict[str, str] | None = None) -> None:
    write_tree(root, {"__init__.py": "", "messages.py": MESSAGES, "log.py": LOG,
                      "routing.py": ROUTING.format(inline=inline), "services.py": services,
                      **(extra or {})})


def child(root: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environment.update(env or {})
    done = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True,
                          text=True, env=environment, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fresh(root: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    """What a rewrite without any cache gives (the answer the cache must reproduce)."""
    for cache in root.rglob("*.mycelium.pyc"):
        cache.unlink()
    return child(root, env)


def without_outcome(result: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in result.items() if k not in ("outcome", "miss")}


ACCELERATED = """
try:
    from app.fast import Risk
except ImportError:
    from app.slow import Risk
"""

SLOW = """
from mycelium_mono import MessageHandler
from app.log import LOG
from app.messages import Ping

class Risk(MessageHandler[Ping]):
    def handle(self, msg: Ping) -> None:
        LOG.append(["slow", msg.n])
"""

FAST = """
from mycelium_mono import handles
from app.log import LOG
from app.messages import Ping

class Risk:
    @handles(Ping)
    def on_ping(self, msg: Ping) -> None:
        LOG.append(["fast", msg.n])
"""


def test_an_optional_accelerator_installed_after_the_cache_was_written_is_the_one_called(
        tmp_path: Path) -> None:
    """services.py picks `app.fast.Risk` when it imports, else `app.slow.Risk`. The cache was
    written while only slow existed (its handler: `handle`); then fast appears (its handler:
    `@handles(Ping) on_ping`). No file the cache recorded changed, yet the class the routing
    module routes is another one: the cached bus called `risk.handle`, which fast's Risk does
    not have (AttributeError inside the emit's ExceptionGroup), where a rewrite calls on_ping."""
    app(tmp_path, ACCELERATED, extra={"slow.py": SLOW})
    first = child(tmp_path)
    assert first["log"] == [["slow", 3]] and first["outcome"] == "REWRITTEN"
    assert child(tmp_path)["outcome"] == "CACHE_HIT"
    write_tree(tmp_path, {"fast.py": FAST})
    after = child(tmp_path)
    assert after["error"] is None, after
    assert after["log"] == [["fast", 3]]
    assert after["miss"] == "an imported name means another class now: app.services.Risk"
    assert without_outcome(after) == without_outcome(fresh(tmp_path))


ENV_CHOSEN = """
import os
from mycelium_mono import MessageHandler
from app.log import LOG
from app.messages import Ping

if os.environ.get("APP_RISK") == "async":
    class Risk(MessageHandler[Ping]):
        async def handle(self, msg: Ping) -> None:
            LOG.append(["async", msg.n])
elif os.environ.get("APP_RISK") == "marked":
    from mycelium_mono import handles

    class Risk:  # type: ignore[no-redef]
        @handles(Ping)
        def on_ping(self, msg: Ping) -> None:
            LOG.append(["marked", msg.n])
else:
    class Risk(MessageHandler[Ping]):  # type: ignore[no-redef]
        def handle(self, msg: Ping) -> None:
            LOG.append(["sync", msg.n])
"""


def test_a_handler_module_that_defines_another_class_at_import_is_not_served_a_stale_bus(
        tmp_path: Path) -> None:
    """The same services.py defines Risk by configuration. With the cache written for the sync
    handler, the async one (a routing error: E0004 on a sync path) was called like the sync
    one: the coroutine was never awaited and the handler silently did nothing; the marked one
    got `risk.handle` (AttributeError). A cached bus must answer as a rewrite does."""
    app(tmp_path, ENV_CHOSEN)
    assert child(tmp_path)["log"] == [["sync", 3]]
    assert child(tmp_path)["outcome"] == "CACHE_HIT"
    for variant in ("async", "marked"):
        cached = child(tmp_path, {"APP_RISK": variant})
        rewritten = fresh(tmp_path, {"APP_RISK": variant})
        assert without_outcome(cached) == without_outcome(rewritten), variant
        child(tmp_path)  # the sync variant's cache again, for the next variant
    async_result = child(tmp_path, {"APP_RISK": "async"})
    assert "E0004" in str(async_result.get("import_error")), async_result
    assert child(tmp_path, {"APP_RISK": "marked"})["log"] == [["marked", 3]]


def test_a_handler_module_shadowed_on_sys_path_is_not_served_the_old_bus(
        tmp_path: Path) -> None:
    """`app` is found in a second directory placed first on PYTHONPATH-like sys.path: the
    cached files are all unchanged, but `app.services` is another file now."""
    first_root = tmp_path / "one"
    app(first_root, SLOW)
    assert child(first_root)["log"] == [["slow", 3]]
    assert child(first_root)["outcome"] == "CACHE_HIT"
    shadow = tmp_path / "shadow"
    write_tree(shadow, {"services.py": FAST})
    # `app` stays the package of `one` (its routing module and cache), but the handler module
    # is found first in the shadow directory, as a namespace-extending path would do.
    (first_root / "app" / "__init__.py").write_text(
        f"__path__.insert(0, {str(shadow / 'app')!r})\n")
    after = child(first_root)
    assert after["error"] is None, after
    assert after["log"] == [["fast", 3]]
    assert after["miss"] == "an imported name means another class now: app.services.Risk"


ROUTING_WITH_ACCELERATOR = """
from mycelium_mono import routing_config
from app.messages import Ping  # noqa: F401
try:
    from app.fast import Risk
except ImportError:
    from app.slow import Risk

@routing_config
class Bus:
    Ping = [Risk]
"""


def test_a_routing_module_try_import_that_starts_working_is_taken_on_the_next_import(
        tmp_path: Path) -> None:
    """The README: the hook reads `try: from fast import X / except ImportError: ...` as Python
    runs it. Cached while fast was missing, the bus must follow once it is there."""
    app(tmp_path, "", extra={"slow.py": SLOW, "routing.py": ROUTING_WITH_ACCELERATOR,
                             "services.py": ACCELERATED})
    assert child(tmp_path)["log"] == [["slow", 3]]
    assert child(tmp_path)["outcome"] == "CACHE_HIT"
    write_tree(tmp_path, {"fast.py": FAST})
    after = child(tmp_path)
    assert after["error"] is None and after["log"] == [["fast", 3]], after
    assert after["calls"] == {"emit_ping": [["risk", "on_ping"]]}


HELPERS = """
from app.log import LOG

def impl(self, msg):
    LOG.append(["{word}", msg.n])
"""

ASSIGNED = """
from mycelium_mono import MessageHandler
from app import helpers
from app.messages import Ping

class Risk(MessageHandler[Ping]):
    def handle(self, msg: Ping) -> None:
        raise AssertionError("replaced below")

Risk.handle = helpers.impl  # type: ignore[method-assign]
"""

NOTES_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import mycelium_mono
from mycelium_mono.routing.hook import import_records
from mycelium_mono.routing.inline import guard_failures
mycelium_mono.install_import_hook(["app"])
from app.routing import Bus
from app.services import Risk
print(json.dumps({"notes": [n[3] for n in Bus.__mycelium_notes__],
                  "guard": guard_failures(Bus(risk=Risk())),
                  "outcome": import_records()["app.routing"].outcome.name}))
"""


def test_a_method_assigned_from_a_helper_module_is_inlined_from_its_edited_text(
        tmp_path: Path) -> None:
    """`Risk.handle = helpers.impl`: the inlined text comes from helpers.py, a file no class
    of Risk's MRO lives in. After an edit of helpers.py the cache was still used: the guard
    saw the changed code and called it (right result), but the bus stayed un-inlined for good
    while `show` and the notes said "inlined". ("one" -> "three": another size, or Python's
    own .pyc of helpers.py, keyed on mtime seconds and size, would run the old text.)"""
    app(tmp_path, ASSIGNED, inline=True, extra={"helpers.py": HELPERS.format(word="one")})
    assert child(tmp_path)["log"] == [["one", 3]]
    write_tree(tmp_path, {"helpers.py": HELPERS.format(word="three")})
    after = child(tmp_path)
    assert after["log"] == [["three", 3]] and after["outcome"] == "REWRITTEN", after
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", NOTES_CHILD, str(tmp_path)],
                          capture_output=True, text=True, env=environment, timeout=60,
                          check=True)
    state = json.loads(done.stdout)
    assert state == {"notes": ["inlined"], "guard": [], "outcome": "CACHE_HIT"}


ROUTING_WITH_IF = """
import os
from mycelium_mono import routing_config
from app.messages import Ping  # noqa: F401
if os.environ.get("APP_FAST"):
    from app.fast import Risk
else:
    from app.slow import Risk

@routing_config
class Bus:
    Ping = [Risk]
"""


def test_a_routed_name_bound_in_both_branches_of_an_if_never_calls_a_missing_method(
        tmp_path: Path) -> None:
    """The hook reads the routing module before it runs and takes the last branch's binding
    (app.slow.Risk: `handle`); Python ran the first (app.fast.Risk: `on_ping`). The bus called
    `risk.handle` on every emit (AttributeError in an ExceptionGroup), while the same module
    without the hook works. Now the import fails, naming both and how to bind it."""
    app(tmp_path, "from app.slow import Risk\n",
        extra={"slow.py": SLOW, "fast.py": FAST, "routing.py": ROUTING_WITH_IF})
    assert child(tmp_path)["log"] == [["slow", 3]]  # the branch the hook reads: fine
    env = {"APP_FAST": "1"}
    for result in (fresh(tmp_path, env), child(tmp_path, env)):  # rewritten, then cached
        error = str(result.get("import_error"))
        assert error.startswith("TypeError: Bus.emit_ping was generated to call risk.handle "
                                "for Ping, but app.fast.Risk receives it with on_ping"), result



def test_only_a_routing_module_read_through_a_guessed_branch_pays_for_the_creation_check(
        tmp_path: Path) -> None:
    """The check above costs ~140 µs per cached import of a 10-message module: generated
    classes carry it only when the hook guessed an `if` branch (a `try: import / except
    ImportError` it resolves as Python will, and a `with` body, are not guesses)."""
    from mycelium_mono.pytest_plugin import forget_modules
    from mycelium_mono.routing.pipeline import rewrite_module

    app(tmp_path / "plain", SLOW)
    app(tmp_path / "guessed", "", extra={"slow.py": SLOW, "fast.py": FAST,
                                        "routing.py": ROUTING_WITH_IF})
    flags = {}
    for tree in ("plain", "guessed"):
        routing = tmp_path / tree / "app" / "routing.py"
        sys.path.insert(0, str(tmp_path / tree))
        try:
            result = rewrite_module(routing.read_bytes(), str(routing), "app.routing")
        finally:
            sys.path.remove(str(tmp_path / tree))
            forget_modules("app")
        flags[tree] = "__mycelium_check_calls__ = True" in result.generated_source
    assert flags == {"plain": False, "guessed": True}


COPY_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import mycelium_mono
from mycelium_mono.routing.hook import import_records
from mycelium_mono.routing.inline import guard_failures
mycelium_mono.install_import_hook(["app"])
from app.routing import Bus
from app.services import Risk
bus = Bus(risk=Risk())
print(json.dumps({"file": Bus.emit_ping.__code__.co_filename,
                  "guard": guard_failures(bus), "notes": [n[4] for n in Bus.__mycelium_notes__],
                  "outcome": import_records()["app.routing"].outcome.name}))
"""


def test_a_project_copied_with_its_pycache_does_not_run_the_other_trees_bus(
        tmp_path: Path) -> None:
    """`cp -r` of a project (or a container image built from a checkout) carries
    __pycache__ along. The copy's cache hit gave a bus compiled for the original tree: its
    frames named the original's routing.py, its dependency checks watched the original's
    handler files (an edit in the copy went unseen), and its inlined bodies, recorded under
    the original paths, failed the guard in the copy for good (every emit called)."""
    import shutil

    original, copy = tmp_path / "original", tmp_path / "copy"
    app(original, SLOW, inline=True)
    assert child(original)["outcome"] == "REWRITTEN"
    shutil.copytree(original, copy)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    info = subprocess.run([sys.executable, "-m", "mycelium_mono", "cache", "info"], cwd=copy,
                          capture_output=True, text=True, env=environment, timeout=60,
                          check=True).stdout
    assert "[stale (written for the module at another path" in info, info
    done = subprocess.run([sys.executable, "-c", COPY_CHILD, str(copy)], capture_output=True,
                          text=True, env=environment, timeout=60, check=True)
    state = json.loads(done.stdout)
    assert state["file"] == str(copy / "app" / "routing.py"), state
    assert state["guard"] == [], state
    assert all(str(original) not in note for note in state["notes"]), state


RELOAD_CHILD = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
import app.routing   # no hook: @routing_config builds the bus when the class statement runs
before = app.routing.Bus.__mycelium_calls__
path = app.routing.__file__
with open(path) as file:
    text = file.read()
with open(path, "w") as file:
    file.write(text.replace("Ping = [Risk]", "Ping = [Audit, Risk]"))
importlib.reload(app.routing)
print(json.dumps({"before": before, "after": app.routing.Bus.__mycelium_calls__,
                  "origin": app.routing.Bus.__mycelium_origin__}))
"""

ROUTING_TWO = """
from mycelium_mono import routing_config
from app.messages import Ping  # noqa: F401
from app.services import Risk
from app.audit import Audit  # noqa: F401

@routing_config
class Bus:
    Ping = [Risk]
"""

AUDIT = """
from mycelium_mono import handles
from app.log import LOG
from app.messages import Ping

class Audit:
    @handles(Ping)
    def on_ping(self, msg: Ping) -> None:
        LOG.append(["audit", msg.n])
"""


def test_the_runtime_build_of_a_reloaded_routing_module_reads_its_edited_table(
        tmp_path: Path) -> None:
    """Without the hook the decorator reads the routing class's statement from linecache,
    which keeps a file's text until asked to look again: after an edit and
    `importlib.reload`, the old table (risk only) was built and Audit was silently never
    called, while the hook's reload built the new one."""
    app(tmp_path, SLOW, extra={"routing.py": ROUTING_TWO, "audit.py": AUDIT})
    done = subprocess.run([sys.executable, "-c", RELOAD_CHILD, str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=True)
    state = json.loads(done.stdout)
    assert state["origin"] == "runtime"
    assert state["before"] == {"emit_ping": [["risk", "handle"]]}
    assert state["after"] == {"emit_ping": [["audit", "on_ping"], ["risk", "handle"]]}, state


def test_a_package_reached_through_a_symlinked_directory_shares_one_cache(
        tmp_path: Path) -> None:
    """The path in the cache key names the file, not the spelling: a process importing the
    package through a symlink hits the cache the other one wrote (no rewrite ping-pong)."""
    real = tmp_path / "real"
    app(real, SLOW)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert child(real)["outcome"] == "REWRITTEN"
    through_link = child(tmp_path / "link")
    assert through_link["outcome"] == "CACHE_HIT" and through_link["log"] == [["slow", 3]]
    assert child(real)["outcome"] == "CACHE_HIT"


OPTIONAL_SHADOW = """
from mycelium_mono import MessageHandler
from app.log import LOG
from app.messages import Ping
try:
    from app.fancy import repr
except ImportError:
    pass

class Risk(MessageHandler[Ping]):
    def handle(self, msg: Ping) -> None:
        LOG.append(repr(msg.n))
"""

FANCY = """
def repr(value: object) -> str:
    return f"fancy {value}"
"""


def test_an_optional_import_that_shadows_a_builtin_is_called_by_a_cached_inlined_body(
        tmp_path: Path) -> None:
    """`try: from rich import print / except ImportError: pass`, in miniature. Inlined while
    fancy was missing, the body reads `repr` as the builtin; with fancy there, the cached bus
    still called the builtin ('3') while the handler called by hand gives 'fancy 3'. And back:
    inlined with fancy there, then removed, the body read `services.repr` (AttributeError)
    where the call uses the builtin."""
    app(tmp_path, OPTIONAL_SHADOW, inline=True)
    assert child(tmp_path)["log"] == ["3"]
    write_tree(tmp_path, {"fancy.py": FANCY})
    assert child(tmp_path)["log"] == ["fancy 3"]
    assert fresh(tmp_path)["log"] == ["fancy 3"]  # the cache is now written with fancy there
    (tmp_path / "app" / "fancy.py").unlink()
    gone = child(tmp_path)
    assert gone["error"] is None and gone["log"] == ["3"], gone


NS_ROUTING = """
from mycelium_mono import routing_config
from .messages import Ping  # noqa: F401
from .services import Risk

@routing_config
class Bus:
    Ping = [Risk]
"""


def test_check_show_and_stubs_read_a_namespace_package_as_the_hook_imports_it(
        tmp_path: Path) -> None:
    """`ns/sub/` has no __init__.py (a PEP 420 namespace package); its routing module uses
    relative imports. `python -m mycelium_mono run -m ns.sub.routing` runs it under the hook,
    but `check ns/` read the file as a top-level `routing` and reported E0012 ("Empty module
    name") for the `from .messages import ...` that works."""
    sub = tmp_path / "ns" / "sub"
    sub.mkdir(parents=True)
    (sub / "messages.py").write_text(textwrap.dedent(MESSAGES))
    (sub / "log.py").write_text(LOG)
    (sub / "services.py").write_text(textwrap.dedent(SLOW).replace("app.", "ns.sub."))
    (sub / "routing.py").write_text(textwrap.dedent(NS_ROUTING))
    (sub / "main.py").write_text(
        "from ns.sub.routing import Bus\nfrom ns.sub.services import Risk\n"
        "from ns.sub.messages import Ping\nfrom ns.sub.log import LOG\n"
        "Bus(risk=Risk()).emit_ping(Ping(n=2))\nprint(LOG, Bus.__mycelium_origin__)\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mycelium_mono", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)

    ran = cli("run", "--packages", "ns", "-m", "ns.sub.main")
    assert ran.stdout.strip() == "[['slow', 2]] import hook", ran.stderr
    checked = cli("check", "ns/")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ns/sub/routing.py: 1 routing class ok" in checked.stdout
    shown = cli("show", str(Path("ns") / "sub" / "routing.py"))
    assert shown.returncode == 0 and "emit_ping → risk.handle" in shown.stdout, shown.stderr
    stubs = cli("stubs", str(Path("ns") / "sub" / "routing.py"))
    assert stubs.returncode == 0, stubs.stderr
    assert "def emit_ping(self, msg: Ping) -> None" in (sub / "routing.pyi").read_text()


FRAGILE = SLOW + """
import os
if os.environ.get("APP_BREAK"):
    raise RuntimeError("services cannot start: APP_BREAK is set")
"""


def test_a_handler_module_that_raises_on_a_cache_hit_is_reported_as_on_a_first_import(
        tmp_path: Path) -> None:
    """A handler module that raises when imported: a cache hit (which looks the routed
    names up again) fails as a first import does, with the module's own error."""
    app(tmp_path, FRAGILE)
    assert child(tmp_path)["log"] == [["slow", 3]]
    broken = {"APP_BREAK": "1"}
    cached, first = child(tmp_path, broken), fresh(tmp_path, broken)
    assert cached == first, (cached, first)
    assert cached["import_error"] == "RuntimeError: services cannot start: APP_BREAK is set"
