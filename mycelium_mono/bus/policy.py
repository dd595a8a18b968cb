"""The overflow policy shared by bus subscriptions and the hybrid background backlog.

A bounded queue must say what happens when it is full. There is no silent default in the
hot path: every policy is explicit, and every message it does not deliver is counted.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["OVERFLOW_POLICIES", "OverflowPolicy", "check_policy"]

OverflowPolicy = Literal["block", "drop_oldest", "raise"]
"""``"block"``: the awaiting publisher waits for space (nothing is lost);
``"drop_oldest"``: the oldest queued message makes room and is counted as dropped;
``"raise"``: the publisher gets a clear exception and the message is counted as rejected."""

OVERFLOW_POLICIES: tuple[str, ...] = get_args(OverflowPolicy)


def check_policy(policy: str, maxsize: int, *, where: str) -> None:
    """Refuse a policy or bound that cannot work, naming where it was given."""
    if policy not in OVERFLOW_POLICIES:
        raise ValueError(
            f"{where}: unknown overflow policy {policy!r}\n"
            f"help: use one of {', '.join(repr(p) for p in OVERFLOW_POLICIES)}"
        )
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
        raise ValueError(
            f"{where}: maxsize must be a positive int, got {maxsize!r}\n"
            "help: a bounded queue needs room for at least one message; use a large bound "
            "(e.g. 1_000_000) if you mean 'practically unbounded'"
        )
