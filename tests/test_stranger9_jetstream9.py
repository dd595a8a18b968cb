"""Stranger round 9, jetstream9: a payments line on JetStream, attacked with real processes.

PaymentRequest -> fraud check -> FraudCleared -> ledger -> LedgerPosting -> notifier, each
stage a ``tests/jetstream9_peers/stage.py`` process (a ``ServiceRuntime`` on one durable
consumer) and the requests from ``payer.py``, all on a private ``nats-server -js``
(``nats_server``). Every test counts, at the end, against the README's JetStream row (at
least once: nothing acknowledged lost, repeats allowed but counted and bounded): lost,
repeated and reordered payments, read from what the server stored (every LedgerPosting in
the stream: the final ledger, deduplicated by ``pay_id``) and from the stages' journals
(``B``/``R`` lines written when a handler begins / returns). Seeds are printed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from jetstream9_peers import messages  # noqa: F401  (registers the payment types for decoding)
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from peers.harness import NatsServer, Peer, Peers

from mycelium_mono import U64, MessageBus, message
from mycelium_mono.bus.transports.jetstream import StreamOptions, ensure_stream
from mycelium_mono.bus.transports.wire import MAX_FRAME, Decoded, decode_body

pytest_plugins = ["conftest_distributed"]
pytestmark = [pytest.mark.network, pytest.mark.multiprocess]

REQUESTS = "pay9_request.39401"
CLEARED = "pay9_cleared.39402"
POSTINGS = "pay9_posting.39403"
CONSUMED = {"fraud": "pay9_request-39401", "ledger": "pay9_cleared-39402",
            "notify": "pay9_posting-39403"}  # fmt: skip


@pytest.fixture
def pay_peers(tmp_path: Path) -> Any:
    p = Peers(tmp_path, package="jetstream9_peers")
    try:
        yield p
    finally:
        p.close()


def spawn_stage(
    peers: Peers, server: NatsServer, stream: str, role: str, record: Path, *extra: str,
    name: str | None = None,
) -> Peer:
    durable = name or role
    return peers.spawn(
        "stage", "--url", server.url, "--stream", stream, "--name", durable, "--role", role,
        "--record", str(record), *extra, name=f"{durable}",
    )  # fmt: skip


def spawn_payer(peers: Peers, server: NatsServer, stream: str, count: int, *extra: str) -> Peer:
    return peers.spawn(
        "payer", "--url", server.url, "--stream", stream, "--count", str(count), *extra,
        name="payer",
    )


async def js_call(url: str, call: Any) -> Any:
    nc = await nats.connect(url)
    try:
        return await call(nc.jetstream())
    finally:
        await nc.close()


async def consumer_info(url: str, stream: str, durable: str, role: str) -> Any:
    name = f"{durable}-{CONSUMED[role]}"
    return await js_call(url, lambda js: js.consumer_info(stream, name))


async def wait_settled(
    url: str, stream: str, durable: str, role: str, floor: int, timeout: float
) -> None:
    """Everything stored for ``role`` delivered to ``durable`` and acked, at least ``floor``."""

    async def poll() -> None:
        while True:
            try:
                info = await consumer_info(url, stream, durable, role)
            except (nats.js.errors.NotFoundError, nats.errors.Error, OSError):
                info = None
            if (
                info is not None
                and info.num_pending == 0
                and info.num_ack_pending == 0
                and info.num_redelivered == 0
                and info.delivered.stream_seq >= floor
            ):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def stored(url: str, stream: str, subject: str) -> list[int]:
    """``pay_id`` of every message of ``subject`` stored, in stream order."""

    async def read(js: Any) -> list[int]:
        info = await js.stream_info(stream, subjects_filter=subject)
        expected = (info.state.subjects or {}).get(subject, 0)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0
        )
        psub = await js.pull_subscribe(subject, stream=stream, config=config)
        found: list[int] = []
        async with asyncio.timeout(30):
            while len(found) < expected:
                try:
                    msgs = await psub.fetch(1000, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for m in msgs:
                    decoded = decode_body(m.data, subject, MAX_FRAME)
                    assert isinstance(decoded, Decoded), decoded
                    assert decoded.message is not None
                    found.append(int(decoded.message.pay_id))
        return found

    result: list[int] = await js_call(url, read)
    return result


async def dead_letters(url: str, stream: str) -> int:
    async def count(js: Any) -> int:
        try:
            return int((await js.stream_info(f"DLQ_{stream}")).state.messages)
        except nats.js.errors.NotFoundError:
            return 0

    result: int = await js_call(url, count)
    return result


def journal(path: Path, kind: str = "R") -> list[tuple[int, int]]:
    """(pid, pay_id) of every ``kind`` line (B: began, R: returned, F: raised)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == kind:
            rows.append((int(parts[0]), int(parts[2])))
    return rows


