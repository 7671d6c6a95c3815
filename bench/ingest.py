"""Ingest benchmark: mail over SMTP into `helpdesk smtp` on PostgreSQL, against an
aiosmtpd server whose handler does nothing, fed by the same client in the same run.

Each run has two phases:

* live: the mail goes to `helpdesk smtp` while its threading children run, as in
  production; this gives accept_per_s, p50_ms and p99_ms (per-message SMTP transaction
  latency), and live_threaded_per_s (from the first mail sent to the last one threaded,
  which cannot pass the accept rate);
* backlog: the children are paused (SIGSTOP), the same number of new mails is accepted,
  and the children are resumed: threaded_per_s is the rate at which they thread and store
  that accepted mail, i.e. what threading can take, which the live figure cannot show.

Prints one JSON line: accept_per_s, baseline_per_s, accept_ratio, p50_ms, p99_ms,
baseline_p50_ms and baseline_p99_ms (the do-nothing server's latencies, same client),
threaded_per_s, live_threaded_per_s, parse_floor_per_s (a bare
message_from_bytes(policy=default) + walk over the same mails, one process),
thread_ratio (threaded_per_s / parse_floor_per_s).

Usage: python bench/ingest.py [--messages N] [--connections K] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import smtplib
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    HELPDESK,
    env_with,
    free_port,
    median,
    percentile,
    scratch_database,
    scratch_namespace,
    wait_port,
)
from tests.mailbuilder import mail  # noqa: E402

INBOX = "soporte@jhleasing.mx"
REPLY_BODY = "Gracias, quedo atento.\n\nEl lun, 3 mar 2025 a las 10:12, Soporte escribió:\n> Hola"
BASELINE = """
import sys, time
from aiosmtpd.controller import Controller
class Nothing:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
c = Controller(Nothing(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
time.sleep(10**6)
"""


def make_mails(n: int, run: int) -> list[bytes]:
    """Half new requests, half replies (In-Reply-To) to a request of the same batch."""
    mails: list[bytes] = []
    firsts: list[str] = []
    for i in range(n):
        if i % 2 == 0:
            mid = f"r{run}.n{i}@cliente.mx"
            firsts.append(mid)
            mails.append(mail(sender=f"usuario{run}_{i}@cliente.mx", subject=f"Servicio unidad {run}-{i}",
                              message_id=f"<{mid}>", body="Buen día, la unidad necesita servicio preventivo. " * 8))
        else:
            parent = firsts[-1]
            mails.append(mail(sender=f"usuario{run}_{i - 1}@cliente.mx",
                              subject=f"Re: Servicio unidad {run}-{i - 1}",
                              message_id=f"<r{run}.r{i}@cliente.mx>", in_reply_to=parent,
                              body=REPLY_BODY))
    return mails


def send_all(port: int, mails: list[bytes], connections: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [mails[i::connections] for i in range(connections)]

    def client(chunk: list[bytes]) -> None:
        own: list[float] = []
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            for data in chunk:
                t0 = time.perf_counter()
                smtp.sendmail("usuario@cliente.mx", [INBOX], data)
                own.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def parse_floor(mails: list[bytes]) -> float:
    start = time.perf_counter()
    for data in mails:
        msg = message_from_bytes(data, policy=policy.default)
        for part in msg.walk():
            part.get_content_type()
    return len(mails) / (time.perf_counter() - start)


def children_of(pid: int) -> list[int]:
    """The threading children of the door (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        os.kill(pid, sig)


def last_id(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM raw_messages").fetchone()[0])


def wait_threaded(url: str, after_id: int, count: int, timeout: float = 600) -> float:
    """Seconds until the ``count`` raw messages kept after ``after_id`` are processed
    (done or quarantined). Only those rows are counted: counting the whole table 50
    times a second cost the database more CPU than threading the batch."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() - start < timeout:
            (kept, left) = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('done', 'quarantined')) "
                "FROM raw_messages WHERE id > %s", (after_id,)).fetchone()
            if kept >= count and left == 0:
                return time.perf_counter() - start
            time.sleep(0.02)
    raise RuntimeError("threading did not finish")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--processors", type=int, default=1, help="helpdesk smtp --processors")
    args = parser.parse_args()

    with scratch_database() as url, scratch_namespace() as namespace:
        port, base_port = free_port(), free_port()
        env = env_with(database_url=url, smtp_listen=f"127.0.0.1:{port}", inbox_addresses=INBOX,
                       log_level="WARNING", redis_namespace=namespace)
        product = subprocess.Popen([HELPDESK, "smtp", "--processors", str(args.processors)], env=env,
                                   stderr=subprocess.DEVNULL)
        baseline = subprocess.Popen([sys.executable, "-c", BASELINE, str(base_port)])
        try:
            wait_port("127.0.0.1", port)
            wait_port("127.0.0.1", base_port)
            send_all(port, make_mails(50, 999), args.connections)  # warm-up
            send_all(base_port, make_mails(50, 999), args.connections)
            wait_threaded(url, 0, 50)
            accept, base, lat, base_lat, live, threaded, floors = [], [], [], [], [], [], []
            children = children_of(product.pid)
            if len(children) != args.processors:
                raise RuntimeError(f"expected {args.processors} threading children, found {children}")
            for run in range(args.runs):
                mails = make_mails(args.messages, run)
                t_base, lats = send_all(base_port, mails, args.connections)
                base.append(len(mails) / t_base)
                base_lat.extend(lats)
                before = last_id(url)
                start = time.perf_counter()
                t_prod, lats = send_all(port, mails, args.connections)
                accept.append(len(mails) / t_prod)
                lat.extend(lats)
                wait_threaded(url, before, len(mails))
                live.append(len(mails) / (time.perf_counter() - start))
                backlog = make_mails(args.messages, 1000 + run)
                before = last_id(url)
                signal_all(children, signal.SIGSTOP)
                try:
                    send_all(port, backlog, args.connections)
                finally:
                    signal_all(children, signal.SIGCONT)
                threaded.append(len(backlog) / wait_threaded(url, before, len(backlog)))
                floors.append(parse_floor(mails))
        finally:
            product.terminate()
            baseline.terminate()
            product.wait(10)
            baseline.wait(10)
    result = {
        "benchmark": "ingest",
        "messages": args.messages, "connections": args.connections, "runs": args.runs,
        "smtp_flags": f"--processors {args.processors}",
        "accept_per_s": round(median(accept), 1),
        "baseline_per_s": round(median(base), 1),
        "accept_ratio": round(median(accept) / median(base), 3),
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "baseline_p50_ms": round(percentile(base_lat, 50) * 1000, 2),
        "baseline_p99_ms": round(percentile(base_lat, 99) * 1000, 2),
        "threaded_per_s": round(median(threaded), 1),
        "live_threaded_per_s": round(median(live), 1),
        "parse_floor_per_s": round(median(floors), 1),
        "thread_ratio": round(median(threaded) / median(floors), 3),
        "machine": f"{platform.machine()} {platform.python_version()} cores={os.cpu_count()}",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
