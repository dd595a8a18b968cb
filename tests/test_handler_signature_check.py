"""E0013 for a handler class written in the routing module itself.

The bus calls each handler method with one message. A method that cannot take it
(``def handle(self, msg, station)``) is an import-time error with a caret, as for a handler
class imported from another module; a class written beside its table was never checked, since
only its source exists when the hook reads the module, and it failed at its first emit with
Python's "missing 1 required positional argument". Each case is checked three ways that must
agree: the ``check`` command, the import hook, and the run-time build (no hook), which sees the
live class.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from pathlib import Path

import pytest
from helpers_cli import cli

from mycelium_mono.pytest_plugin import forget_modules
from mycelium_mono.routing.errors import RoutingError

PACKAGE = "sigkit"

MESSAGES = """\
from mycelium_mono import message, U32


@message(type_id=64211, topic="sigkit.order")
class Order:
    n: U32
"""

ROUTING = """\
from mycelium_mono import MessageHandler, handles, routing_config
from sigkit.messages import Order


class Base:
    def handle(self, msg, station):
        pass


class Station({base}):
{body}


@routing_config
class Bus:
    Order = [Station]
"""

CASES = [
    # (id, Station's base, Station's body, the def the bus calls when it cannot take one
    # message, or None when it binds)
    ("extra parameter", "MessageHandler[Order]", "def handle(self, msg, station): pass",
     "def handle(self, msg, station): pass"),
    ("keyword-only", "MessageHandler[Order]", "def handle(self, msg, *, station): pass",
     "def handle(self, msg, *, station): pass"),
    ("no message", "MessageHandler[Order]", "def handle(self): pass", "def handle(self): pass"),
    ("positional-only", "MessageHandler[Order]", "def handle(self, msg, /, x): pass",
     "def handle(self, msg, /, x): pass"),
    ("inherited from a local base", "Base, MessageHandler[Order]", "pass",
     "def handle(self, msg, station): pass"),
    ("default", "MessageHandler[Order]", "def handle(self, msg, station=1): pass", None),
    ("varargs", "MessageHandler[Order]", "def handle(self, *args): pass", None),
    ("@handles", "object", "@handles(Order)\ndef handle(self, msg): pass", None),
    ("**extra", "MessageHandler[Order]", "def handle(self, msg, **extra): pass", None),
]


def python_says(definition: str) -> str:
    """``Station.handle(<signature>) cannot be called with one message: <why>``, the why in
    this Python's own words (3.12 says "a required keyword-only argument", 3.11 does not)."""
    namespace: dict[str, object] = {}
    exec(definition, namespace)  # a def of literals only, from CASES
    signature = inspect.signature(namespace["handle"])  # type: ignore[arg-type]
    with pytest.raises(TypeError) as caught:
        signature.bind(object(), object())
    shown = definition.removeprefix("def handle").partition(":")[0]
    return f"Station.handle{shown} cannot be called with one message: {caught.value}"


def write(root: Path, base: str, body: str) -> Path:
    package = root / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "messages.py").write_text(MESSAGES)
    (package / "routing.py").write_text(
        ROUTING.format(base=base, body=textwrap.indent(body, "    ")))
    return package / "routing.py"


def imported(root: Path, *, hook: bool) -> RoutingError | None:
    """What importing the routing module raised (None: nothing)."""
    from mycelium_mono.routing.hook import install_import_hook

    forget_modules(PACKAGE)
    sys.path.insert(0, str(root))
    manager = install_import_hook([PACKAGE]) if hook else None
    try:
        importlib.import_module(f"{PACKAGE}.routing")
    except RoutingError as exc:
        return exc
    finally:
        if manager is not None:
            manager.uninstall()
        sys.path.remove(str(root))
        forget_modules(PACKAGE)
    return None


@pytest.mark.parametrize(("base", "body", "failing"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_routing_module_handler_that_cannot_take_one_message_is_e0013_on_every_path(
        tmp_path: Path, base: str, body: str, failing: str | None) -> None:
    error = None if failing is None else python_says(failing)
    routing = write(tmp_path, base, body)
    line = routing.read_text().splitlines().index("    Order = [Station]") + 1
    checked = cli("check", f"{PACKAGE}/routing.py", cwd=tmp_path)
    if error is None:
        assert checked.returncode == 0, checked.stdout + checked.stderr
    else:
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert checked.stdout.startswith(
            f"{PACKAGE}/routing.py:{line}:14: error[E0013]: {error}"), \
            checked.stdout
    for hook in (True, False):
        raised = imported(tmp_path, hook=hook)
        if error is None:
            assert raised is None, (hook, raised)
        else:
            assert raised is not None, f"hook={hook}: imported without E0013"
            assert "error[E0013]: Station.handle" in str(raised), (hook, str(raised))
