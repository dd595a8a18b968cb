"""One stage of the payments line on a ``ServiceRuntime`` (one durable JetStream consumer).

``--role fraud``: PaymentRequest -> FraudCleared; ``ledger``: FraudCleared -> LedgerPosting;
``notify``: a sink of LedgerPosting. Every handler appends ``B <pay_id>`` when it begins and
``R <pay_id>`` just before it returns to ``--record`` (one ``os.write`` each, O_APPEND: the
lines survive a SIGKILL), prefixed with this process's pid. ``--fail-ids 3,9
--fail-times N``: the handler raises on those ids the first N times this process sees them;
``--fail-always 33``: every time. ``--slow-ms``: an awaited pause before emitting. Prints
``READY`` once consuming, runs until ``QUIT`` (a graceful ``runtime.shutdown()``), then
``RESULT {stats}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter
from typing import Any

from peers.common import say, wait_for

from jetstream9_peers.messages import FraudCleared, LedgerPosting, PaymentRequest
from mycelium_mono import MessageBus, MessageHandler, ServiceContext, ServiceRuntime


class Journal:
    def __init__(
        self, path: str | None, fail_ids: set[int], fail_times: int, fail_always: set[int]
    ) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None
        self.pid = os.getpid()
        self.fail_ids = fail_ids
        self.fail_times = fail_times
        self.failed: Counter[int] = Counter()
        self.fail_always = fail_always

    def write(self, kind: str, pay_id: int) -> None:
        if self.fd is not None:
            os.write(self.fd, f"{self.pid} {kind} {pay_id}\n".encode())

    def begin(self, pay_id: int) -> None:
        self.write("B", pay_id)
        if pay_id in self.fail_always or (
            pay_id in self.fail_ids and self.failed[pay_id] < self.fail_times
        ):
            self.failed[pay_id] += 1
            self.write("F", pay_id)
            raise RuntimeError(f"payment {pay_id}: card issuer timed out")


class Stage:
    def __init__(self, journal: Journal, slow_s: float, out: type[Any] | None) -> None:
        self.journal = journal
        self.slow_s = slow_s
        self.out = out
        self.ctx: ServiceContext | None = None

    async def work(self, msg: Any) -> None:
        assert self.ctx is not None
        self.journal.begin(msg.pay_id)
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if self.out is not None:
            await self.ctx.emit(self.out(pay_id=msg.pay_id, amount_cents=msg.amount_cents))
        self.journal.write("R", msg.pay_id)


class FraudCheck(Stage, MessageHandler[PaymentRequest]):
    async def handle(self, msg: PaymentRequest) -> None:
        await self.work(msg)


class Ledger(Stage, MessageHandler[FraudCleared]):
    async def handle(self, msg: FraudCleared) -> None:
        await self.work(msg)


class Notifier(Stage, MessageHandler[LedgerPosting]):
    async def handle(self, msg: LedgerPosting) -> None:
        await self.work(msg)


ROLES: dict[str, tuple[type[Stage], type[Any] | None]] = {
    "fraud": (FraudCheck, FraudCleared),
    "ledger": (Ledger, LedgerPosting),
    "notify": (Notifier, None),
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--role", choices=sorted(ROLES), required=True)
    parser.add_argument("--record", default=None)
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--fetch-batch", type=int, default=16)
    parser.add_argument("--max-ack-pending", type=int, default=64)
    parser.add_argument("--ack-wait", type=float, default=2.0)
    parser.add_argument("--max-deliver", type=int, default=4)
    parser.add_argument("--backoff", type=float, default=0.05)
    parser.add_argument("--fail-ids", default="")
    parser.add_argument("--fail-times", type=int, default=0)
    parser.add_argument("--fail-always", default="")
    args = parser.parse_args()
    fail_ids = {int(x) for x in args.fail_ids.split(",") if x}
    fail_always = {int(x) for x in args.fail_always.split(",") if x}
    journal = Journal(args.record, fail_ids, args.fail_times, fail_always)
    bus = MessageBus.with_nats(
        args.url, jetstream=True, stream=args.stream, durable=args.name,
        ack_wait_s=args.ack_wait, fetch_batch=args.fetch_batch,
        max_ack_pending=args.max_ack_pending, max_deliver=args.max_deliver,
        backoff_s=(args.backoff,), flush_timeout_s=10.0, ack_timeout_s=2.0,
    )  # fmt: skip
    runtime = ServiceRuntime(bus, maxsize=100)
    cls, out = ROLES[args.role]
    stage = cls(journal, args.slow_ms / 1000, out)
    stage.ctx = (await runtime.spawn_service(stage)).context
    await bus.ready()
    say("READY")
    await wait_for("QUIT")
    await runtime.shutdown()
    stats = bus.transport.stats
    say("RESULT", {"received": stats.received, **stats.extra})


if __name__ == "__main__":
    asyncio.run(main())
