"""A stranger attacks the import hook's on-disk cache with a smart farm (soil readings,
irrigation commands) and real child processes: cold-cache stampedes, writers SIGKILLed at
seeded points, same-size edits with the old mtime put back, read-only trees, bytecode
environment variables, zip archives, namespace packages, two Pythons on one cache directory,
reloads and a hook installed twice or late.

Every check compares the bus with hand-written calls of the handlers in route order
(``tests/cache9_app/pkgs/cache9farm/drive.py``), run in the same child.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mycelium_mono.routing.cache import cache_path

APP = Path(__file__).parent / "cache9_app"
CHILD = APP / "child.py"
ROUTE_ORDER = ["log", "planner", "frost"]
JOURNAL_START = ["log:1:250", "plan:1", "valve:1:40", "log:2:610", "frost:2"]
REPO = Path(__file__).resolve().parents[1]


def _env(**changes: str | None) -> dict[str, str]:
    # The test machine exports PYTHONDONTWRITEBYTECODE=1: these children must write.
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"}}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def spawn(mode: str, roots: Sequence[Path | str], order: Sequence[str] = ROUTE_ORDER, *extra: str,
          python: str = sys.executable, prefix: Sequence[str] = (),
          **env: str | None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, python, str(CHILD), mode, os.pathsep.join(map(str, roots)),
         json.dumps(list(order)), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env))


def child(mode: str, roots: Sequence[Path | str], order: Sequence[str] = ROUTE_ORDER,
          *extra: str, **kwargs: Any) -> dict[str, Any]:
    proc = spawn(mode, roots, order, *extra, **kwargs)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def assert_like_by_hand(result: dict[str, Any]) -> None:
    assert result["bus"] == result["hand"], result
    assert len(result["bus"]) >= 8


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Path]:
    """A fresh copy of tests/cache9_app/pkgs/cache9farm; returns the directory holding it."""
    shutil.copytree(APP / "pkgs" / "cache9farm", tmp_path / "cache9farm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    yield tmp_path


def routing_cache(root: Path, tag: str | None = None) -> Path:
    path = cache_path(str(root / "cache9farm" / "routing.py"))
    assert path is not None
    if tag is not None:
        path = path.replace(sys.implementation.cache_tag, tag)
    return Path(path)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.mycelium.pyc.*"))


# --- many processes, killed processes, torn files ---------------------------------------------


def test_eight_cold_processes_at_once_each_get_the_hand_written_bus_and_one_whole_file(
        farm: Path) -> None:
    routing = farm / "cache9farm" / "routing.py"
    original = routing.read_text()
    for round_number in range(2):
        routing.write_text(f"{original}# round {round_number}\n")  # cold for all eight
        procs = [spawn("import", [farm]) for _ in range(8)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
        for result in results:
            assert_like_by_hand(result)
            assert result["bus"][:5] == JOURNAL_START
            assert result["outcome"] in {"REWRITTEN", "CACHE_HIT"}
            assert all(kind == "inlined" for kind in result["notes"].values()), result["notes"]
            assert result["guard"] == []
        assert leftovers(farm) == []
        assert child("import", [farm])["outcome"] == "CACHE_HIT"


def test_a_writer_sigkilled_at_seeded_points_leaves_nothing_the_next_import_trusts_or_keeps(
        farm: Path) -> None:
    routing = farm / "cache9farm" / "routing.py"
    original = routing.read_text()
    for seed in range(6):
        routing.write_text(f"{original}# seed {seed}\n")
        killed = spawn("kill", [farm], ROUTE_ORDER, str(seed))
        _, err = killed.communicate(timeout=60)
        assert killed.returncode == -9, err
        after = child("import", [farm])
        assert_like_by_hand(after)
        # A kill after the replace left a whole, current file; anything earlier left the old
        # file (another round's source) or none: never a torn file at the final path.
        assert after["outcome"] in {"CACHE_HIT", "REWRITTEN"}
        if after["outcome"] == "REWRITTEN":
            assert "source changed" in after["describe"] or "no cache file" in after["describe"]
        # The killed writer's temporary file used to stay until `cache clean`: one more per
        # crash. The next write sweeps files of writers that are gone.
        assert leftovers(farm) == [], f"seed {seed}"


def test_a_torn_or_flipped_cache_file_is_detected_named_and_rewritten(farm: Path) -> None:
    child("import", [farm])
    path = routing_cache(farm)
    whole = path.read_bytes()
    rng = random.Random(9)
    damaged = [whole[: rng.randrange(len(whole))] for _ in range(2)]
    flip = rng.randrange(60, len(whole))
    damaged.append(whole[:flip] + bytes([whole[flip] ^ 0x10]) + whole[flip + 1:])
    for data in damaged:
        path.write_bytes(data)
        result = child("import", [farm])
        assert_like_by_hand(result)
        assert result["outcome"] == "REWRITTEN"
        assert ("cache file corrupt (checksum mismatch)" in result["describe"]
                or "file shorter than its header" in result["describe"]), result["describe"]
        assert path.read_bytes() == whole  # rewritten: the same bytes a clean rewrite makes
        assert child("import", [farm])["outcome"] == "CACHE_HIT"


# --- staleness: contents, never mtimes --------------------------------------------------------


def _same_size_edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` (same length) and put the old mtime back: to an mtime-and-size
    check (importlib's .pyc) the file did not change."""
    assert len(old) == len(new)
    before = path.stat()
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_a_same_size_routing_edit_with_the_old_mtime_is_not_served_from_the_cache(
        farm: Path) -> None:
    assert child("import", [farm])["outcome"] == "REWRITTEN"
    _same_size_edit(farm / "cache9farm" / "routing.py",
                    "[MoistureLog, Planner, Valves]", "[Planner, MoistureLog, Valves]")
    result = child("import", [farm], ["planner", "log", "frost"])
    assert_like_by_hand(result)
    assert result["bus"][0] == "plan:1"
    assert result["describe"] == ("cache9farm.routing: rewritten (cache miss: source changed; "
                                  "written)")


