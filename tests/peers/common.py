"""What every peer process shares: building a transport from argv, and the line protocol."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mycelium_mono import ServiceRuntime
from mycelium_mono.bus.transports.base import Transport


def add_transport_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["zmq", "nats"], required=True)
    parser.add_argument("--bind", default="127.0.0.1:0", help="zmq: where this peer's XPUB binds")
    parser.add_argument("--connect", action="append", default=[], help="zmq: peers to connect to")
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--jetstream", action="store_true")
    parser.add_argument("--stream", default="MYCELIUM")
    parser.add_argument("--durable", default=None)
    parser.add_argument("--hwm", type=int, default=100_000)
    parser.add_argument("--lossy", action="store_true")
    parser.add_argument("--pending-limit", type=int, default=512 * 1024)
    parser.add_argument("--ack-wait", type=float, default=30.0)
    parser.add_argument("--heartbeat-ms", type=int, default=0, help="zmq: ZMTP heartbeats")


def transport_options(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(address, options) as ``MessageBus.with_tcp`` / ``with_nats`` take them."""
    if args.engine == "zmq":
        options = {"hwm": args.hwm, "lossless": not args.lossy, "heartbeat_ms": args.heartbeat_ms}
        return args.bind, options
    return args.url, {
        "jetstream": args.jetstream,
        "stream": args.stream,
        "durable": args.durable,
        "pending_limit": args.pending_limit,
        "ack_wait_s": args.ack_wait,
    }


def make_transport(args: argparse.Namespace) -> Transport:
    address, options = transport_options(args)
    if args.engine == "zmq":
        from mycelium_mono.bus.transports.zmq import ZmqTransport

        return ZmqTransport(address, **options)
    from mycelium_mono.bus.transports.nats import NatsTransport

    return NatsTransport(address, **options)


def say(word: str, payload: Any = "") -> None:
    """One protocol line on stdout (dicts go as JSON)."""
    text = json.dumps(payload) if isinstance(payload, dict) else str(payload)
    print(f"{word} {text}".rstrip(), flush=True)


async def read_line() -> str:
    """The next line from the test on stdin ('' at end of input)."""
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


async def serve_runtime(runtime: ServiceRuntime, result: Callable[[], dict[str, Any]]) -> None:
    """A service peer's commands until it exits: ``STATS`` prints ``RESULT {...}``;
    ``SHUTDOWN <timeout>`` runs ``runtime.shutdown(timeout)``, prints ``RESULT`` and returns;
    ``QUIT`` or end of input shuts down without a timeout. The shutdown closes the bus."""
    while True:
        line = await read_line()
        if line == "STATS":
            say("RESULT", result())
        elif line.startswith("SHUTDOWN"):
            await runtime.shutdown(timeout=float(line.split()[1]))
            say("RESULT", result())
            return
        elif not line or line == "QUIT":
            await runtime.shutdown()
            return


async def wait_for(word: str) -> str:
    """Read stdin until a line starting with ``word``; return the rest."""
    while True:
        line = await read_line()
        if not line:
            raise SystemExit(f"stdin closed while waiting for {word!r}")
        if line.startswith(word):
            return line[len(word) :].strip()


def memory_kib(field: str = "VmRSS", pid: int | str = "self") -> int:
    """A process's ``VmRSS`` (resident now) or ``VmHWM`` (its peak), in KiB.

    Never ``getrusage().ru_maxrss``: Linux carries the parent's peak across fork and exec
    into it, so a peer spawned by a pytest process that once held 465 MB reports 465 MB
    however little it uses, and a growth measured with it inside pytest reads 0. ``VmHWM``
    belongs to the address space exec made, so it is this program's own.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} line in /proc/{pid}/status")


def stats_dict(transport: Transport) -> dict[str, Any]:
    s = transport.stats
    return {
        "sent": s.sent,
        "received": s.received,
        "dropped_malformed": s.dropped_malformed,
        "dropped_unknown_type": s.dropped_unknown_type,
        "dropped_overflow": s.dropped_overflow,
        "sequence_gaps": s.sequence_gaps,
        **s.extra,
    }
