"""Scale benchmark: ingest and threading with 1,000 and with 200,000 tickets stored.

Two scratch PostgreSQL databases are bulk-loaded with COPY (tickets, their requesters
and e-mail addresses, and two messages each: the request and a notification), analyzed,
and then measured in turn, runs interleaved: each run keeps the same shape of batch
(half new requests, half replies whose In-Reply-To names a stored message picked at
random across the table) with ``inbound.keep.keep_raw`` and threads it with
``inbound.process.Processor.process_pending``, in a child process of its own so that its
peak RSS belongs to that size alone. The peak is the child's ``VmHWM`` (Linux), not
``ru_maxrss``: Linux carries the high-water mark of the address space a process had before
``execve`` into ``ru_maxrss``, and subprocess spawns with vfork, so every child would report
the parent's peak (the COPY buffers of the 200,000-ticket load, about 440 MB) whatever
its own size.

Prints one JSON line: per size keep_per_s, thread_per_s and peak_rss_mb; slowdown (1 -
big/small threading rate) and rss_growth; and, when the slowdown passes 10 %, the plans of
threading's lookups on the big database (EXPLAIN), to show which one lacks an index.

Usage: python bench/scale.py [--small] [--big N] [--batch B] [--runs R]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.common import median, scratch_database  # noqa: E402

SMALL = 1000
NOW = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def copy_rows(conn: psycopg.Connection, table: str, columns: str, rows: io.StringIO) -> None:
    rows.seek(0)
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        while chunk := rows.read(1 << 20):
            copy.write(chunk)


def bulk_load(url: str, count: int) -> None:
    """``count`` closed tickets with requester, address and two messages each, by COPY."""
    contacts, emails, tickets, messages = io.StringIO(), io.StringIO(), io.StringIO(), io.StringIO()
    for i in range(1, count + 1):
        contacts.write(f"{i}\tUsuario {i}\tvehicle_user\temail\tes_MX\tAmerica/Mexico_City\tf\t{NOW}\n")
        emails.write(f"{i}\t{i}\tusuario{i}@flota{i % 500}.mx\n")
        tickets.write(f"{i}\t{50_000_000 + i}\tattention\tmantenimiento\tCerrado\tCerrado\tnormal\t"
                      f"Servicio unidad {i}\tservicio unidad {i}\t{i}\tf\tf\t{NOW}\t{NOW}\n")
        messages.write(f"{2 * i - 1}\t{i}\temail\tin\told{i}@flota.mx\tNecesito servicio.\t{NOW}\n")
        messages.write(f"{2 * i}\t{i}\temail\tout\thd.old{i}@jhleasing.mx\tSu ticket fue cerrado.\t{NOW}\n")
    with psycopg.connect(url) as conn:
        copy_rows(conn, "contacts", "id, name, role, preferred_channel, locale, timezone, whatsapp_opt_out, "
                  "created_at", contacts)
        copy_rows(conn, "contact_emails", "id, contact_id, email", emails)
        copy_rows(conn, "tickets", "id, number, kind, pipeline, stage, state, priority, subject, subject_key, "
                  "requester_id, needs_attention, warranty, created_at, updated_at", tickets)
        copy_rows(conn, "messages", "id, ticket_id, channel, direction, external_id, text, created_at", messages)
        for table, column in (("contacts", "id"), ("contact_emails", "id"), ("tickets", "id"), ("messages", "id")):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), (SELECT max(id) FROM {table}))")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def batch_mails(run: int, size: int, stored: int, batch: int) -> list[bytes]:
    """Half new requests, half replies to stored requests spread over the whole table."""
    from tests.mailbuilder import mail

    rng = random.Random(run)
    out = []
    for i in range(batch):
        if i % 2 == 0:
            out.append(mail(sender=f"nuevo{run}_{i}@cliente{size}.mx", subject=f"Unidad {run}-{i} no arranca",
                            message_id=f"<s{size}r{run}n{i}@cliente.mx>", body="La unidad no arranca. " * 10))
        else:
            k = rng.randint(1, stored)
            out.append(mail(sender=f"usuario{k}@flota{k % 500}.mx", subject=f"Re: Servicio unidad {k}",
                            message_id=f"<s{size}r{run}r{i}@cliente.mx>", in_reply_to=f"hd.old{k}@jhleasing.mx",
                            body="Gracias, ya quedó.\n\n> Su ticket fue cerrado."))
    return out


def peak_rss_mb() -> float:
    """This process's own peak resident set, in MB.

    ``/proc/self/status`` VmHWM belongs to the address space made by ``execve``;
    ``ru_maxrss`` would include the parent's peak (see the module docstring). Elsewhere
    than Linux, ``ru_maxrss`` is all there is.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(url: str, run: int, size: int, batch: int) -> None:
    """One measurement in this process: keep the batch, then thread it; print JSON."""
    from config.settings import Settings
    from inbound.keep import keep_raw
    from inbound.process import Processor
    from worker.runtime import Runtime

    rt = Runtime.build(Settings(_env_file=None, database_url=url, inbox_addresses=["soporte@jhleasing.mx"],
                                staff_domains=["jhleasing.mx"]))
    mails = batch_mails(run, size, size, batch)
    processor = Processor(rt.sessions, rt.settings, rt.catalog)
    start = time.perf_counter()
    for data in mails:
        keep_raw(rt.sessions, source="smtp", data=data, envelope_to="soporte@jhleasing.mx")
    kept = time.perf_counter()
    handled = processor.process_pending()
    done = time.perf_counter()
    rt.close()
    rss_mb = peak_rss_mb()
    print(json.dumps({"keep_per_s": batch / (kept - start), "thread_per_s": handled / (done - kept),
                      "handled": handled, "rss_mb": rss_mb}))