def report(ids: list[int], count: int) -> dict[str, int]:
    """lost / repeated / reordered (a first sight of an id after a higher one) / strangers."""
    seen: set[int] = set()
    reordered = 0
    high = 0
    for pay_id in ids:
        if pay_id not in seen:
            reordered += pay_id < high
            seen.add(pay_id)
        high = max(high, pay_id)
    wanted = set(range(1, count + 1))
    return {
        "lost": len(wanted - seen),
        "repeated": len(ids) - len(seen),
        "reordered": reordered,
        "strangers": len(seen - wanted),
    }


async def until(condition: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.02)


# -- 1. the middle stage of three SIGKILLed at seed-chosen points ------------------------------


@pytest.mark.parametrize("seed", [9401, 9402])
async def test_the_ledger_stage_sigkilled_at_random_points_posts_every_payment(
    pay_peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, seed: int
) -> None:
    """Three stages run; the payer publishes 240 payments while the ledger (the middle stage)
    is SIGKILLed three times at seed-chosen numbers of postings and restarted under its durable
    name. At the end every payment has a posting in the stream and a notification (0 lost),
    nothing is dead-lettered, and the repeats are bounded by what the killed ledger held."""
    rng = random.Random(seed)
    print(f"seed {seed}")
    count = 240
    url = nats_server.url
    records = {role: tmp_path / f"{role}.rec" for role in CONSUMED}
    args = ("--slow-ms", "2", "--fetch-batch", "8", "--max-ack-pending", "16")
    fraud = spawn_stage(pay_peers, nats_server, stream_name, "fraud", records["fraud"], *args)
    ledger = spawn_stage(pay_peers, nats_server, stream_name, "ledger", records["ledger"], *args)
    notify = spawn_stage(pay_peers, nats_server, stream_name, "notify", records["notify"], *args)
    for p in (fraud, ledger, notify):
        await p.aexpect("READY", timeout=60)
    payer = spawn_payer(pay_peers, nats_server, stream_name, count, "--pace-ms", "2")
    kills = sorted(rng.sample(range(10, count - 10), 3))
    print(f"ledger killed after {kills} postings")
    for at in kills:
        await until(lambda at=at: len(journal(records["ledger"])) >= at, 40, f"{at} postings")
        ledger.kill()
        ledger = spawn_stage(
            pay_peers, nats_server, stream_name, "ledger", records["ledger"], *args
        )
        await ledger.aexpect("READY", timeout=60)
    await payer.aexpect("DONE", timeout=60)
    for role in CONSUMED:
        await wait_settled(url, stream_name, role, role, 1, timeout=60)
    postings = await stored(url, stream_name, POSTINGS)
    result = report(postings, count)
    notified = report([i for _, i in journal(records["notify"])], count)
    print(f"ledger postings {result}; notifications {notified}")
    assert result["lost"] == 0 and result["strangers"] == 0, result
    assert notified["lost"] == 0, notified
    assert await dead_letters(url, stream_name) == 0
    # Each kill repeats at most what the ledger held unacked (max_ack_pending).
    assert result["repeated"] <= 3 * 16, result


# -- 2. a consumer SIGSTOPped past ack_wait, then SIGCONTed ------------------------------------


