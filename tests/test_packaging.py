"""Where the Bandit example's dependencies live (issue 15 item 16).

The wheel ships the library only (tests/test_wheel_fresh_venv.py checks it has no `bandit`
extra); the example runs from a checkout, so its dependencies are a requirements file next to
it, which `make venv` installs with the editable library.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "examples" / "bandit" / "requirements.txt"


def _requirement_names() -> list[str]:
    names = []
    for line in REQUIREMENTS.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            names.append(re.split(r"[\[<>=!~ ]", text, maxsplit=1)[0])
    return names


def test_the_pyproject_has_no_extra_for_the_example() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "bandit" not in extras
    assert not any("bandit" in dep for deps in extras.values() for dep in deps)


def test_make_venv_installs_the_examples_requirements() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -e '.[dev]' -r examples/bandit/requirements.txt" in makefile
    assert _requirement_names() == ["websockets", "psycopg", "tqdm", "pyzmq"]
    for name in _requirement_names():
        assert metadata.version(name), f"{name} is not installed in this venv: run make venv"
