"""Every ```python block of README.md runs here, as written, so an example that stops working
fails the suite.

How a block is named: an HTML comment ``<!-- example: NAME -->`` on the line right before its
opening fence (GitHub and PyPI do not render it). NAME is the block's identity; ``EXAMPLES``
below lists every name in README order with how that block is executed. A ```python block
without a marker, a marker this file does not know, or a known block that went missing fails
``test_every_python_block_is_known``: a new example cannot land untested. (A block that is not
Python is checked only when it carries a marker: ``tour-check``.)

What a block says it does is checked too. Its stdout, line for line, must be what its
comments state:

- ``print(...)  # TEXT`` prints the line TEXT;
- ``...  # prints "TEXT" [once | twice | N times]`` prints TEXT that many times (default once).

In TEXT, ``...`` matches anything, and a duration (``258 ns``, ``1.22 µs``) matches any
duration: the README shows one run's numbers. A block that states nothing must print nothing,
and every block must leave stderr empty (a front-page example that warns is broken too).

The blocks:

- ``tour``: the files of one package, ``myapp``; a ``# name.py`` comment at the start of a line
  begins each file. ``tour-main`` (``# main.py``) sits beside the package and installs the
  import hook itself; it is run with ``python main.py``.
- ``tour-generated``: the "What the hook generated" method, compared (whitespace normalised)
  with that method in the real ``python -m mycelium_mono show myapp.routing``, so the README
  cannot drift from the generator.
- ``tour-check`` (not Python: the error a routing mistake gives): the mistake its source line
  shows is made in the tour's routing.py; ``python -m mycelium_mono check myapp/`` must print
  the block, and ``python main.py`` must stop at the import with that RoutingError.
- ``flexible`` and ``latency`` say they use the tour's ``myapp``: they run as scripts beside it.
- ``messages``, ``nats-security``, ``zmq-curve``: self-contained scripts. None of them needs a
  server (the NATS bus is only built, never connected; the CURVE buses never bind).

No block is exempt. Each runs in a fresh temporary directory with ``sys.executable`` and a
bounded timeout.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PACKAGE = "myapp"
TIMEOUT = 60

pytestmark = pytest.mark.multiprocess

EXAMPLES = {
    "tour": "files of the myapp package (run by tour-main)",
    "tour-main": "python main.py beside myapp, under the hook it installs",
    "tour-generated": "compared with `python -m mycelium_mono show myapp.routing`",
    "tour-check": "the mistake it shows, made in myapp/routing.py: `check` prints the block",
    "messages": "script",
    "flexible": "script beside myapp",
    "latency": "script beside myapp",
    "nats-security": "script",
    "zmq-curve": "script; the key files it writes are checked",
}
"""Every ```python block of README.md and every marked block, in order: name → how it runs."""

_MARKER = re.compile(r"<!--\s*example:\s*(?P<name>[\w.-]+)\s*-->")
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    name: str | None
    lineno: int  # of the opening fence, 1-based
    code: str
    python: bool


def readme_blocks() -> list[Block]:
    """The ```python blocks and the marked blocks of README.md in order, with their markers."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, info = opened["fence"], opened["info"].lower()
        end = i + 1
        while end < len(lines) and not re.match(
            rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]
        ):
            end += 1
        python = info in {"python", "py", "python3", "py3"}
        marker = _MARKER.fullmatch(lines[i - 1].strip()) if i else None
        if python or marker:
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(marker["name"] if marker else None, i + 1, code, python))
        i = end + 1
    return blocks


def block(name: str) -> str:
    found = [b for b in readme_blocks() if b.name == name]
    assert len(found) == 1, f"README.md has {len(found)} blocks marked <!-- example: {name} -->"
    return found[0].code


def tour_files() -> dict[str, str]:
    """The tour block split into its files: ``# messages.py — ...`` starts messages.py."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in block("tour").splitlines(keepends=True):
        header = re.match(r"# (\w+\.py)\b", line)
        if header:
            current = files.setdefault(header[1], [])
        assert current is not None, f"the tour block must begin with a `# name.py` line: {line!r}"
        current.append(line)
    return {name: "".join(body) for name, body in files.items()}


# -- what a block says it prints --------------------------------------------------------------

_DURATION = r"\d+(?:\.\d+)?\s?(?:ns|µs|us|ms|s)\b"
_TIMES = {None: 1, "once": 1, "twice": 2}


def stated_output(code: str) -> list[str]:
    """The lines the block's comments say it prints, in order (see the module docstring)."""
    expected: list[str] = []
    for line in code.splitlines():
        prints = re.search(r'#\s*prints\s+"(?P<text>[^"]*)"(?:\s+(?P<n>once|twice|\d+ times))?',
                           line)
        if prints:
            n = prints["n"]
            count = _TIMES[n] if n in _TIMES else int(n.split()[0])
            expected += [prints["text"]] * count
            continue
        call = re.match(r"\s*print\(.*\)\s*#\s?(?P<text>.+)$", line)
        if call:
            expected.append(call["text"].strip())
    return expected