@pytest.mark.parametrize("competing", [False, True])
async def test_a_ledger_sigstopped_past_ack_wait_then_continued_loses_nothing(
    pay_peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, competing: bool
) -> None:
    """The ledger (ack_wait 1 s, slow handlers) is SIGSTOPped for 3.5 s while it holds
    payments, then SIGCONTed; with ``competing`` a second ledger process shares its durable.
    README: "only a dead or stalled consumer's messages are handed out again" and "services
    must tolerate a repeat": what it held may be handled twice, nothing may be lost."""
    count = 120
    url = nats_server.url
    rec = tmp_path / "ledger.rec"
    args = ("--slow-ms", "20", "--fetch-batch", "4", "--max-ack-pending", "8",
            "--ack-wait", "1.0", "--max-deliver", "3")  # fmt: skip
    fraud = spawn_stage(pay_peers, nats_server, stream_name, "fraud", tmp_path / "f.rec")
    ledgers = [spawn_stage(pay_peers, nats_server, stream_name, "ledger", rec, *args)]
    if competing:
        ledgers.append(spawn_stage(pay_peers, nats_server, stream_name, "ledger", rec, *args))
    for p in (fraud, *ledgers):
        await p.aexpect("READY", timeout=60)
    payer = spawn_payer(pay_peers, nats_server, stream_name, count, "--pace-ms", "5")
    await until(lambda: len(journal(rec)) >= 30, 40, "30 postings")
    victim = ledgers[0]
    os.kill(victim.proc.pid, signal.SIGSTOP)
    began_at_stop = {i for pid, i in journal(rec, "B") if pid == victim.proc.pid}
    returned_at_stop = {i for pid, i in journal(rec) if pid == victim.proc.pid}
    held = began_at_stop - returned_at_stop
    await asyncio.sleep(3.5)  # the stall itself: 3.5 ack_waits without a word from it
    os.kill(victim.proc.pid, signal.SIGCONT)
    await payer.aexpect("DONE", timeout=60)
    await wait_settled(url, stream_name, "ledger", "ledger", count, timeout=60)
    postings = await stored(url, stream_name, POSTINGS)
    result = report(postings, count)
    handled = Counter(i for _, i in journal(rec))
    twice = sorted(i for i, n in handled.items() if n > 1)
    print(f"competing={competing}: held at the stop {sorted(held)}; postings {result}; "
          f"handled twice {twice}; dead letters {await dead_letters(url, stream_name)}")
    for p in ledgers:
        assert p.proc.poll() is None, p.stderr_tail()
    assert result["lost"] == 0 and result["strangers"] == 0, result
    assert await dead_letters(url, stream_name) == 0
    assert len(twice) <= 8, twice  # at most its max_ack_pending


# -- 3. two ledgers on one durable: failures, a dead letter and a poison message ---------------


