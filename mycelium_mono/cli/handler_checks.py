"""The *handler not found* and *handler not called* checks of ``doctor``."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mycelium_mono.cli.bench import default_bus, factory_buses
from mycelium_mono.cli.findings import (
    NOT_CALLED,
    NOT_FOUND,
    Check,
    Verdict,
    location,
    plural,
    source_line,
)
from mycelium_mono.cli.target import Target, UsageError
from mycelium_mono.handlers import MessageHandler, handled_messages
from mycelium_mono.monolith import GeneratedBus
from mycelium_mono.routing.check import ResolvedRoute, ResolvedTable
from mycelium_mono.routing.errors import render_diagnostic
from mycelium_mono.routing.resolve import message_key

__all__ = ["compile_check", "construct", "unrouted_checks"]


def compile_check(target: Target, tables: list[ResolvedTable], problems: list[Any]) -> Check:
    """*Handler not found*: the routing table compiles, or every error, rendered."""
    if problems:
        lines = target.text.splitlines()
        rendered = "\n\n".join(render_diagnostic(d, lines) for d in problems)
        return Check(NOT_FOUND, "routing table", Verdict.FAIL,
                     f"{len(problems)} routing error{plural(len(problems))}:\n\n{rendered}",
                     "fix each error as its help line says; `mycelium-mono check` re-checks "
                     "without importing the module")
    if not tables:
        return Check(NOT_FOUND, "routing table", Verdict.FAIL,
                     f"{target.filename} has no @routing_config class",
                     "point doctor at the module that defines the routing class")
    routes = sum(len(t.routes) for t in tables)
    return Check(NOT_FOUND, "routing table", Verdict.OK,
                 f"{len(tables)} routing class{'es' if len(tables) != 1 else ''}, {routes} "
                 f"route{plural(routes)}: every name resolves and every handler handles the "
                 "message type it is routed for")


@dataclass(frozen=True)
class _Routed:
    table: ResolvedTable
    route: ResolvedRoute

    @property
    def handler_keys(self) -> set[str]:
        return {c.handler.key for c in (*self.route.sync, *self.route.background)}

    @property
    def handler_names(self) -> list[str]:
        return [c.handler.name for c in (*self.route.sync, *self.route.background)]


def unrouted_checks(module: ModuleType, tables: list[ResolvedTable],
                    buses: list[type[GeneratedBus]], target: Target) -> list[Check]:
    """*Handler not called*: handler classes that handle a type no bus delivers to them."""
    routed: dict[str, list[_Routed]] = {}
    for table in tables:
        for route in table.routes:
            routed.setdefault(route.message.key, []).append(_Routed(table, route))
    services = [cls for bus in buses for cls in bus.__mycelium_services__.values()]
    checks = []
    for handler in _candidate_handlers(module, services):
        checks += _handler_findings(handler, routed, services, tables, target)
    if not checks:
        scanned = ", ".join(sorted(_scanned_modules(module, services)))
        checks.append(Check(NOT_CALLED, "unrouted handlers", Verdict.OK,
                            "every handler class found is routed for every message type it "
                            f"handles (looked in: {scanned})"))
    return checks


def _handler_findings(handler: type, routed: dict[str, list[_Routed]], services: list[type],
                      tables: list[ResolvedTable], target: Target) -> list[Check]:
    findings = []
    routed_for = [r.route.message.name for rs in routed.values() for r in rs
                  if message_key(handler) in r.handler_keys]
    for message, method in handled_messages(handler).items():
        if getattr(handler, method.method, None) is MessageHandler.handle:
            continue  # an abstract base that never defined handle(): nothing to call
        entries = routed.get(message_key(message), [])
        where = f"{handler.__qualname__}.{method.method}"
        if not entries:
            findings.append(_not_routed_anywhere(handler, where, message, routed_for, tables,
                                                 target))
            continue
        if any(_receives(handler, entry, services) for entry in entries):
            continue  # routed in at least one bus: leaving it out of another is a choice
        for entry in entries:
            findings.append(_missing_from_route(handler, where, message, entry, target,
                                                is_async=method.is_async))
    return findings


def _receives(handler: type, entry: _Routed, services: list[type]) -> bool:
    """``handler`` (or a routed subclass of it, which is what the base was written for)."""
    keys = entry.handler_keys
    return message_key(handler) in keys or any(
        issubclass(s, handler) and message_key(s) in keys for s in services
    )


def _not_routed_anywhere(handler: type, where: str, message: type, routed_for: list[str],
                         tables: list[ResolvedTable], target: Target) -> Check:
    also = (f"; {handler.__name__} is routed for {', '.join(routed_for)} only: is the routing "
            "table naming the wrong message type?" if routed_for else
            " (if it runs on the flexible MessageBus instead, ignore this)")
    table = tables[0]
    return Check(
        NOT_CALLED, f"{handler.__name__} not routed", Verdict.WARN,
        f"{where} handles {message.__name__}, but no bus in {target.module_name} routes "
        f"{message.__name__}, so it is never called{also}",
        f"add `{message.__name__} = [{handler.__name__}]` to {table.name} "
        f"({location(target, table.lineno)})",
    )


def _missing_from_route(handler: type, where: str, message: type, entry: _Routed,
                        target: Target, *, is_async: bool) -> Check:
    names = ", ".join(entry.handler_names) or "no handler"
    at = location(target, entry.route.span.lineno)
    line = source_line(target, entry.route.span.lineno)
    if is_async:
        sync = ", ".join(c.handler.name for c in entry.route.sync)
        background = ", ".join([*(c.handler.name for c in entry.route.background),
                                handler.__name__])
        fix = (f"{where} is async, so route it in the background at {at}: "
               f"`{message.__name__} = route(sync=[{sync}], background=[{background}])`")
    else:
        fix = f"add {handler.__name__} to the list at {at}: `{line}`"
    return Check(
        NOT_CALLED, f"{handler.__name__} not routed", Verdict.WARN,
        f"{where} handles {message.__name__}, but {entry.table.name} routes "
        f"{message.__name__} to {names} only, so {handler.__name__} never receives it", fix)


def _candidate_handlers(module: ModuleType, services: list[type]) -> list[type]:
    """Handler classes in the routing module and in the modules its handlers come from."""
    found: dict[str, type] = {}
    for value in vars(module).values():
        if _is_handler_class(value):
            found.setdefault(message_key(value), value)
    for name in sorted(_scanned_modules(module, services) - {module.__name__}):
        other = sys.modules.get(name)
        for value in vars(other).values() if other else ():
            if _is_handler_class(value) and value.__module__ == name:
                found.setdefault(message_key(value), value)
    return list(found.values())


def _scanned_modules(module: ModuleType, services: Iterable[type]) -> set[str]:
    top = module.__name__.partition(".")[0]
    names = {module.__name__} | {cls.__module__ for cls in services}
    names |= {v.__name__ for v in vars(module).values()
              if isinstance(v, ModuleType) and v.__name__.partition(".")[0] == top}
    return {n for n in names if not n.startswith("mycelium_mono")}


def _is_handler_class(value: object) -> bool:
    if not isinstance(value, type) or value is MessageHandler or issubclass(value, GeneratedBus):
        return False
    return bool(handled_messages(value))


def construct(buses: list[type[GeneratedBus]], factory: str | None
              ) -> list[tuple[GeneratedBus | None, Check]]:
    """Each bus built from no-argument services (or by ``factory``), with its constructor check."""
    made = {type(bus): bus for bus in factory_buses(factory)} if factory else {}
    results: list[tuple[GeneratedBus | None, Check]] = []
    for cls in buses:
        params = ", ".join(f"{attr}: {service.__name__}"
                           for attr, service in cls.__mycelium_services__.items())
        signature = f"{cls.__name__}({params})"
        try:
            bus = made[cls] if cls in made else default_bus(cls)
        except UsageError as exc:
            results.append((None, Check(
                NOT_CALLED, f"{cls.__name__} constructor", Verdict.INFO,
                f"{signature}: every routed handler is a required argument; "
                f"{str(exc).splitlines()[0]}",
                "the emit timing needs a constructed bus: pass --factory module:function, a "
                "function returning one")))
            continue
        results.append((bus, Check(
            NOT_CALLED, f"{cls.__name__} constructor", Verdict.OK,
            f"{signature}: every routed handler is a required argument, so a bus missing a "
            "service fails at construction with TypeError, never silently")))
    return results