def test_a_same_size_handler_edit_behind_a_stale_standard_pyc_is_called_not_inlined(
        farm: Path) -> None:
    # The handler's own .pyc (mtime and size) still holds the old body, so Python runs it;
    # the file holds the new one. Inlining the file would make the bus differ from the calls.
    assert child("import", [farm])["outcome"] == "REWRITTEN"
    _same_size_edit(farm / "cache9farm" / "handlers.py",
                    'f"plan:{msg.sensor_id}"', 'f"PLAN:{msg.sensor_id}"')
    for expected in ("REWRITTEN", "CACHE_HIT"):
        result = child("import", [farm])
        assert_like_by_hand(result)
        assert result["bus"][:5] == JOURNAL_START  # the code Python loaded: the old body
        assert result["outcome"] == expected
        assert result["notes"]["planner.handle"] == "call"
        assert result["notes"]["moisture_log.handle"] == "inlined"


# --- where the cache cannot be written, or is told not to be ----------------------------------


def test_a_read_only_package_directory_imports_and_reuses_a_cache_written_before(
        farm: Path) -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv, "this test drops DAC capabilities with setpriv (util-linux): install it"
    # The child runs as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so the mode bits
    # hold it as they hold any user. (Run as `nobody` it could not start the pyenv Pythons of
    # this machine at all: they live under /root, mode 700, and CI's 3.12 session failed.)
    held_to_modes = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    package = farm / "cache9farm"
    os.chmod(package, 0o555)
    try:
        first = child("import", [farm], prefix=held_to_modes)
        assert_like_by_hand(first)
        assert first["outcome"] == "REWRITTEN"
        assert "not written: the cache directory is not writable" in first["describe"]
        assert "Permission denied" in first["describe"]
        assert not routing_cache(farm).exists()
        child("import", [farm])  # root with its capabilities writes the cache
        assert routing_cache(farm).exists()
        os.chmod(routing_cache(farm).parent, 0o555)  # the whole tree read-only again
        second = child("import", [farm], prefix=held_to_modes)
        assert_like_by_hand(second)
        assert second["outcome"] == "CACHE_HIT"
    finally:
        for directory in (routing_cache(farm).parent, package):
            if directory.exists():
                os.chmod(directory, 0o755)


