"""``mycelium-mono doctor``: the seed's troubleshooting section, as checks with verdicts and fixes.

Three questions, in the order people ask them:

- *Handler not found*: does the routing table compile (every name resolves, every handler
  handles the message it is routed for)?
- *Handler not called*: is there a handler class (in the routing module, or in the modules its
  handlers come from) that handles a message type but is not routed for it; can each bus be
  constructed with all its services?
- *Performance not improving*: was the module rewritten by the import hook or built at run
  time; will the next import hit the hook's cache, and if not why; is a tracer, profiler,
  debugger or dev mode slowing every call; which calls are inlined; how fast is each
  ``emit_*`` against a dict-and-loop dispatcher?

The command runs the checks in its own process, which installs the hook for the module's
top-level package the way ``python -m mycelium_mono run`` does. Inside an application,
``print(mycelium_mono.cli.doctor.report("myapp.routing"))`` runs them against that process's
own state: its hook (or lack of one), its tracer, its flags.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, TextIO

from mycelium_mono.cli.bench import (
    bus_classes,
    default_bus,
    factory_buses,
    format_timings,
    import_routing_module,
    time_bus,
)
from mycelium_mono.cli.target import Target, UsageError, find_target, resolved_tables, use_color
from mycelium_mono.handlers import MessageHandler, handled_messages
from mycelium_mono.monolith import GeneratedBus
from mycelium_mono.routing.cache import CacheEntry, CacheKey, cache_path, read_cache
from mycelium_mono.routing.check import ResolvedRoute, ResolvedTable
from mycelium_mono.routing.errors import RoutingError, render_diagnostic
from mycelium_mono.routing.pipeline import RewriteOptions, rewrite_module
from mycelium_mono.routing.resolve import message_key

__all__ = ["Check", "HookMode", "Verdict", "diagnose", "format_report", "report", "run_doctor"]

NOT_FOUND = "Handler not found"
NOT_CALLED = "Handler not called"
PERFORMANCE = "Performance not improving"

_TIMING_NUMBER = 3_000
_TIMING_REPEAT = 3


class Verdict(enum.Enum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One troubleshooting check: what was looked at, the verdict, and what to do about it."""

    topic: str
    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None


class HookMode(enum.Enum):
    """How ``diagnose`` imports the routing module."""

    INSTALL = "install"
    """Install the hook for the module's top-level package first (the command's default)."""
    NONE = "none"
    """Import without installing it (``--no-hook``): the run-time build path."""
    OBSERVE = "observe"
    """Install nothing; report what the running process did (in-application use)."""


def diagnose(target: Target, *, hook: HookMode = HookMode.INSTALL,
             factory: str | None = None) -> list[Check]:
    """Every check for the routing module ``target`` (imports it, unless it does not compile)."""
    tables, problems = resolved_tables(target)
    checks = [_compile_check(target, tables, problems)]
    if problems or not tables:
        return checks + _environment_checks()
    checks.append(_cache_check(target, hook=hook))
    try:
        module = import_routing_module(target, hook=hook is HookMode.INSTALL)
    except (UsageError, RoutingError) as exc:
        failed = Check(NOT_FOUND, "import", Verdict.FAIL, str(exc),
                       "make the module import cleanly, then run doctor again")
        return [*checks, failed]
    buses = bus_classes(module)
    checks += _origin_checks(target, buses, hook=hook)
    checks += _unrouted_checks(module, tables, buses, target)
    built = _construct(buses, factory)
    checks += [check for _, check in built]
    checks += _environment_checks()
    checks.append(_inlining_check(target))
    checks += _timing_checks(built, tables)
    return checks


# --- handler not found --------------------------------------------------------------------


def _compile_check(target: Target, tables: list[ResolvedTable], problems: list[Any]) -> Check:
    if problems:
        lines = target.text.splitlines()
        rendered = "\n\n".join(render_diagnostic(d, lines) for d in problems)
        return Check(NOT_FOUND, "routing table", Verdict.FAIL,
                     f"{len(problems)} routing error{_s(len(problems))}:\n\n{rendered}",
                     "fix each error as its help line says; `mycelium-mono check` re-checks "
                     "without importing the module")
    if not tables:
        return Check(NOT_FOUND, "routing table", Verdict.FAIL,
                     f"{target.filename} has no @routing_config class",
                     "point doctor at the module that defines the routing class")
    routes = sum(len(t.routes) for t in tables)
    return Check(NOT_FOUND, "routing table", Verdict.OK,
                 f"{len(tables)} routing class{'es' if len(tables) != 1 else ''}, {routes} "
                 f"route{_s(routes)}: every name resolves and every handler handles the message "
                 "type it is routed for")


# --- handler not called -------------------------------------------------------------------


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


def _unrouted_checks(module: ModuleType, tables: list[ResolvedTable],
                     buses: list[type[GeneratedBus]], target: Target) -> list[Check]:
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
        f"({_location(target, table.lineno)})",
    )


