"""The generated MonolithBus: construction, straight-line emits, errors, pickling, tracebacks.

Every test runs twice (see ``load_routing``): through the import hook and through the
decorator's run-time path, which must generate and behave the same.
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
import pickle
import traceback

import pytest
from conftest import HYBRID_ROUTING, LoadPackage


def services(module):  # type: ignore[no-untyped-def]
    handlers = module.__dict__
    return dict(
        detector=handlers["Detector"](), risk=handlers["Risk"](), metrics=handlers["Metrics"](),
        audit=handlers["Audit"](), execution=handlers["Execution"](),
        **({"database": handlers["Database"]()} if "database" in module.MonolithBus.__slots__
           else {}),
    )


def test_origin_says_which_path_built_the_bus(load_routing: LoadPackage,
                                              request: pytest.FixtureRequest) -> None:
    module = load_routing()
    expected = {"hook": "import hook", "runtime": "runtime"}[request.node.callspec.params[
        "load_routing"]]
    assert module.MonolithBus.__mycelium_origin__ == expected


def test_constructor_takes_one_keyword_per_handler_in_first_appearance_order(
    load_routing: LoadPackage,
) -> None:
    module = load_routing()
    params = list(inspect.signature(module.MonolithBus).parameters)
    assert params == ["detector", "risk", "metrics", "audit", "execution", "on_error",
                      "background"]
    by_keyword = module.MonolithBus(**services(module))
    by_position = module.MonolithBus(*services(module).values())
    assert type(by_keyword.risk).__name__ == "Risk"
    assert type(by_position.execution).__name__ == "Execution"


def test_missing_or_wrong_service_is_a_clear_type_error(load_routing: LoadPackage) -> None:
    module = load_routing()
    kwargs = services(module)
    kwargs["risk"] = kwargs["metrics"]
    with pytest.raises(TypeError, match=r"argument 'risk' must be a Risk instance, got Metrics"):
        module.MonolithBus(**kwargs)
    del kwargs["risk"]
    with pytest.raises(TypeError, match="risk"):
        module.MonolithBus(**kwargs)


def test_emit_calls_every_routed_handler_and_downstream_emits_reach_the_bus(
    load_routing: LoadPackage,
) -> None:
    module = load_routing()
    bus = module.MonolithBus(**services(module))
    bus.emit_swap(module.Swap(b"p" * 20, 5))
    bus.emit_swap(module.Swap(b"p" * 20, 50))
    assert (bus.detector.seen, bus.risk.seen, bus.metrics.swaps) == (2, 2, 2)
    # Detector emitted Signal(50) → Audit logs it, Execution emits Order(1) → Audit logs it.
    assert bus.audit.log == [("signal", 50), ("order", 1)]


def test_generic_emit_dispatches_by_type(load_routing: LoadPackage) -> None:
    module = load_routing()
    bus = module.MonolithBus(**services(module))
    bus.emit(module.Signal(7))
    assert bus.audit.log == [("signal", 7), ("order", 1)]
    with pytest.raises(TypeError, match="has no route for int"):
        bus.emit(3)


def test_every_handler_runs_then_failures_raise_together(load_routing: LoadPackage) -> None:
    module = load_routing()
    bus = module.MonolithBus(**services(module))
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit_swap(module.Swap(b"p" * 20, 13))
    assert (bus.detector.seen, bus.risk.seen, bus.metrics.swaps) == (1, 1, 1)
    [error] = caught.value.exceptions
    assert isinstance(error, ValueError) and "unlucky swap 13" in str(error)
    assert "risk.handle" in str(caught.value)
    assert any("raised in MonolithBus by risk.handle" in note for note in error.__notes__)


def test_on_error_callback_receives_failures_instead(load_routing: LoadPackage) -> None:
    module = load_routing()
    failures: list[tuple[str, str]] = []
    bus = module.MonolithBus(**services(module),
                             on_error=lambda exc, where, msg: failures.append((where, str(exc))))
    bus.emit_swap(module.Swap(b"p" * 20, 13))
    assert failures == [("risk.handle", "unlucky swap 13")]
    assert bus.metrics.swaps == 1


def test_traceback_points_at_the_routing_line_of_the_failing_handler(
    load_routing: LoadPackage,
) -> None:
    module = load_routing()
    bus = module.MonolithBus(**services(module))
    with pytest.raises(ExceptionGroup) as caught:
        bus.emit_swap(module.Swap(b"p" * 20, 13))
    text = "".join(traceback.format_exception(caught.value.exceptions[0]))
    assert "Swap = [Detector, Risk, Metrics]" in text
    assert "routing.py" in text and "handlers.py" in text


def test_generated_source_is_registered_in_linecache(load_routing: LoadPackage) -> None:
    module = load_routing()
    name = f"<mycelium-mono generated {module.__name__}"
    entries = [key for key in linecache.cache if str(key).startswith(name)]
    assert entries, "generated source not registered"
    text = "".join(linecache.getlines(entries[0]))
    assert "def emit_swap(self, msg: Swap) -> None:" in text
    assert "self.risk.handle(msg)" in text


def test_bus_class_has_true_module_and_qualname_and_pickles(load_routing: LoadPackage) -> None:
    module = load_routing()
    assert module.MonolithBus.__module__ == module.__name__
    assert module.MonolithBus.__qualname__ == "MonolithBus"
    bus = module.MonolithBus(**services(module))
    bus.emit_swap(module.Swap(b"p" * 20, 1))
    clone = pickle.loads(pickle.dumps(bus))
    assert clone.detector.seen == 1
    clone.emit_swap(module.Swap(b"p" * 20, 1))
    assert clone.detector.seen == 2 and bus.detector.seen == 1


def test_split_route_runs_sync_now_and_background_on_the_loop(load_routing: LoadPackage) -> None:
    module = load_routing(routing=HYBRID_ROUTING)
    bus = module.MonolithBus(**services(module))

    async def scenario() -> None:
        bus.emit_order(module.Order(9))
        assert bus.audit.log == [("order", 9)]  # sync path ran inline
        await bus.background.drain()
        assert bus.database.rows == [9]
        await bus.emit_order_async(module.Order(10))
        bus.emit_order_sync(module.Order(11))
        assert bus.database.rows == [9, 10]
        assert bus.audit.log[-1] == ("order", 11)

    asyncio.run(scenario())


def test_a_routing_class_inside_a_function_routes_local_classes() -> None:
    from mycelium_mono import U64, MessageHandler, message, routing_config

    @message(type_id=61101)
    class Tick:
        n: U64

    class Counter(MessageHandler[Tick]):
        def __init__(self) -> None:
            self.total = 0

        def handle(self, tick: Tick) -> None:
            self.total += tick.n

    @routing_config
    class Bus:
        Tick = [Counter]

    bus = Bus(Counter())  # type: ignore[call-arg]
    bus.emit_tick(Tick(4))  # type: ignore[attr-defined]
    bus.emit(Tick(5))
    assert bus.counter.total == 9  # type: ignore[attr-defined]