async def dead_letter_copies(url: str, stream: str) -> list[tuple[int, dict[str, str]]]:
    """(pay_id, headers) of every dead-letter copy stored."""

    async def read(js: Any) -> list[tuple[int, dict[str, str]]]:
        name = f"DLQ_{stream}"
        try:
            total = (await js.stream_info(name)).state.messages
        except nats.js.errors.NotFoundError:
            return []
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0
        )
        psub = await js.pull_subscribe(f"dlq.{stream}.>", stream=name, config=config)
        found: list[tuple[int, dict[str, str]]] = []
        async with asyncio.timeout(30):
            while len(found) < total:
                try:
                    msgs = await psub.fetch(100, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for m in msgs:
                    subject = m.headers["Mycelium-Subject"] if m.headers else ""
                    decoded = decode_body(m.data, subject, MAX_FRAME)
                    pay_id = -1
                    if isinstance(decoded, Decoded) and decoded.message is not None:
                        pay_id = int(decoded.message.pay_id)
                    found.append((pay_id, dict(m.headers or {})))
        return found

    result: list[tuple[int, dict[str, str]]] = await js_call(url, read)
    return result


async def test_two_ledgers_on_one_durable_split_the_work_retry_failures_and_park_one(
    pay_peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path
) -> None:
    """Two ledger processes share the durable ``ledger``. Payments 7, 50 and 90 fail once in
    each process (the card issuer timed out), payment 33 fails every time, and a garbage
    frame is stored among the cleared payments. Nothing crashes, so each payment is posted by
    exactly one ledger (a work queue splits the stream), both take a share, the transient
    failures are posted once after their retries, 33 is dead-lettered once after
    ``max_deliver`` (3) deliveries with its error, and the garbage is terminated as poison."""
    count = 120
    url = nats_server.url
    rec = tmp_path / "ledger.rec"
    args = ("--slow-ms", "3", "--fetch-batch", "4", "--max-ack-pending", "16",
            "--ack-wait", "5", "--max-deliver", "3", "--fail-ids", "7,50,90",
            "--fail-times", "1", "--fail-always", "33")  # fmt: skip
    fraud = spawn_stage(pay_peers, nats_server, stream_name, "fraud", tmp_path / "f.rec")
    ledgers = [
        spawn_stage(pay_peers, nats_server, stream_name, "ledger", rec, *args),
        spawn_stage(pay_peers, nats_server, stream_name, "ledger", rec, *args),
    ]
    for p in (fraud, *ledgers):
        await p.aexpect("READY", timeout=60)
    payer = spawn_payer(pay_peers, nats_server, stream_name, count, "--pace-ms", "3")
    await until(lambda: len(journal(rec)) >= 40, 40, "40 postings")

    async def poison(js: Any) -> None:
        await js.publish(CLEARED, b"\x00not a payment at all\xff" * 3)

    await js_call(url, poison)
    await payer.aexpect("DONE", timeout=60)
    await wait_settled(url, stream_name, "ledger", "ledger", count, timeout=60)
    results = []
    for p in ledgers:
        p.send("QUIT")
        results.append(await p.aresult(timeout=30))
    postings = await stored(url, stream_name, POSTINGS)
    result = report(postings, count)
    handled = Counter(i for _, i in journal(rec))
    by_pid = Counter(pid for pid, _ in journal(rec))
    copies = await dead_letter_copies(url, stream_name)
    print(f"postings {result}; share {dict(by_pid)}; dead letters {copies}; stats {results}")
    assert set(range(1, count + 1)) - set(postings) == {33}, result
    assert len(postings) == count - 1, result  # no repeats: nothing crashed or stalled
    assert max(handled.values()) == 1, [i for i, n in handled.items() if n > 1]
    assert set(handled) == set(range(1, count + 1)) - {33}
    assert len(by_pid) == 2, by_pid
    assert sum(r.get("poison", 0) for r in results) == 1, results
    assert [pay_id for pay_id, _ in copies] == [33], copies
    headers = copies[0][1]
    assert headers["Mycelium-Deliveries"] == "3", headers
    assert "card issuer timed out" in headers["Mycelium-Error"], headers
    assert sum(r.get("dead_lettered", 0) for r in results) == 1, results


# -- 4. the server SIGKILLed and restarted under the payer and all three stages ----------------


@pytest.mark.parametrize("seed", [9411, 9412])
async def test_a_server_restart_under_the_payer_and_three_stages_loses_no_payment(
    pay_peers: Peers, nats_server: NatsServer, stream_name: str, tmp_path: Path, seed: int
) -> None:
    """The payer is publishing (chunks of 20, each flushed) and every stage consuming when the
    server is SIGKILLed at a seed-chosen number of postings and restarted on the same store
    after a seed-chosen pause. A chunk whose flush failed is published again by the payer.
    Every payment the payer saw confirmed has a posting and a notification at the end."""
    rng = random.Random(seed)
    print(f"seed {seed}")
    count = 300
    url = nats_server.url
    records = {role: tmp_path / f"{role}.rec" for role in CONSUMED}
    args = ("--slow-ms", "1", "--fetch-batch", "8", "--max-ack-pending", "32", "--ack-wait", "2")
    stages = [
        spawn_stage(pay_peers, nats_server, stream_name, role, records[role], *args)
        for role in CONSUMED
    ]
    for p in stages:
        await p.aexpect("READY", timeout=60)
    payer = spawn_payer(pay_peers, nats_server, stream_name, count, "--pace-ms", "3")
    at = rng.randrange(count // 5, count // 2)
    await until(lambda: len(journal(records["ledger"])) >= at, 40, f"{at} postings")
    nats_server.kill()
    pause = rng.uniform(0.2, 2.0)
    print(f"server killed after {at} postings, restarted after {pause:.2f} s")
    await asyncio.sleep(pause)
    nats_server.start()
    await payer.aexpect("DONE", timeout=60)
    for role in CONSUMED:
        await wait_settled(url, stream_name, role, role, 1, timeout=60)
    for p in stages:
        assert p.proc.poll() is None, p.stderr_tail()
    requests = report(await stored(url, stream_name, REQUESTS), count)
    postings = report(await stored(url, stream_name, POSTINGS), count)
    notified = report([i for _, i in journal(records["notify"])], count)
    print(f"requests {requests}; postings {postings}; notifications {notified}")
    assert requests["lost"] == 0, requests
    assert postings["lost"] == 0 and postings["strangers"] == 0, postings
    assert notified["lost"] == 0, notified
    assert await dead_letters(url, stream_name) == 0


# -- 5. services starting together on a fresh stream -------------------------------------------


@message(type_id=39410, topic="pay9_refund")
class Refund:
    pay_id: U64


@message(type_id=39411, topic="pay9_chargeback")
class Chargeback:
    pay_id: U64


@message(type_id=39412, topic="pay9_payout")
class Payout:
    pay_id: U64


@message(type_id=39413, topic="pay9_invoice")
class Invoice:
    pay_id: U64


async def test_services_starting_together_on_a_fresh_stream_all_start_and_all_are_stored(
    nats_server: NatsServer,
) -> None:
    """Four services (each consuming one type of its own) start at once on a stream nobody
    created yet, as ``docker compose up`` starts them. Before the fix, ensure_stream raced:
    all of them found no stream and added it, and every one but the first died at ``ready()``
    with "stream name already in use with a different configuration" (err 10058); and of two
    that read the same configuration, each wrote back only its own subject, so the other's
    was dropped and its publishes were stored nowhere. Now every one starts, the stream
    captures every topic, and a payment published on each type reaches its consumer."""
    types = [Refund, Chargeback, Payout, Invoice]
    for trial in range(6):
        stream = f"T9_RACE_{trial}_{os.getpid()}_{random.randrange(1 << 30)}"
        buses = [
            MessageBus.with_nats(
                nats_server.url, jetstream=True, stream=stream, name=f"svc{i}", ack_wait_s=5.0
            )
            for i in range(len(types))
        ]
        subs = [bus.subscribe(t, maxsize=10) for bus, t in zip(buses, types, strict=True)]
        started = await asyncio.gather(
            *(bus.start() for bus in buses), return_exceptions=True
        )
        try:
            assert [r for r in started if r is not None] == [], started
            ready = await asyncio.gather(*(bus.ready() for bus in buses), return_exceptions=True)
            assert [r for r in ready if r is not None] == [], ready
            info = await js_call(nats_server.url, lambda js, s=stream: js.stream_info(s))
            assert sorted(info.config.subjects) == sorted(f"{t.TOPIC}.*" for t in types), (
                f"trial {trial}: the stream lost a subject: {info.config.subjects}"
            )
            sender = buses[0]
            for n, t in enumerate(types):
                await sender.publisher(t).publish(t(pay_id=n + 1))
            await sender.transport.flush()
            for n, sub in enumerate(subs):
                got = await asyncio.wait_for(sub.recv(), 10)
                assert int(got.pay_id) == n + 1
        finally:
            for bus in buses:
                await bus.close()
            await js_call(nats_server.url, lambda js, s=stream: js.delete_stream(s))


async def test_concurrent_ensure_stream_calls_leave_every_subject_in_the_stream(
    nats_server: NatsServer,
) -> None:
    """The race itself, eight connections at a time, twenty times: each asks the same new
    stream to capture a subject of its own. Before the fix 67 of 120 calls raised (err 10058)
    and 21 subjects of the others were dropped by a concurrent update; now none."""
    conns = [await nats.connect(nats_server.url) for _ in range(8)]
    try:
        for trial in range(20):
            name = f"T9_ENSURE_{trial}_{random.randrange(1 << 30)}"
            wanted = [f"pay9_race{trial}_{name.lower()}_{i}.*" for i in range(len(conns))]
            results = await asyncio.gather(
                *(ensure_stream(nc.jetstream(), StreamOptions(name), subject)
                  for nc, subject in zip(conns, wanted, strict=True)),
                return_exceptions=True,
            )  # fmt: skip
            assert [r for r in results if r is not None] == [], results
            info = await conns[0].jetstream().stream_info(name)
            assert sorted(info.config.subjects) == sorted(wanted), (trial, info.config.subjects)
            await conns[0].jetstream().delete_stream(name)
    finally:
        for nc in conns:
            await nc.close()


async def test_a_publish_to_a_subject_the_stream_lost_adds_it_again_and_is_stored(
    nats_server: NatsServer, stream_name: str
) -> None:
    """The refunds service has stored a refund; then the stream loses ``pay9_refund.*`` (an
    operator's ``nats stream edit``, or a concurrent update written over ours from an older
    read). The transport had cached "this topic is captured" and retried every later publish
    against no stream until ``flush_timeout_s``, then failed it saying "is the NATS server
    up?" (it was). Now a publish nobody stores puts its subject back and is stored."""
    bus = MessageBus.with_nats(
        nats_server.url, jetstream=True, stream=stream_name, flush_timeout_s=3.0,
        ack_timeout_s=0.5,
    )
    async with bus:
        refunds = bus.publisher(Refund)
        await refunds.publish(Refund(pay_id=1))
        await bus.transport.flush()

        async def drop_subject(js: Any) -> None:
            config = (await js.stream_info(stream_name)).config
            config.subjects = ["pay9_elsewhere.*"]
            await js.update_stream(config)

        await js_call(nats_server.url, drop_subject)
        await refunds.publish(Refund(pay_id=2))
        await bus.transport.flush()
        assert bus.transport.stats.extra.get("stream_subject_restored", 0) >= 1
    assert await stored(nats_server.url, stream_name, "pay9_refund.39410") == [1, 2]