def _missing_from_route(handler: type, where: str, message: type, entry: _Routed,
                        target: Target, *, is_async: bool) -> Check:
    names = ", ".join(entry.handler_names) or "no handler"
    at = _location(target, entry.route.span.lineno)
    line = _source_line(target, entry.route.span.lineno)
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


def _construct(buses: list[type[GeneratedBus]], factory: str | None
               ) -> list[tuple[GeneratedBus | None, Check]]:
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


# --- performance not improving ---------------------------------------------------------------


def _cache_check(target: Target, *, hook: HookMode) -> Check:
    location = cache_path(target.filename)
    name = "hook cache"
    if location is None:
        return Check(PERFORMANCE, name, Verdict.WARN, "this Python keeps no bytecode cache",
                     "every import rewrites the module (a few ms); nothing to fix")
    key = CacheKey.current(target.source, RewriteOptions().key())
    found = read_cache(location, key)
    when = "now" if hook is HookMode.OBSERVE else "before this import"
    if isinstance(found, CacheEntry):
        return Check(PERFORMANCE, name, Verdict.OK,
                     f"cache hit {when}: {location} matches the source, library "
                     "version, options, optimize level and every handler module")
    detail = f"cache miss {when} ({found}): {location}"
    if sys.dont_write_bytecode:
        return Check(PERFORMANCE, name, Verdict.WARN,
                     detail + "; and sys.dont_write_bytecode is set, so it is never written",
                     "unset PYTHONDONTWRITEBYTECODE (or -B) to cache rewrites")
    if hook is HookMode.INSTALL:
        detail += "; the import below rewrites it and writes the cache"
    return Check(PERFORMANCE, name, Verdict.INFO, detail)


def _origin_checks(target: Target, buses: list[type[GeneratedBus]], *, hook: HookMode
                   ) -> list[Check]:
    from mycelium_mono.routing.hook import import_records

    record = import_records().get(target.module_name)
    happened = f" ({record.describe()})" if record else ""
    checks = []
    for cls in buses:
        origin = cls.__mycelium_origin__
        if origin == "import hook":
            checks.append(Check(PERFORMANCE, f"{cls.__name__} origin", Verdict.OK,
                                f"rewritten by the import hook{happened}",
                                _hook_reminder(target)))
        else:
            why = (record.describe() if record else
                   "doctor ran with --no-hook" if hook is HookMode.NONE else
                   "no import hook saw the import")
            checks.append(Check(
                PERFORMANCE, f"{cls.__name__} origin", Verdict.WARN,
                f"built at run time by @routing_config ({why}): the same code, but no cache, "
                "and routing errors appear only when the class statement runs",
                _hook_reminder(target)))
    return checks


def _hook_reminder(target: Target) -> str:
    return (f"in your application, install the hook before the first import of "
            f"{target.top_package}: `python -m mycelium_mono run ...`, "
            f"install_import_hook([{target.top_package!r}]), or `mycelium_packages` in pytest's "
            f"ini; print(mycelium_mono.cli.doctor.report({target.module_name!r})) inside it "
            "shows its own state")


def _environment_checks() -> list[Check]:
    findings = [c for c in (_tracer_check(), _dev_mode_check(), _breakpoint_check()) if c]
    return findings or [Check(PERFORMANCE, "interpreter", Verdict.OK,
                              "no tracer, profiler, debugger, coverage or dev mode active")]


def _tracer_check() -> Check | None:
    active = []
    if sys.gettrace() is not None:
        active.append(f"sys.gettrace() is {sys.gettrace()!r}")
    if sys.getprofile() is not None:
        active.append(f"sys.getprofile() is {sys.getprofile()!r}")
    active += [f"{name} is imported" for name in ("coverage", "pydevd", "debugpy")
               if name in sys.modules]
    if os.environ.get("COVERAGE_PROCESS_START"):
        active.append("COVERAGE_PROCESS_START is set")
    if not active:
        return None
    return Check(PERFORMANCE, "tracer or profiler", Verdict.WARN,
                 "; ".join(active) + ": a trace function runs on every call and line, which "
                 "dwarfs the cost of dispatch", "benchmark without coverage, profilers or "
                 "debuggers attached")


def _dev_mode_check() -> Check | None:
    active = []
    if sys.flags.dev_mode:
        active.append("dev mode is on (-X dev or PYTHONDEVMODE)")
    if os.environ.get("PYTHONASYNCIODEBUG"):
        active.append("PYTHONASYNCIODEBUG is set")
    if os.environ.get("PYTHONMALLOC", "").endswith("debug"):
        active.append(f"PYTHONMALLOC={os.environ['PYTHONMALLOC']}")
    import tracemalloc

    if tracemalloc.is_tracing():
        active.append("tracemalloc is tracing")
    if not active:
        return None
    return Check(PERFORMANCE, "debug modes", Verdict.WARN, "; ".join(active) + ": extra checks "
                 "on allocations and the event loop", "measure without -X dev, "
                 "PYTHONDEVMODE, PYTHONASYNCIODEBUG, PYTHONMALLOC=debug and tracemalloc")


