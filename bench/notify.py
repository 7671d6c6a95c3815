"""Notification benchmark: stage changes → outbox → Redis → `helpdesk worker` → SMTP sink,
against (a) a do-nothing Dramatiq actor with the same worker flags on the same Redis and
(b) a loop composing the same mails and sending them over one persistent smtplib
connection to the same sink. Runs are interleaved, all in one run of this script.

The sink is an aiosmtpd server in a process of its own whose handler only notes the
arrival time of each Message-ID, so it is not the bottleneck. Commit-to-receipt latency is
that arrival time minus the outbox row's ``created_at`` (same machine clock).

Throughput is measured as a drain: the N stage changes are committed (and published)
while the worker is stopped (SIGSTOP), then it is let go and timed until every row is
``sent``; the do-nothing actor gets the same treatment. So the worker's rate is not
bounded by the committing loop, which is reported on its own (commit_per_s). A last,
live batch is committed with the worker running, for commit-to-receipt latency.

Prints one JSON line: notify_per_s (worker drain: claim, render, send, record),
commit_per_s (stage changes committed and published, one transaction each),
do_nothing_actor_per_s, compose_send_loop_per_s, actor_ratio and compose_send_ratio,
live_per_s with live_p50_ms / live_p99_ms, and the worker flags.

Usage: python bench/notify.py [--small] [--messages N] [--runs R] [--processes P] [--threads T]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.common import HELPDESK, ROOT, env_with, free_port, median, percentile, scratch_database, wait_port  # noqa: E402

REDIS_URL = os.environ.get("HELPDESK_TEST_REDIS", "redis://127.0.0.1:6379/0")
STAGE = "Cita agendada"

SINK = """
import json, signal, sys, threading, time
from aiosmtpd.controller import Controller
arrivals = {}
class Count:
    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or b""
        at = data.find(b"\\nMessage-ID: <")
        if at >= 0:
            end = data.find(b">", at)
            arrivals.setdefault(data[at + 14:end].decode(), time.time())  # first arrival
        return "250 OK"
c = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]), server_hostname="sink.localhost")
c.start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
c.stop()
open(sys.argv[2], "w").write(json.dumps(arrivals))
"""

# A do-nothing actor on the product's broker factory, with the worker's flags. It runs from
# a file, not ``python -c``: with --processes > 1 its children are spawned, and a spawned
# child imports the parent's main module to find ``consume``; from ``-c`` there is none,
# every child died at once and the baseline waited forever (the hang of --processes 2).
NOOP = """
import multiprocessing, signal, sys, threading
import dramatiq, redis
from worker.broker import redis_broker
def consume(url, ns, threads):
    broker = redis_broker(url, ns)
    counter = redis.Redis.from_url(url)
    def noop(i):
        counter.incr(ns + ":done")
    dramatiq.Actor(noop, broker=broker, actor_name="noop", queue_name="noop", priority=0,
                   options={"max_retries": 0})
    w = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=1000)
    w.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    w.stop()
if __name__ == "__main__":
    url, ns, processes, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if processes == 1:
        consume(url, ns, threads)
    else:
        spawn = multiprocessing.get_context("spawn")
        kids = [spawn.Process(target=consume, args=(url, ns, threads)) for _ in range(processes)]
        for k in kids: k.start()
        signal.signal(signal.SIGTERM, lambda *_: [k.terminate() for k in kids])
        for k in kids: k.join()