def test_the_bytecode_environment_variables_are_honoured_by_real_children(farm: Path) -> None:
    off = child("import", [farm], PYTHONDONTWRITEBYTECODE="1")
    assert_like_by_hand(off)
    assert off["describe"].endswith("not written: sys.dont_write_bytecode is set)")
    assert not routing_cache(farm).exists()
    prefix = farm / "prefix"
    results = [child("import", [farm], PYTHONPYCACHEPREFIX=str(prefix)) for _ in range(2)]
    for result in results:
        assert_like_by_hand(result)
    assert [r["outcome"] for r in results] == ["REWRITTEN", "CACHE_HIT"]
    written = sorted(p.relative_to(prefix) for p in prefix.rglob("routing.*.mycelium.pyc"))
    assert len(written) == 1 and str(written[0]).startswith(str(farm).lstrip(os.sep))
    assert not routing_cache(farm).exists()


# --- zip archives and namespace packages -----------------------------------------------------


def _zip(source: Path, archive: Path, package: str) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((source / package).rglob("*.py")):
            zf.write(path, path.relative_to(source).as_posix())


def test_a_routing_module_inside_a_zip_is_built_at_run_time_and_routes_as_by_hand(
        farm: Path) -> None:
    archive = farm / "farm.zip"
    _zip(farm, archive, "cache9farm")
    shutil.rmtree(farm / "cache9farm")
    result = child("import", [archive])
    assert_like_by_hand(result)
    assert result["origin"] == "runtime" and result["outcome"] is None
    assert not list(farm.rglob("*.mycelium.pyc*"))
    # doctor said "is not a Python source file ... help: routing modules are .py files".
    doctor = subprocess.run([sys.executable, "-m", "mycelium_mono", "doctor", "--no-timing",
                             "cache9farm.routing"], capture_output=True, text=True, timeout=60,
                            cwd=farm, env=_env(PYTHONPATH=str(archive)), check=False)
    assert doctor.returncode == 2, doctor.stdout + doctor.stderr
    assert (f"module 'cache9farm.routing' is inside an archive (origin: {archive}"
            f"{os.sep}cache9farm{os.sep}routing.py)") in doctor.stderr, doctor.stderr
    assert "help: run it on the unpacked source tree" in doctor.stderr


def test_handlers_inlined_from_a_zip_that_is_rebuilt_invalidate_the_cache(farm: Path) -> None:
    # routing.py on disk, its handlers in a zip (a vendored library): the archive is a
    # dependency. It was not watched: the cache stayed "current" after the zip changed, the
    # bus's guard refused its inlined bodies on every run and doctor blamed a replaced method.
    lib = farm / "lib"
    (lib / "cache9zlib").mkdir(parents=True)
    (lib / "cache9zlib" / "__init__.py").write_text("")
    shutil.move(farm / "cache9farm" / "handlers.py", lib / "cache9zlib" / "handlers.py")
    for name in ("routing.py", "drive.py"):
        module = farm / "cache9farm" / name
        module.write_text(module.read_text()
                          .replace("cache9farm.handlers import", "cache9zlib.handlers import")
                          .replace("cache9farm import handlers", "cache9zlib import handlers"))
    archive = farm / "handlers.zip"
    _zip(lib, archive, "cache9zlib")
    roots = [farm, archive]
    first = child("import", roots)
    assert_like_by_hand(first)
    assert first["notes"]["planner.handle"] == "inlined" and first["guard"] == []
    assert child("import", roots)["outcome"] == "CACHE_HIT"
    text = (lib / "cache9zlib" / "handlers.py").read_text()
    (lib / "cache9zlib" / "handlers.py").write_text(text.replace('"plan:', '"PLAN:'))
    archive.unlink()
    _zip(lib, archive, "cache9zlib")
    after = child("import", roots)
    assert_like_by_hand(after)
    assert after["bus"][1] == "PLAN:1"
    assert after["outcome"] == "REWRITTEN", after["describe"]
    assert f"a handler or message module changed: {archive}" in after["describe"]
    assert after["guard"] == [], after["guard"]  # the inlined path is taken again
    assert child("import", roots)["outcome"] == "CACHE_HIT"


def test_a_routing_module_in_a_namespace_package_is_rewritten_then_cached(farm: Path) -> None:
    (farm / "cache9farm" / "__init__.py").unlink()
    results = [child("import", [farm]) for _ in range(2)]
    for result in results:
        assert_like_by_hand(result)
        assert result["origin"] == "import hook" and result["guard"] == []
    assert [r["outcome"] for r in results] == ["REWRITTEN", "CACHE_HIT"]


