"""The version matrix `make test` runs: ruff once, then mypy --strict and the suite per Python.

    make test                         # = .venv/bin/python -m nox (the default sessions below)
    .venv/bin/python -m nox -l        # the sessions, and which interpreter each one found
    .venv/bin/python -m nox -s tests-3.13 -- -x tests/test_hook.py   # one version, pytest args
    make bench-instructions           # = nox -s instructions: callgrind counts on every version

Each supported Python gets its own session and virtual environment under ``.nox/``. The
interpreter is looked for on PATH first, then under pyenv (``$PYENV_ROOT``, ``pyenv root`` or
``~/.pyenv``, ``versions/3.X.*``), and every candidate is *run* before it is trusted: a pyenv
shim for a version that is installed but not selected is on PATH and exits 127 (measured on
this machine for ``python3.12``). A version found nowhere is a failed session whose message says
how to install it, never a skip: a matrix that silently shrinks to one Python tests nothing.

Virtual environments are reused between runs (``reuse_venv``); the project is reinstalled into
one only when ``pyproject.toml`` or the example's requirements changed since it was last
installed there, so a second ``make test`` spends its time on tests, and a fresh clone builds
everything it needs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYPROJECT = ROOT / "pyproject.toml"
EXAMPLE_REQUIREMENTS = ROOT / "examples" / "bandit" / "requirements.txt"
"""The example's own dependencies: not an extra, since the wheel does not ship the example."""
VERSIONS = ("3.11", "3.12", "3.13")
"""Every Python the project supports; pyproject's classifiers and the README say the same."""
LINTED = ("mycelium_mono", "tests", "benchmarks", "examples", "noxfile.py")
INSTALLED_STAMP = ".mycelium-installed"
"""A file in each venv holding the digest of the pyproject.toml it was installed from."""
_PATCH_DIR = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"

nox.options.sessions = ["lint", *(f"tests-{version}" for version in VERSIONS)]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


@dataclass(frozen=True)
class Interpreter:
    """A Python that ran and reported the wanted version; ``path`` is its real executable."""

    version: str
    path: str


@dataclass(frozen=True)
class Missing:
    """No candidate for ``version`` ran; ``looked`` lists where we looked, for the message."""

    version: str
    looked: tuple[str, ...]

    def message(self) -> str:
        places = "\n".join(f"  - {place}" for place in self.looked) or "  - (nowhere to look)"
        return (
            f"Python {self.version} is required by the test matrix but was not found.\n"
            f"Looked for a working python{self.version} in:\n{places}\n"
            f"help: install it, e.g. `pyenv install {self.version}` (found under "
            f"`pyenv root`/versions without being selected), or your OS package "
            f"(`apt install python{self.version}` from deadsnakes on Debian/Ubuntu), or put a "
            f"python{self.version} on PATH; `nox -s tests-{VERSIONS[0]}` runs one version alone"
        )


def find_interpreter(version: str, path: str | None = None,
                     pyenv_root: Path | None = None) -> Interpreter | Missing:
    """The first working ``python<version>`` on ``path`` (default PATH), then under pyenv."""
    looked: list[str] = []
    for candidate in _candidates(version, path, pyenv_root, looked):
        real = _probe(candidate, version)
        if real is not None:
            return Interpreter(version, real)
    return Missing(version, tuple(looked))


def _candidates(version: str, path: str | None, pyenv_root: Path | None,
                looked: list[str]) -> Iterator[str]:
    name = f"python{version}"
    search = os.environ.get("PATH", "") if path is None else path
    looked.append(f"PATH ({search or 'empty'})")
    for directory in search.split(os.pathsep):
        found = shutil.which(name, path=directory) if directory else None
        if found:
            yield found
    root = _pyenv_root() if pyenv_root is None else pyenv_root
    if root is None:
        looked.append("pyenv: not installed (no $PYENV_ROOT, no `pyenv` command, no ~/.pyenv)")
        return
    looked.append(f"pyenv: {root / 'versions'}/{version}.*/bin/{name}")
    for directory in _pyenv_versions(root, version):
        yield str(directory / "bin" / name)


def _pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv:
        done = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    home = Path.home() / ".pyenv"
    return home if home.is_dir() else None


def _pyenv_versions(root: Path, version: str) -> list[Path]:
    """``versions/3.12.*`` release builds, newest patch first (not ``-dev`` or ``t`` builds)."""
    major, minor = (int(part) for part in version.split("."))
    releases = []
    for directory in (root / "versions").glob(f"{version}.*"):
        match = _PATCH_DIR.match(directory.name)
        if match and (int(match[1]), int(match[2])) == (major, minor):
            releases.append((int(match[3]), directory))
    return [directory for _, directory in sorted(releases, reverse=True)]


def _probe(candidate: str, version: str) -> str | None:
    """The real executable behind ``candidate`` if it runs and is ``version``, else ``None``."""
    try:
        done = subprocess.run([candidate, "-c", _PROBE], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2 or lines[0] != version:
        return None
    return os.path.realpath(lines[1])  # a shim or a symlink: the binary itself


def installed_digest() -> str:
    """What a venv was installed from: pyproject.toml and the example's requirements."""
    digest = hashlib.sha256(PYPROJECT.read_bytes())
    digest.update(EXAMPLE_REQUIREMENTS.read_bytes())
    return digest.hexdigest()


def install_project(session: nox.Session, extra: str) -> None:
    """``pip install -e .[extra]``, unless this venv already has it from this pyproject.toml."""
    stamp = Path(session.virtualenv.location) / f"{INSTALLED_STAMP}-{extra}"
    wanted = installed_digest()
    if stamp.is_file() and stamp.read_text() == wanted:
        session.log(f"reusing {session.virtualenv.location}: pyproject.toml is unchanged")
        return
    session.install("--upgrade", "pip")
    session.install("-e", f".[{extra}]", "-r", str(EXAMPLE_REQUIREMENTS))
    stamp.write_text(wanted)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff once: its verdict does not depend on the interpreter it runs under."""
    session.run(sys.executable, "-m", "ruff", "check", *LINTED)


def _define_matrix(version: str) -> None:
    found = find_interpreter(version)
    python: str | bool = found.path if isinstance(found, Interpreter) else False
    where = python or "NOT FOUND (the session fails)"

    def tests(session: nox.Session) -> None:
        if isinstance(found, Missing):
            session.error(found.message())
        install_project(session, "dev")
        session.run("mypy", "--strict", "--python-version", version,
                    "--cache-dir", f".mypy_cache/{version}", "mycelium_mono")
        session.run("python", "-m", "pytest", *session.posargs)

    def instructions(session: nox.Session) -> None:
        if isinstance(found, Missing):
            session.error(found.message())
        install_project(session, "bench")
        session.run("python", "benchmarks/callgrind.py", "--json",
                    f".benchmarks/instructions-{version}.json", *session.posargs)

    # nox lists a session with its docstring: say which interpreter each one found.
    tests.__doc__ = f"mypy --strict --python-version {version}, then pytest; {where}"
    instructions.__doc__ = f"callgrind instructions per emit; {where}"
    nox.session(name=f"tests-{version}", python=python, download_python="never")(tests)
    nox.session(name=f"instructions-{version}", python=python, download_python="never",
                default=False, tags=["instructions"])(instructions)


for _version in VERSIONS:
    _define_matrix(_version)
