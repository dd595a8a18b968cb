"""A child interpreter for tests/test_stranger9_cache9.py: imports the farm under the hook.

``python child.py MODE ROOTS ORDER [SEED]``: ROOTS is an os.pathsep-separated list put first
on sys.path, ORDER the JSON route order of the hand-written calls. Prints one JSON object.
"""
from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sys
import warnings
from typing import Any

mode, roots, order = sys.argv[1], sys.argv[2].split(os.pathsep), json.loads(sys.argv[3])
# In place of this script's directory: only the copy under test may provide cache9farm.
sys.path[0:1] = roots

import mycelium_mono  # noqa: E402
from mycelium_mono.routing import cache  # noqa: E402
from mycelium_mono.routing.hook import import_records  # noqa: E402
from mycelium_mono.routing.inline import guard_failures  # noqa: E402
from mycelium_mono.routing.pipeline import RewriteOptions  # noqa: E402

out: dict[str, Any] = {"uid": os.getuid(), "python": sys.implementation.cache_tag}


def kill_at_a_seeded_point(seed: int) -> None:
    """SIGKILL this process inside write_cache: mid-write, before or after its os.replace."""
    rng = random.Random(seed)
    point = rng.choice(["write", "before_replace", "after_replace"])
    real_open, real_replace = open, os.replace

    class Tearing:
        def __init__(self, file: Any) -> None:
            self.file = file

        def __enter__(self) -> Tearing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> None:
            self.file.write(data[: rng.randrange(len(data))])
            self.file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def tearing_open(path: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(path, mode, *args, **kwargs)
        return Tearing(file) if "w" in mode and point == "write" else file

    class Os:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def replace(self, src: str, dst: str) -> None:
            if point == "before_replace":
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)

    cache.open = tearing_open  # type: ignore[attr-defined]
    cache.os = Os()  # type: ignore[assignment]


def report(routing: Any) -> None:
    from cache9farm import drive
    record = import_records().get("cache9farm.routing")
    bus_class = routing.FarmBus
    log, planner, valves = (getattr(drive.handlers, n)()
                            for n in ("MoistureLog", "Planner", "Valves"))
    out.update(
        bus=drive.through_bus(bus_class), hand=drive.by_hand(order),
        origin=bus_class.__mycelium_origin__,
        outcome=record and record.outcome.name, describe=record and record.describe(),
        notes={f"{n[1]}.{n[2]}": n[3] for n in bus_class.__mycelium_notes__},
        guard=guard_failures(bus_class(moisture_log=log, planner=planner, valves=valves)),
    )


if mode == "kill":
    kill_at_a_seeded_point(int(sys.argv[4]))
if mode == "after":
    from cache9farm import routing as early
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mycelium_mono.install_import_hook(["cache9farm"])
    out["warnings"] = [str(w.message).splitlines()[0] for w in caught]
    out["early_origin"] = early.FarmBus.__mycelium_origin__
    report(importlib.reload(early))
elif mode == "twice":
    mycelium_mono.install_import_hook(["cache9farm"], RewriteOptions(inline=False))
    second = mycelium_mono.install_import_hook(["cache9farm"], RewriteOptions(inline=True))
    import cache9farm.routing as routing
    out["first_notes"] = sorted({n[3] for n in routing.FarmBus.__mycelium_notes__})
    second.uninstall()
    report(importlib.reload(routing))
else:
    mycelium_mono.install_import_hook(["cache9farm"])
    import cache9farm.routing as routing
    if mode == "reload":
        from cache9farm import drive, handlers
        path = handlers.__file__
        with open(path) as file:
            text = file.read()
        with open(path, "w") as file:
            file.write(text.replace('f"plan:{msg.sensor_id}"', 'f"PLAN:{msg.sensor_id}"'))
        importlib.reload(handlers)
        try:
            drive.through_bus(routing.FarmBus)
            out["stale_bus_error"] = None
        except TypeError as exc:
            out["stale_bus_error"] = str(exc)
        routing = importlib.reload(routing)
    report(routing)
print(json.dumps(out))