# --- two Pythons, one cache directory ---------------------------------------------------------


def _python(version: str) -> str:
    """python3.X from pyenv (as `make test` finds it), else PATH; run before it is trusted (a
    pyenv shim for a version that is installed but not selected exits 127)."""
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    candidates = sorted((str(p) for root in roots if root
                         for p in Path(root, "versions").glob(f"{version}.*/bin/python{version}")),
                        reverse=True)
    on_path = shutil.which(f"python{version}")
    for candidate in [*candidates, *([on_path] if on_path else [])]:
        ran = subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30,
                             check=False)
        if ran.returncode == 0:
            return candidate
    raise AssertionError(f"python{version} not found under pyenv or on PATH: "
                         f"`pyenv install {version}`")


def test_two_pythons_alternating_on_one_cache_directory_each_keep_their_own_file(
        farm: Path) -> None:
    other = _python("3.12" if sys.version_info[:2] != (3, 12) else "3.13")
    # The other Python has no venv: it finds the library (and typing_extensions, its one
    # dependency) through PYTHONPATH.
    import typing_extensions
    deps = farm / "deps"
    deps.mkdir()
    shutil.copy(typing_extensions.__file__, deps / "typing_extensions.py")
    pythonpath = os.pathsep.join([str(REPO), str(deps)])
    outcomes = []
    tags = []
    for python in [sys.executable, other, sys.executable, other]:
        result = child("import", [farm], python=python, PYTHONPATH=pythonpath)
        assert_like_by_hand(result)
        assert result["guard"] == []
        outcomes.append(result["outcome"])
        tags.append(result["python"])
    assert outcomes == ["REWRITTEN", "REWRITTEN", "CACHE_HIT", "CACHE_HIT"]
    mine, theirs = routing_cache(farm), routing_cache(farm, tags[1])
    assert mine.exists() and theirs.exists() and mine != theirs
    # `cache info` judges its own Python's file; the other one is current for its Python, and
    # was reported "stale (written by another Python version)".
    info = subprocess.run([sys.executable, "-m", "mycelium_mono", "cache", "info", str(farm)],
                          capture_output=True, text=True, timeout=60, env=_env(), cwd=farm,
                          check=False)
    assert info.returncode == 0, info.stderr
    assert f"{mine}  [current]" in info.stdout, info.stdout
    assert (f"{theirs}  [for another Python ({tags[1]}): run `mycelium-mono cache info` with "
            "that Python to judge it]") in info.stdout, info.stdout


# --- reloads and the hook installed twice or late ---------------------------------------------


def test_reloading_a_handler_module_says_why_the_old_bus_refuses_its_new_classes(
        farm: Path) -> None:
    result = child("reload", [farm])
    # "must be a MoistureLog instance, got MoistureLog" told nothing.
    assert result["stale_bus_error"] == (
        "FarmBus() argument 'moisture_log' must be a MoistureLog instance, got another class "
        "object named cache9farm.handlers.MoistureLog: cache9farm.handlers was reloaded (or "
        "re-run) after FarmBus was built\n"
        "help: importlib.reload(cache9farm.routing) too, so the bus routes to the new classes, "
        "or build the services from the classes it was built with")
    # Reloading the routing module too gives a bus of the new classes and the edited body.
    assert_like_by_hand(result)
    assert result["bus"][1] == "PLAN:1"
    assert "a handler or message module changed" in result["describe"]
    assert result["guard"] == []


def test_a_hook_installed_after_the_import_warns_and_a_reload_goes_through_it(
        farm: Path) -> None:
    result = child("after", [farm])
    assert result["early_origin"] == "runtime"
    assert len(result["warnings"]) == 1
    assert "cache9farm.routing" in result["warnings"][0]
    assert "was imported before the mycelium-mono import hook was installed" in (
        result["warnings"][0])
    assert_like_by_hand(result)
    assert result["origin"] == "import hook" and result["outcome"] == "REWRITTEN"


def test_a_hook_installed_twice_uses_the_latest_options_until_it_is_uninstalled(
        farm: Path) -> None:
    result = child("twice", [farm])
    assert result["first_notes"] == ["inlined"]
    assert set(result["notes"].values()) == {"call"}
    assert_like_by_hand(result)
    assert "hook options changed: inline=True -> inline=False" in result["describe"]
