"""Routing mistakes are compile-time errors: every one at once, with a span, a code and help."""

from __future__ import annotations

import textwrap
import traceback
from pathlib import Path

import pytest
from conftest import HANDLERS, MESSAGES, LoadPackage, write_package

from mycelium_mono import RoutingError
from mycelium_mono.routing.pipeline import rewrite_module

HEADER = """
from mycelium_mono import routing_config, route
from PKG.messages import Swap, Signal, Order
from PKG.handlers import Detector, Risk, Metrics, Execution, Audit, Database
NOT_A_CLASS = 3
"""


def routing_source(body: str, decorator: str = "@routing_config") -> str:
    return HEADER + f"\n{decorator}\nclass MonolithBus:\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "    ") + "\n"


@pytest.fixture
def rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Rewrite a routing module the way the hook does (static scope) and return the error."""
    from mycelium_mono.pytest_plugin import forget_modules

    package = "mm_pkg"
    forget_modules(package)
    write_package(tmp_path, package, {"messages": MESSAGES, "handlers": HANDLERS})
    monkeypatch.syspath_prepend(str(tmp_path))

    def run(body: str, decorator: str = "@routing_config") -> RoutingError:
        source = routing_source(body, decorator).replace("PKG", package)
        path = tmp_path / package / "routing.py"
        path.write_text(source)
        with pytest.raises(RoutingError) as caught:
            rewrite_module(source.encode(), str(path), f"{package}.routing")
        return caught.value

    yield run
    forget_modules(package)


CASES = [
    ("E0001", "Signal = [Detector]", "Detector does not handle Signal", "Detector"),
    ("E0002", "Swap = [Detectr]", "unknown name `Detectr`", "Detectr"),
    ("E0002", "Swapp = [Detector]", "unknown name `Swapp`", "Swapp"),
    ("E0003", "Detector = [Risk]", "`Detector` is not a message class", "Detector"),
    ("E0004", "Order = [Database]", "Database.on_order is async", "Database"),
    ("E0005", "Swap = [Risk, Metrics, Risk]", "Risk is listed twice", "Risk"),
    ("E0006", "Swap = [Risk]\nSwap = [Metrics]", "Swap is routed twice", "Swap"),
    ("E0007", "print('hi')", "unsupported statement", "print('hi')"),
    ("E0007", "Swap = Risk", "must be a list of classes", "Risk"),
    ("E0007", "Swap = route(sync=[Risk], later=[Metrics])", "route() has no argument 'later'",
     "later=[Metrics]"),
    ("E0008", "Swap = [NOT_A_CLASS]", "is computed when the module runs", "NOT_A_CLASS"),
    ("E0012", "Swap = [Risk]\nOrder = [nowhere.Thing]", "unknown name `nowhere`", "nowhere.Thing"),
]


@pytest.mark.parametrize(("code", "body", "message", "underlined"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_mistake_has_a_code_a_message_and_a_caret_under_the_name(
    rewrite, code: str, body: str, message: str, underlined: str  # type: ignore[no-untyped-def]
) -> None:
    error = rewrite(body)
    diag = error.diagnostics[-1] if code == "E0006" else error.diagnostics[0]
    expected_code = "E0002" if code == "E0012" else code
    expected_code = "E0002" if code == "E0008" else expected_code
    assert diag.code == expected_code
    assert message in diag.message
    assert diag.help
    line = error.source_lines[diag.span.lineno - 1]  # type: ignore[index]
    assert line[diag.span.col_offset : diag.span.end_col_offset] == underlined


def test_an_unknown_message_name_suggests_the_linter_that_removed_its_import(
    rewrite  # type: ignore[no-untyped-def]
) -> None:
    # `Swapp` is bound nowhere: the usual cause is `ruff --fix` deleting an import that only
    # the left of `=` used. An unknown *handler* is used on the right, linters see it.
    message = rewrite("Swapp = [Detector]").diagnostics[0]
    assert message.note is not None and "# noqa: F401" in message.note
    handler = rewrite("Swap = [Detectr]").diagnostics[0]
    assert handler.note is None or "F401" not in handler.note


def test_a_non_class_value_is_not_a_handler(rewrite) -> None:  # type: ignore[no-untyped-def]
    error = rewrite("Swap = [Risk.handle]")
    assert error.code == "E0008" and "(it is a function)" in str(error)
    error = rewrite("Swap = [route]")
    assert error.code == "E0008" and "is not a handler class (it is a function)" in str(error)


def test_import_failures_are_routing_errors(tmp_path: Path, rewrite) -> None:  # type: ignore[no-untyped-def]
    source = "from mm_pkg.nothing_here import Gone\n" + routing_source("Swap = [Gone]")
    source = source.replace("PKG", "mm_pkg")
    with pytest.raises(RoutingError) as caught:
        rewrite_module(source.encode(), str(tmp_path / "r.py"), "mm_pkg.r")
    assert caught.value.code == "E0012"
    assert "cannot import 'mm_pkg.nothing_here'" in str(caught.value)


def test_bad_options_are_reported(rewrite) -> None:  # type: ignore[no-untyped-def]
    error = rewrite("Swap = [Risk]", decorator="@routing_config(inline=1, speed=3)")
    assert [d.code for d in error.diagnostics] == ["E0009", "E0009"]


def test_reserved_attribute_names_are_refused(tmp_path: Path, rewrite) -> None:  # type: ignore[no-untyped-def]
    handlers = HANDLERS + "\n\nclass Emit(MessageHandler[Swap]):\n    def handle(self, s):\n" \
        "        pass\n"
    (tmp_path / "mm_pkg" / "handlers.py").write_text(handlers.replace("PKG", "mm_pkg"))
    source = routing_source("Swap = [Emit]").replace("PKG", "mm_pkg").replace(
        "Database\n", "Database, Emit\n")
    with pytest.raises(RoutingError) as caught:
        rewrite_module(source.encode(), str(tmp_path / "mm_pkg" / "r2.py"), "mm_pkg.r2")
    assert caught.value.code == "E0011"


def test_every_error_in_the_module_is_reported_at_once(rewrite) -> None:  # type: ignore[no-untyped-def]
    error = rewrite("""
        Swap = [Detector, Detectr, Risk, Risk]
        Signal = [Detector]
        Order = [Database]
        Nope = [Audit]
    """)
    assert [d.code for d in error.diagnostics] == ["E0002", "E0005", "E0001", "E0004", "E0002"]
    rendered = str(error)
    assert rendered.count("error[E") == 5
    assert "(and 4 more routing errors)" in error.msg


def test_routing_error_is_a_syntax_error_with_positions(rewrite) -> None:  # type: ignore[no-untyped-def]
    error = rewrite("Swap = [Detector, Detectr]")
    assert isinstance(error, SyntaxError)
    assert error.filename.endswith("routing.py")
    assert error.text is not None and "Detectr" in error.text
    assert error.text[error.offset - 1 : error.end_offset - 1] == "Detectr"  # type: ignore[operator]
    assert error.lineno == error.end_lineno
    assert error.code == "E0002"


def test_rendering_is_compiler_style(rewrite) -> None:  # type: ignore[no-untyped-def]
    error = rewrite("Signal = [Audit, Detector]")
    lines = error.render().splitlines()
    assert lines[0].endswith(": error[E0001]: Detector does not handle Signal")
    assert lines[0].split(":")[1:3] == [str(error.lineno), str(error.offset)]
    assert lines[2].endswith("Signal = [Audit, Detector]")
    assert lines[3].endswith("^" * len("Detector"))
    assert lines[-1].startswith("help: mark a method of Detector with @handles(Signal)")
    assert "note: Detector handles: Swap" in lines


def test_standard_traceback_shows_caret_and_help(rewrite) -> None:  # type: ignore[no-untyped-def]
    text = "".join(traceback.format_exception_only(rewrite("Signal = [Detector]")))
    assert "RoutingError: [E0001] Detector does not handle Signal" in text
    assert "help: mark a method of Detector with @handles(Signal)" in text


def test_errors_surface_at_import_through_both_paths(load_routing: LoadPackage) -> None:
    bad = routing_source("Signal = [Detector]\nOrder = [Database]").replace("NOT_A_CLASS = 3", "")
    with pytest.raises(RoutingError) as caught:
        load_routing(routing=bad)
    assert [d.code for d in caught.value.diagnostics] == ["E0001", "E0004"]
    assert caught.value.filename.endswith("routing.py")
