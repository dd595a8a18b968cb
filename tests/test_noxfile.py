"""noxfile.py, the matrix `make test` runs: how it finds each Python, and how it fails without one.

Real interpreters, real files: a fake pyenv root is a directory holding a symlink to the
Python running this test, a pyenv shim is a script that exits 127 as pyenv's does for a version
that is installed but not selected, and the missing-interpreter test runs nox itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import helpers_modules
import pytest
from helpers_modules import ROOT

NOXFILE = ROOT / "noxfile.py"
THIS = f"{sys.version_info.major}.{sys.version_info.minor}"
REAL_PYTHON = os.path.realpath(sys.executable)


@pytest.fixture(scope="module")
def noxfile() -> ModuleType:
    return helpers_modules.noxfile()


def fake_pyenv(root: Path, *versions: str) -> Path:
    """``root/versions/<v>/bin/python<major.minor>`` → the Python running the tests."""
    for version in versions:
        bin_dir = root / "versions" / version / "bin"
        bin_dir.mkdir(parents=True)
        minor = ".".join(version.split(".")[:2])
        (bin_dir / f"python{minor}").symlink_to(REAL_PYTHON)
    return root


def shim(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho 'pyenv: {name}: command not found' >&2\nexit 127\n")
    path.chmod(0o755)
    return path


def test_a_failing_shim_on_path_gives_way_to_the_pyenv_build(noxfile: ModuleType,
                                                            tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    shim(shims, f"python{THIS}")
    root = fake_pyenv(tmp_path / "pyenv", f"{THIS}.4")
    found = noxfile.find_interpreter(THIS, path=str(shims), pyenv_root=root)
    assert found == noxfile.Interpreter(THIS, REAL_PYTHON)


def linked_python(directory: Path, name: str) -> Path:
    """``directory/name`` → the Python running the tests, whatever version ``name`` claims."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).symlink_to(REAL_PYTHON)
    return directory


def test_a_working_python_on_path_is_found_without_pyenv(noxfile: ModuleType,
                                                         tmp_path: Path) -> None:
    on_path = linked_python(tmp_path / "bin", f"python{THIS}")
    found = noxfile.find_interpreter(THIS, path=str(on_path), pyenv_root=tmp_path / "none")
    assert found == noxfile.Interpreter(THIS, REAL_PYTHON)


def test_a_python_reporting_another_version_is_not_taken(noxfile: ModuleType,
                                                        tmp_path: Path) -> None:
    # A python3.99 that is really this Python must not be believed on its name.
    on_path = linked_python(tmp_path / "bin", "python3.99")
    found = noxfile.find_interpreter("3.99", path=str(on_path), pyenv_root=tmp_path / "none")
    assert isinstance(found, noxfile.Missing)


def test_pyenv_versions_are_newest_patch_first_and_releases_only(noxfile: ModuleType,
                                                                 tmp_path: Path) -> None:
    for name in ("3.12.1", "3.12.10", "3.12.3", "3.12-dev", "3.12.2t", "3.13.0", "3.1.2"):
        (tmp_path / "versions" / name).mkdir(parents=True)
    found = [path.name for path in noxfile._pyenv_versions(tmp_path, "3.12")]
    assert found == ["3.12.10", "3.12.3", "3.12.1"]


def test_a_missing_version_says_where_it_looked_and_how_to_install_it(noxfile: ModuleType,
                                                                      tmp_path: Path) -> None:
    found = noxfile.find_interpreter("3.99", path=str(tmp_path), pyenv_root=tmp_path)
    assert isinstance(found, noxfile.Missing)
    message = found.message()
    assert "Python 3.99 is required by the test matrix but was not found" in message
    assert f"PATH ({tmp_path})" in message
    assert f"{tmp_path / 'versions'}/3.99.*/bin/python3.99" in message
    assert "pyenv install 3.99" in message


def test_the_matrix_session_fails_when_its_python_is_missing(tmp_path: Path) -> None:
    # Nothing on PATH, no pyenv: the 3.13 session must fail (not skip) and say how to fix it.
    env = {**os.environ, "PATH": str(tmp_path), "PYENV_ROOT": str(tmp_path / "empty"),
           "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(NOXFILE), "-s", "tests-3.13",
         "--envdir", str(tmp_path / "nox")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Python 3.13 is required by the test matrix but was not found" in output
    assert "pyenv install 3.13" in output
    assert "Session tests-3.13 aborted" in output and "skipped" not in output


def test_the_default_sessions_are_ruff_once_then_every_supported_python(
    noxfile: ModuleType,
) -> None:
    import nox

    assert nox.options.sessions == ["lint", "tests-3.11", "tests-3.12", "tests-3.13"]
    assert noxfile.VERSIONS == ("3.11", "3.12", "3.13")