def _breakpoint_check() -> Check | None:
    value = os.environ.get("PYTHONBREAKPOINT")
    if value is None or value == "0":
        return None
    return Check(PERFORMANCE, "PYTHONBREAKPOINT", Verdict.INFO,
                 f"PYTHONBREAKPOINT={value}: a leftover breakpoint() in a handler would stop in "
                 f"{value or 'pdb'}", "set PYTHONBREAKPOINT=0 when measuring")


def _inlining_check(target: Target) -> Check:
    notes = rewrite_module(target.source, target.filename, target.module_name).notes
    inlined = [n for n in notes if n.mode == "inlined"]
    reasons: dict[str, int] = {}
    for note in notes:
        if note.mode != "inlined":
            reasons[note.reason] = reasons.get(note.reason, 0) + 1
    why = ", ".join(f"{reason} x{count}" for reason, count in reasons.items())
    detail = (f"{len(notes)} handler call{_s(len(notes))}: {len(inlined)} inlined, "
              f"{len(notes) - len(inlined)} straight-line call{_s(len(notes) - len(inlined))}"
              + (f" ({why})" if why else ""))
    fix = ("@routing_config(inline=True) inlines handler bodies where that is safe; "
           "`mycelium-mono show` prints each decision" if "inline=False" in reasons else None)
    return Check(PERFORMANCE, "inlining", Verdict.INFO, detail, fix)


def _timing_checks(built: list[tuple[GeneratedBus | None, Check]],
                   tables: list[ResolvedTable]) -> list[Check]:
    by_name = {t.name: t for t in tables}
    checks = []
    for bus, _ in built:
        if bus is None:
            continue
        timings = time_bus(bus, by_name[type(bus).__name__], number=_TIMING_NUMBER,
                           repeat=_TIMING_REPEAT)
        slow = [t for t in timings if t.ratio is not None and t.ratio < 0.8]
        detail = "\n".join(format_timings(timings))
        verdict = Verdict.WARN if slow else Verdict.INFO
        fix = ("the generated calls are slower than dynamic dispatch here: look for a tracer "
               "or dev mode above, or re-run `mycelium-mono bench` on a quiet machine"
               if slow else None)
        checks.append(Check(PERFORMANCE, f"{type(bus).__name__} emit timing", verdict,
                            f"quick timing (best of {_TIMING_REPEAT} x {_TIMING_NUMBER}; "
                            f"`mycelium-mono bench` measures longer):\n{detail}", fix))
    return checks


# --- output -----------------------------------------------------------------------------------


def _location(target: Target, lineno: int) -> str:
    return f"{os.path.relpath(target.filename)}:{lineno}"


def _source_line(target: Target, lineno: int) -> str:
    lines = target.text.splitlines()
    return lines[lineno - 1].strip() if 1 <= lineno <= len(lines) else ""


def _s(count: int) -> str:
    return "" if count == 1 else "s"


_COLORS = {Verdict.OK: "\x1b[32m", Verdict.INFO: "\x1b[34m", Verdict.WARN: "\x1b[33m",
           Verdict.FAIL: "\x1b[31m"}


def format_report(target: Target, checks: list[Check], *, color: bool = False) -> str:
    """The checks grouped by troubleshooting topic, each with its verdict and fix."""
    out = [f"mycelium-mono doctor {target.module_name} ({target.filename})"]
    for topic in (NOT_FOUND, NOT_CALLED, PERFORMANCE):
        group = [c for c in checks if c.topic == topic]
        if group:
            out += ["", topic]
            out += [_format_check(c, color=color) for c in group]
    warnings = sum(c.verdict is Verdict.WARN for c in checks)
    failures = sum(c.verdict is Verdict.FAIL for c in checks)
    out += ["", f"{failures} failure{_s(failures)}, {warnings} warning{_s(warnings)}"]
    return "\n".join(out) + "\n"


def _format_check(check: Check, *, color: bool) -> str:
    start, reset = (_COLORS[check.verdict], "\x1b[0m") if color else ("", "")
    tag = f"[{check.verdict.value}]"
    pad = " " * 9
    lines = [f"  {start}{tag:<6}{reset} {check.name}: " + check.detail.replace("\n", "\n" + pad)]
    if check.fix:
        lines.append(f"{pad}fix: {check.fix}")
    return "\n".join(lines)


def report(module: str, *, factory: str | None = None) -> str:
    """The doctor report for ``module`` as the running process sees it (installs no hook)."""
    target = find_target(module)
    return format_report(target, diagnose(target, hook=HookMode.OBSERVE, factory=factory))


def run_doctor(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Exit status 1 if any check failed; warnings alone exit 0."""
    target = find_target(args.module)
    mode = HookMode.NONE if args.no_hook else HookMode.INSTALL
    checks = diagnose(target, hook=mode, factory=args.factory)
    if args.format == "json":
        report = {"module": target.module_name, "path": target.filename,
                  "checks": [{**asdict(c), "verdict": c.verdict.value} for c in checks]}
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write(format_report(target, checks, color=use_color(out)))
    return 1 if any(c.verdict is Verdict.FAIL for c in checks) else 0