LOOKUPS = {
    "message by Message-ID": "SELECT id FROM messages WHERE channel = 'email' AND external_id = 'hd.old7@jhleasing.mx'",
    "outbox by provider id": "SELECT ticket_id FROM outbox WHERE provider_id IN ('hd.old7@jhleasing.mx')",
    "contact by address": "SELECT contact_id FROM contact_emails WHERE email = 'usuario7@flota7.mx'",
    "contact by phone": "SELECT id FROM contacts WHERE phone = '+5215512345678'",
    "open tickets of a requester": "SELECT id FROM tickets WHERE requester_id = 7 AND state = 'Abierto'",
    "ticket by number": "SELECT id FROM tickets WHERE number = 50000007",
    "tickets by subject key": "SELECT id FROM tickets WHERE subject_key = 'servicio unidad 7'",
    "pending raw messages": "SELECT id FROM raw_messages WHERE status = 'pending' ORDER BY id LIMIT 500",
}


def explain(url: str) -> dict[str, str]:
    """The top plan line of each threading lookup (a Seq Scan on a big table is the culprit)."""
    with psycopg.connect(url) as conn:
        return {name: conn.execute(f"EXPLAIN {sql}").fetchall()[0][0].strip() for name, sql in LOOKUPS.items()}


def measure(url: str, run: int, size: int, batch: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", url, str(run), str(size), str(batch)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="big = 50,000 tickets, 3 runs of 400 mails")
    parser.add_argument("--big", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    big = args.big or (50_000 if args.small else 200_000)
    batch = args.batch or (400 if args.small else 1000)
    runs = args.runs or (3 if args.small else 5)
    results: dict[int, list[dict[str, float]]] = {SMALL: [], big: []}
    with ExitStack() as stack:
        urls = {size: stack.enter_context(scratch_database("helpdesk_scale")) for size in (SMALL, big)}
        load_s = {}
        for size, url in urls.items():
            t0 = time.perf_counter()
            bulk_load(url, size)
            load_s[size] = round(time.perf_counter() - t0, 1)
        for size, url in urls.items():  # warm-up: imports, caches, first plans
            measure(url, 99, size, 50)
        for run in range(runs):
            for size, url in urls.items():
                results[size].append(measure(url, run, size, batch))
        plans = explain(urls[big])

    def med(size: int, key: str) -> float:
        return median([r[key] for r in results[size]])

    slowdown = 1 - med(big, "thread_per_s") / med(SMALL, "thread_per_s")
    report = {
        "benchmark": "scale", "batch": batch, "runs": runs, "sizes": [SMALL, big], "bulk_load_s": load_s,
        **{f"{k}_{size}": round(med(size, k), 1) for size in (SMALL, big) for k in ("keep_per_s", "thread_per_s")},
        **{f"peak_rss_mb_{size}": round(max(r["rss_mb"] for r in results[size]), 1) for size in (SMALL, big)},
        "thread_slowdown": round(slowdown, 3),
        "keep_slowdown": round(1 - med(big, "keep_per_s") / med(SMALL, "keep_per_s"), 3),
        "machine": f"{platform.machine()} {platform.python_version()} cores={os.cpu_count()}",
    }
    if slowdown > 0.10:
        report["plans_big"] = plans
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
