"""The *performance not improving* checks of ``doctor``: hook, cache, tracers, inlining, timing."""

from __future__ import annotations

import os
import sys

from mycelium_mono.cli.bench import format_timings, time_bus
from mycelium_mono.cli.findings import PERFORMANCE, Check, HookMode, Verdict, plural
from mycelium_mono.cli.target import Target
from mycelium_mono.monolith import GeneratedBus
from mycelium_mono.routing.cache import CacheEntry, CacheKey, cache_path
from mycelium_mono.routing.check import ResolvedTable
from mycelium_mono.routing.generate import CallNote
from mycelium_mono.routing.hook import import_records, usable_cache
from mycelium_mono.routing.inline import guard_failures
from mycelium_mono.routing.pipeline import RewriteOptions, rewrite_module

__all__ = ["cache_check", "environment_checks", "inlining_check", "origin_checks", "timing_checks"]

_TIMING_NUMBER = 3_000
_TIMING_REPEAT = 3


def cache_check(target: Target, *, hook: HookMode) -> Check:
    """Would the hook's cache be used for ``target``, and if not, why."""
    location = cache_path(target.filename)
    name = "hook cache"
    if location is None:
        return Check(PERFORMANCE, name, Verdict.WARN, "this Python keeps no bytecode cache",
                     "every import rewrites the module (a few ms); nothing to fix")
    key = CacheKey.current(target.source, RewriteOptions().key(), source_path=target.filename)
    found = usable_cache(location, key)  # as the hook judges it, imported names included
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


def origin_checks(target: Target, buses: list[type[GeneratedBus]], *, hook: HookMode
                  ) -> list[Check]:
    """Was each bus rewritten by the hook, or built at run time (and why)."""
    record = import_records().get(target.module_name)
    happened = f" ({record.describe()})" if record else ""
    checks = []
    if hook is HookMode.INSTALL:
        checks.append(Check(
            PERFORMANCE, "hook in your application", Verdict.INFO,
            f"doctor installed the hook for {target.top_package!r} itself: what follows is what "
            "the hook does, not whether your application installs it", _hook_reminder(target)))
    for cls in buses:
        origin = cls.__mycelium_origin__
        if origin == "import hook":
            checks.append(Check(PERFORMANCE, f"{cls.__name__} origin", Verdict.OK,
                                f"rewritten by the import hook{happened}"))
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
    return (f"install the hook before your application first imports "
            f"{target.top_package}: `python -m mycelium_mono run ...`, "
            f"install_import_hook([{target.top_package!r}]), or `mycelium_packages` in pytest's "
            f"ini; print(mycelium_mono.cli.doctor.report({target.module_name!r})) inside it "
            "shows its own state")


def environment_checks() -> list[Check]:
    """Tracers, profilers, debuggers, coverage and debug modes active in this process."""
    findings = [c for c in (_tracer_check(), _dev_mode_check(), _breakpoint_check()) if c]
    return findings or [Check(PERFORMANCE, "interpreter", Verdict.OK,
                              "no tracer, profiler, debugger, coverage or dev mode active")]


def _tracer_check() -> Check | None:
    active = []
    if sys.gettrace() is not None:
        active.append(f"sys.gettrace() is {sys.gettrace()!r}")
    if sys.getprofile() is not None:
        active.append(f"sys.getprofile() is {sys.getprofile()!r}")
    active += _monitoring_tools()
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


def _monitoring_tools() -> list[str]:
    # Since 3.12 cProfile (and coverage's "sysmon" core, and other PEP 669 tools) register
    # with sys.monitoring instead of sys.setprofile/settrace, so getprofile() is None while
    # they run: doctor used to say "no profiler active" under `python -m cProfile`.
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return []
    found = []
    for tool_id in range(6):  # sys.monitoring has six tool ids, 0..5
        name = monitoring.get_tool(tool_id)
        if name is not None:
            found.append(f"sys.monitoring tool {tool_id} is {name!r}")
    return found


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


def inlining_check(target: Target, buses: list[type[GeneratedBus]] | None = None,
                   built: list[tuple[GeneratedBus | None, Check]] | None = None) -> Check:
    """How many handler calls are inlined, and why the others are not.

    The decisions are read from the imported bus classes (``__mycelium_notes__``: what the
    build that ran decided), and each constructed bus says whether its inline guard lets it
    take the inlined path (a subclass instance or a patched method does not): issue 11.
    """
    if buses:
        notes = [CallNote(*note) for cls in buses for note in cls.__mycelium_notes__]
    else:
        notes = list(rewrite_module(target.source, target.filename, target.module_name).notes)
    inlined = [n for n in notes if n.mode == "inlined"]
    reasons: dict[str, int] = {}
    for note in notes:
        if note.mode != "inlined":
            reasons[note.reason] = reasons.get(note.reason, 0) + 1
    why = ", ".join(f"{reason} x{count}" for reason, count in reasons.items())
    detail = (f"{len(notes)} handler call{plural(len(notes))}: {len(inlined)} inlined, "
              f"{len(notes) - len(inlined)} straight-line call{plural(len(notes) - len(inlined))}"
              + (f" ({why})" if why else ""))
    refused = [f"{type(bus).__name__}(...) calls every handler instead: "
               + "; ".join(guard_failures(bus))
               for bus, _ in built or () if bus is not None and guard_failures(bus)]
    fix = ("@routing_config(inline=True) inlines handler bodies where that is safe; "
           "`mycelium-mono show` prints each decision" if "inline=False" in reasons else None)
    if refused:
        return Check(PERFORMANCE, "inlining", Verdict.WARN, "\n".join([detail, *refused]),
                     "construct the bus with instances of exactly the routed classes, and "
                     "patch methods before building it")
    return Check(PERFORMANCE, "inlining", Verdict.INFO, detail, fix)


def timing_checks(built: list[tuple[GeneratedBus | None, Check]],
                  tables: list[ResolvedTable]) -> list[Check]:
    """A quick ``emit_*`` timing against dict-and-loop dispatch for each constructed bus."""
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