"""


def make_tickets(rt, count: int, batch: int) -> list[int]:  # type: ignore[no-untyped-def]
    """``count`` open tickets, each with its own requester (set-up, not timed)."""
    from models.contact import Contact, ContactEmail
    from models.tickets import NewMessage, open_ticket

    numbers = []
    with rt.transaction() as session:
        for i in range(count):
            contact = Contact(name=f"Usuario {i}", preferred_channel="email")
            contact.emails.append(ContactEmail(email=f"usuario{batch}_{i}@cliente.mx"))
            session.add(contact)
            ticket = open_ticket(session, catalog=rt.catalog, settings=rt.settings, pipeline_id="mantenimiento",
                                 requester=contact, subject=f"Servicio unidad {i}",
                                 inbox_address="soporte@jhleasing.mx", acknowledge=False,
                                 message=NewMessage(channel="email", text="Necesito servicio.", subject="Servicio",
                                                    external_id=f"bench{batch}_{i}@cliente.mx",
                                                    sender=f"u{i}@cliente.mx"))
            numbers.append(ticket.number)
    return numbers


def sent_count(conn: psycopg.Connection, floor: int = 0) -> int:
    """Stage notifications sent among the rows after id ``floor``. Polled every few ms
    while the worker drains: counted over the whole table (thousands of rows by the last
    run) it cost the database about a millisecond a poll, a fifth of a core taken from
    the machine under test; over one batch it costs a fraction of that."""
    return int(conn.execute("SELECT count(*) FROM outbox WHERE id > %s AND status = 'sent' AND template = 'stage'",
                            (floor,)).fetchone()[0])


def last_id(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0])


def wait_for(check, target: int, timeout: float = 600, alive=None) -> None:  # type: ignore[no-untyped-def]
    """Poll ``check()`` every 20 ms until it reaches ``target``; fail at once when the
    consumer (``alive``: its Popen) has exited, instead of waiting out the timeout.

    Polled every 5 ms, the count and its driver work took a quarter of a core from the
    two the worker, the database and the sink share (measured); 20 ms is at most 0.5 %
    of a drain of several seconds."""
    deadline = time.monotonic() + timeout
    while (got := check()) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"stuck at {got} of {target}")
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the consumer exited ({alive.returncode}) at {got} of {target}")
        time.sleep(0.02)


def commit_changes(rt, numbers: list[int]) -> float:  # type: ignore[no-untyped-def]
    """Stage changes committed one by one, each published after its commit; returns the rate."""
    from models.stages import move_stage
    from models.tickets import find_by_number

    start = time.perf_counter()
    for number in numbers:
        with rt.transaction() as session:
            ticket = find_by_number(session, number)
            move_stage(session, ticket, STAGE, catalog=rt.catalog, settings=rt.settings)
    return len(numbers) / (time.perf_counter() - start)


def drain(consumer: subprocess.Popen[bytes], fill, check, target: int, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Queue the work with ``consumer`` stopped (SIGSTOP to its process group), then let it
    go and time until ``check() >= target``; returns (drain rate, fill rate). Measured
    this way the consumer's throughput is not bounded by the producer's."""
    os.killpg(consumer.pid, signal.SIGSTOP)
    try:
        fill_rate = fill()
    finally:
        os.killpg(consumer.pid, signal.SIGCONT)
    start = time.perf_counter()
    wait_for(check, target, alive=consumer)
    return n / (time.perf_counter() - start), fill_rate


