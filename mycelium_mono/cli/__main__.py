"""``python -m mycelium_mono.cli``: the same as the ``mycelium-mono`` console script."""

from mycelium_mono.cli import main

raise SystemExit(main())