def _line_pattern(text: str) -> re.Pattern[str]:
    parts = re.split(rf"(\.\.\.|{_DURATION})", text)
    regex = "".join(
        ".*" if part == "..." else _DURATION if re.fullmatch(_DURATION, part) else re.escape(part)
        for part in parts
    )
    return re.compile(regex)


def assert_prints_what_it_states(name: str, code: str, stdout: str) -> None:
    expected = stated_output(code)
    got = stdout.splitlines()
    mismatch = len(got) != len(expected) or any(
        not _line_pattern(e).fullmatch(g) for e, g in zip(expected, got, strict=False)
    )
    stated = "\n  ".join(expected or ["(nothing)"])
    printed = "\n  ".join(got or ["(nothing)"])
    assert not mismatch, (
        f"README example {name!r} does not print what its comments say\n"
        f"stated:\n  {stated}\nprinted:\n  {printed}"
    )


# -- running blocks ---------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """This environment minus what would change where Python looks or what the hook does."""
    drop = {"PYTHONPATH", "PYTHONSAFEPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX",
            "PYTHONSTARTUP", "PYTHONDEVMODE", "PYTHONWARNINGS", "NO_COLOR"}
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith("MYCELIUM_")}
    env.update(extra)
    return env


def run(name: str, argv: list[str], cwd: Path, *, returncode: int = 0, stderr_ok: bool = False,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run([sys.executable, *argv], cwd=cwd, env=_env(**(env or {})),
                                capture_output=True, text=True, encoding="utf-8",
                                timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"README example {name!r} did not end within {TIMEOUT} s (an example must "
                    f"end by itself)\nstdout:\n{exc.stdout!r}\nstderr:\n{exc.stderr!r}")
    assert result.returncode == returncode, (
        f"README example {name!r} exited {result.returncode}, not {returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    )
    assert stderr_ok or result.stderr == "", (
        f"README example {name!r} wrote to stderr:\n{result.stderr}")
    return result


def run_script(name: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    code = block(name)
    script = cwd / f"example_{name.replace('-', '_')}.py"
    script.write_text(code, encoding="utf-8")
    result = run(name, [str(script)], cwd, env=env)
    assert_prints_what_it_states(name, code, result.stdout)
    return result


@pytest.fixture
def tour_app(tmp_path: Path) -> Path:
    """A directory holding the tour's ``myapp`` package (its files from the README), and main.py."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    files = tour_files()
    assert sorted(files) == ["messages.py", "routing.py", "services.py"], sorted(files)
    for filename, source in files.items():
        (package / filename).write_text(source, encoding="utf-8")
    main = block("tour-main")
    assert main.startswith("# main.py\n"), "the tour's main block must begin with `# main.py`"
    (tmp_path / "main.py").write_text(main, encoding="utf-8")
    return tmp_path


# -- the tests --------------------------------------------------------------------------------


def test_every_python_block_is_known() -> None:
    blocks = readme_blocks()
    unnamed = [b.lineno for b in blocks if b.name is None]  # only Python blocks can be
    assert not unnamed, (
        f"README.md has ```python blocks without a marker at lines {unnamed}\n"
        "help: put `<!-- example: NAME -->` on the line before the fence and add NAME to "
        "EXAMPLES in tests/test_readme_examples.py, with a test that runs it"
    )
    names = [b.name for b in blocks]
    assert names == list(EXAMPLES), (
        f"README.md's examples are {names}, this file runs {list(EXAMPLES)}\n"
        "help: every ```python block needs a test here; a removed block is removed from "
        "EXAMPLES"
    )


def test_stated_output_parser() -> None:
    # The checker itself: it must not pass a block by reading no expectation from it.
    code = 'print(x)  # a ..., b\nrun()  # prints "done" twice\nprint(r)   # 2 samples: 5 ns\n'
    assert stated_output(code) == ["a ..., b", "done", "done", "2 samples: 5 ns"]
    assert_prints_what_it_states("parser", code, "a 1, b\ndone\ndone\n2 samples: 1.2 µs\n")
    with pytest.raises(AssertionError, match="does not print what its comments say"):
        assert_prints_what_it_states("parser", code, "a 1, b\ndone\n2 samples: 1 ns\n")


def test_tour_main_runs_under_the_hook_and_the_bus_delivers(tour_app: Path) -> None:
    result = run("tour-main", ["main.py"], tour_app)
    # "stored order 10" is DatabaseLogger's: the swap went detector → signal → execution →
    # order → background, every hop through the generated bus.
    assert_prints_what_it_states("tour-main", block("tour-main"), result.stdout)
    assert result.stdout.count("stored order") == 2, result.stdout
    cached = tour_app / PACKAGE / "__pycache__" / (
        f"routing.{sys.implementation.cache_tag}.mycelium.pyc")
    assert cached.is_file(), (
        f"main.py ran, but the import hook left no {cached.name}: the bus was not built by "
        f"the hook\n{sorted(p.name for p in cached.parent.glob('*'))}"
    )


def _method(source: str, name: str) -> list[str]:
    """``def name(...)`` and its body out of ``source``, dedented, blank lines dropped."""
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(rf"\s*(?:async\s+)?def {re.escape(name)}\(", line)), None)
    assert start is not None, f"no `def {name}(` in:\n{source}"
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return [line.rstrip() for line in textwrap.dedent("\n".join(body)).splitlines()
            if line.strip()]


def test_tour_generated_code_is_what_show_prints(tour_app: Path) -> None:
    shown = block("tour-generated")
    method = re.match(r"\s*(?:async\s+)?def (\w+)\(", shown)
    assert method, f"the tour-generated block must be a method:\n{shown}"
    result = run("tour-generated", ["-m", "mycelium_mono", "show", f"{PACKAGE}.routing"],
                 tour_app)
    readme, real = _method(shown, method[1]), _method(result.stdout, method[1])
    assert readme == real, (
        "README's 'What the hook generated' differs from `mycelium-mono show "
        f"{PACKAGE}.routing`\nREADME:\n" + "\n".join(readme) + "\nshow:\n" + "\n".join(real)
    )


def test_tour_check_output_is_what_check_prints(tour_app: Path) -> None:
    shown = block("tour-check").splitlines()
    header = re.match(r"(?P<path>[\w/]+\.py):\d+:\d+: error\[(?P<code>E\d+)\]", shown[0])
    assert header, f"tour-check must start like `path:line:col: error[E....]`:\n{shown[0]}"
    sources = [m[1] for m in (re.match(r"\d+ \| (.*)$", line) for line in shown) if m]
    assert sources, f"tour-check shows no `N | source` line:\n{shown}"
    bad_line = sources[0]
    assignment = re.match(r"\s*\w+ =", bad_line)
    assert assignment, f"tour-check's source line is not a routing entry: {bad_line!r}"
    target = assignment[0]
    routing = tour_app / header["path"]
    good = routing.read_text(encoding="utf-8")
    lines = [line for line in good.splitlines() if line.startswith(target)]
    assert len(lines) == 1, f"routing.py has no single `{target.strip()}` line to break"
    routing.write_text(good.replace(lines[0], bad_line), encoding="utf-8")

    checked = run("tour-check", ["-m", "mycelium_mono", "check", f"{PACKAGE}/"], tour_app,
                  returncode=1)
    printed = [line.rstrip() for line in checked.stdout.splitlines()]
    assert printed[: len(shown)] == [line.rstrip() for line in shown], (
        "README's routing-mistake block differs from `mycelium-mono check myapp/`\nREADME:\n"
        + "\n".join(shown) + "\ncheck:\n" + checked.stdout
    )
    # "stops the import": main.py gets the same error as a RoutingError, before any emit.
    imported = run("tour-check", ["main.py"], tour_app, returncode=1, stderr_ok=True)
    assert f"RoutingError: [{header['code']}]" in imported.stderr, imported.stderr
    assert imported.stdout == "", imported.stdout


def test_messages_example(tmp_path: Path) -> None:
    run_script("messages", tmp_path)


def test_flexible_example_runs_the_tour_services_and_ends(tour_app: Path) -> None:
    result = run_script("flexible", tour_app)
    assert result.stdout.count("stored order") == 3, result.stdout


def test_latency_example(tour_app: Path) -> None:
    run_script("latency", tour_app)


def test_nats_security_example(tmp_path: Path) -> None:
    run_script("nats-security", tmp_path)


def test_zmq_curve_example_writes_the_keys_it_says(tmp_path: Path) -> None:
    # The block's tempfile.mkdtemp() lands under TMPDIR: here, so its files can be checked.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run_script("zmq-curve", tmp_path, TMPDIR=str(scratch))
    (root,) = scratch.iterdir()
    public = ["adapter/adapter.key", "strategy/strategy.key",
              "adapter/allowed/strategy.key", "strategy/adapter.key"]
    secret = ["adapter/adapter.key_secret", "strategy/strategy.key_secret"]
    for rel in public + secret:
        assert (root / rel).is_file(), f"{rel} missing: {sorted(map(str, root.rglob('*')))}"
    for rel in secret:
        mode = stat.S_IMODE((root / rel).stat().st_mode)
        assert mode == 0o600, f"{rel} has mode {mode:o}; the README says 0600"