def run_product(rt, worker, conn, numbers: list[int]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(worker drain rate, commit rate) for one batch of stage changes."""
    floor = last_id(conn)
    return drain(worker, lambda: commit_changes(rt, numbers), lambda: sent_count(conn, floor), len(numbers),
                 len(numbers))


def run_noop(noop, client: redis.Redis, namespace: str, n: int) -> float:  # type: ignore[no-untyped-def]
    """Drain rate of ``n`` jobs of the do-nothing actor."""
    import dramatiq

    from worker.broker import close_broker, redis_broker

    broker = redis_broker(REDIS_URL, namespace)
    actor = dramatiq.Actor(lambda i: None, broker=broker, actor_name="noop", queue_name="noop", priority=0,
                           options={"max_retries": 0})
    before = int(client.get(namespace + ":done") or 0)

    def fill() -> float:
        for i in range(n):
            actor.send(i)
        return 0.0

    try:
        rate, _ = drain(noop, fill, lambda: int(client.get(namespace + ":done") or 0), before + n, n)
    finally:
        close_broker(broker)
    return rate


def load_notes(rt, ids: list[int]) -> list:  # type: ignore[no-untyped-def]
    """The notifications of ``ids`` as the worker reads them (read before timing)."""
    from outbound.compose import load_outbox

    with rt.engine.connect() as conn:
        return [load_outbox(conn, i, settings=rt.settings, catalog=rt.catalog) for i in ids]


def run_compose_send(rt, notes: list, port: int) -> float:  # type: ignore[no-untyped-def]
    """Render + compose + serialize + send over one persistent connection."""
    from models.base import utcnow
    from outbound.email import wire_bytes
    from outbound.mime import compose_email
    from outbound.render import Renderer

    renderer = Renderer(locale=rt.settings.locale, default_timezone=rt.settings.timezone)
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for note in notes:
            rendered = renderer.email(note.for_channel("email"))
            msg = compose_email(note, rendered.subject, rendered.text, rendered.html,
                                company_name=rt.settings.company_name, now=utcnow())
            smtp.sendmail(note.from_address, [note.contact.email], wire_bytes(msg))
    return len(notes) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="200 messages x 3 runs")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--processes", type=int, default=1)
    # The worker's own default (8). Third session this was 4: the worker was then short of
    # CPU and each thread beyond what hides the round trips only added GIL hand-offs. Since
    # the send step got cheaper (fifth session) it is short of concurrency instead: its
    # threads wait on the relay's and the database's round trips. Drains alternating 4 and
    # 8 threads, three pairs, each rate multiplied by the sink's CPU seconds per message
    # (a fixed workload, so it follows the machine's speed): 4 threads 293-308, 8 threads
    # 308-329.
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    # SIGTERM (e.g. ``timeout``) unwinds through the clean-up below instead of leaving the
    # worker's children, the scratch database and the Redis keys behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = args.messages or (200 if args.small else 1000)
    runs = args.runs or (3 if args.small else 5)

    from sqlalchemy import select

    from config.settings import Settings
    from models.outbox import Outbox
    from models.ticket import Ticket
    from worker.relay import OutboundService
    from worker.runtime import Runtime

    namespace = f"helpdesk-bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    sink_port = free_port()
    arrivals_file = Path(tempfile.mkstemp(prefix="notify-arrivals-", suffix=".json")[1])
    noop_file = Path(tempfile.mkstemp(prefix="notify-noop-", suffix=".py")[1])
    procs: list[subprocess.Popen[bytes]] = []
    flags = ["--processes", str(args.processes), "--threads", str(args.threads)]
    product, noop, compose, commits = [], [], [], []
    try:
        with scratch_database() as url:
            env = env_with(database_url=url, redis_url=REDIS_URL, redis_namespace=namespace,
                           outbound_smtp_url=f"smtp://127.0.0.1:{sink_port}", inbox_addresses="soporte@jhleasing.mx")
            procs.append(subprocess.Popen([sys.executable, "-c", SINK, str(sink_port), str(arrivals_file)]))
            wait_port("127.0.0.1", sink_port)
            procs.append(subprocess.Popen([HELPDESK, "worker", *flags], env=env, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
            noop_file.write_text(NOOP)
            procs.append(subprocess.Popen([sys.executable, str(noop_file), REDIS_URL, namespace + "-noop",
                                           str(args.processes), str(args.threads)], cwd=ROOT,
                                          env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True))
            settings = Settings(_env_file=None, database_url=url, redis_url=REDIS_URL, redis_namespace=namespace,
                                inbox_addresses=["soporte@jhleasing.mx"])
            rt = Runtime.build(settings)
            publisher = OutboundService.redis(rt, consume=False, sweep=False).start()
            watch = psycopg.connect(url, autocommit=True)
            try:
                batches = [make_tickets(rt, n, b) for b in range(runs + 2)]
                worker, noop_proc = procs[1], procs[2]
                warm = batches[0][: min(50, n)]
                commit_changes(rt, warm)  # warm-up: worker connected, caches hot
                wait_for(lambda: sent_count(watch), len(warm))
                run_noop(noop_proc, client, namespace + "-noop", 50)
                for batch in batches[1:-1]:
                    noop.append(run_noop(noop_proc, client, namespace + "-noop", n))
                    rate, commit_rate = run_product(rt, worker, watch, batch)
                    product.append(rate)
                    commits.append(commit_rate)
                    with rt.sessions() as session:
                        ids = list(session.scalars(select(Outbox.id).where(Outbox.template == "stage")
                                                  .order_by(Outbox.id.desc()).limit(n)))
                    compose.append(run_compose_send(rt, load_notes(rt, ids), sink_port))
                # Latency, with the worker running while the changes are committed.
                floor = last_id(watch)
                start = time.perf_counter()
                commit_changes(rt, batches[-1])
                wait_for(lambda: sent_count(watch, floor), n)
                live = n / (time.perf_counter() - start)
                with rt.sessions() as session:
                    live_rows = list(session.scalars(
                        select(Outbox).where(Outbox.ticket_id.in_(
                            select(Ticket.id).where(Ticket.number.in_(batches[-1]))), Outbox.template == "stage")))
            finally:
                watch.close()
                publisher.stop(timeout=5)
                rt.close()
            for proc in procs[1:]:
                proc.send_signal(signal.SIGTERM)
            for proc in procs[1:]:
                proc.wait(60)
            procs[0].send_signal(signal.SIGTERM)
            procs[0].wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc is not procs[0]:  # session leaders: their spawned children too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for key in client.scan_iter(match=f"{namespace}*", count=500):
            client.delete(key)
        client.close()
        noop_file.unlink(missing_ok=True)
    arrivals = json.loads(arrivals_file.read_text() or "{}")
    arrivals_file.unlink()
    # The compose loop resends the rows' Message-IDs later; the sink keeps the first arrival.
    lat = [(arrivals[r.provider_id] - r.created_at.replace(tzinfo=UTC).timestamp()) * 1000
           for r in live_rows if r.provider_id in arrivals]
    pickup = [(r.claimed_at - r.created_at).total_seconds() * 1000 for r in live_rows]
    result = {
        "benchmark": "notify", "messages": n, "runs": runs,
        "worker_flags": " ".join(flags),
        "notify_per_s": round(median(product), 1),
        "commit_per_s": round(median(commits), 1),
        "live_per_s": round(live, 1),
        "do_nothing_actor_per_s": round(median(noop), 1),
        "compose_send_loop_per_s": round(median(compose), 1),
        "actor_ratio": round(median(product) / median(noop), 3),
        "compose_send_ratio": round(median(product) / median(compose), 3),
        "live_p50_ms": round(percentile(lat, 50), 2),
        "live_p99_ms": round(percentile(lat, 99), 2),
        "live_pickup_p50_ms": round(percentile(pickup, 50), 2),
        "machine": f"{platform.machine()} {platform.python_version()} cores={os.cpu_count()}",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
