# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
"""Run by `mycelium-mono run`: says how its routing module was built, exits with a chosen status."""

import sys

from clishop.routing import MonolithBus

print(f"origin={MonolithBus.__mycelium_origin__} args={sys.argv[1:]}")
raise SystemExit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
