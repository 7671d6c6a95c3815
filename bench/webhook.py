"""WhatsApp webhook benchmark: signed Twilio posts into a real `helpdesk web` (uvicorn,
PostgreSQL, signature check, raw commit before the answer) against a do-nothing FastAPI
endpoint that reads the body and answers the same empty TwiML, under the same uvicorn
options, fed by the same client in the same run (runs interleaved).

The client is httpx with keep-alive, one client per connection, C connections in
threads. Bodies and signatures are computed before the clock starts (Twilio computes
them, not us), so the figures are the server's.

Prints one JSON line: webhook_per_s, baseline_per_s, ratio, p50_ms, p99_ms (per request,
product), baseline_p50_ms, and the options. Threading runs behind the door (in the web's
niced child, ``--processors``), so the line also says how far behind it was:
``pending_after_runs`` (kept but not yet threaded when the last run ended),
``all_threaded_after_s`` (from then until every kept message was threaded) and
``threaded_per_s`` (all messages over the time from the first product post until the
last was threaded, baseline runs in between included: a lower bound).

Usage: python bench/webhook.py [--small] [--requests N] [--connections C] [--runs R]
                               [--processors P]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.common import HELPDESK, env_with, free_port, median, percentile, scratch_database, wait_port  # noqa: E402
from tests.support.twilio_server import signed_webhook_post  # noqa: E402

PATH = "/webhooks/twilio/whatsapp"
TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT = "AC" + "0" * 32
REDIS_URL = os.environ.get("HELPDESK_TEST_REDIS", "redis://127.0.0.1:6379/0")
BASELINE = """
import sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
app = FastAPI()
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
@app.post("/webhooks/twilio/whatsapp")
async def nothing(request: Request) -> Response:
    await request.body()
    return Response(TWIML, media_type="text/xml")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", proxy_headers=True,
            forwarded_allow_ips="127.0.0.1", server_header=False)
"""


def form(i: int, run: int) -> dict[str, str]:
    """An inbound WhatsApp text as Twilio posts it; 50 different senders."""
    sid = f"SM{uuid.uuid4().hex}"
    phone = f"+52155{10000000 + i % 50:08d}"
    return {
        "SmsMessageSid": sid, "NumMedia": "0", "ProfileName": f"Usuario {i % 50}", "MessageType": "text",
        "SmsSid": sid, "WaId": phone[1:], "SmsStatus": "received", "To": "whatsapp:+5215587654321",
        "Body": f"Hola, la unidad {run}-{i} hace un ruido al frenar, ¿me pueden ayudar?", "NumSegments": "1",
        "ReferralNumMedia": "0", "MessageSid": sid, "AccountSid": ACCOUNT, "From": f"whatsapp:{phone}",
        "ApiVersion": "2010-04-01",
    }


def signed(url: str, n: int, run: int) -> list[tuple[dict[str, str], bytes]]:
    return [signed_webhook_post(url + PATH, form(i, run), TOKEN) for i in range(n)]


def post_all(url: str, posts: list[tuple[dict[str, str], bytes]], connections: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(chunk: list[tuple[dict[str, str], bytes]]) -> None:
        own: list[float] = []
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
            for headers, body in chunk:
                t0 = time.perf_counter()
                response = http.post(PATH, content=body, headers=headers)
                own.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:100]}")
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=client, args=(posts[k::connections],)) for k in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} posts failed, e.g. {failures[0]}")
    return elapsed, latencies


def pending(conn: psycopg.Connection) -> int:
    """Kept WhatsApp messages not threaded yet."""
    row = conn.execute("SELECT count(*) FROM raw_messages WHERE source = 'whatsapp' "
                       "AND status IN ('pending', 'processing')").fetchone()
    return int(row[0]) if row else 0


def wait_threaded(conn: psycopg.Connection, timeout: float) -> bool:
    """Wait until every kept WhatsApp message is threaded; False on timeout."""
    deadline = time.monotonic() + timeout
    while pending(conn):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="300 requests x 3 runs")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--processors", type=int, default=1, help="helpdesk web --processors")
    args = parser.parse_args()
    n = args.requests or (300 if args.small else 2000)
    runs = args.runs or (3 if args.small else 5)
    namespace = f"helpdesk-bench-{uuid.uuid4().hex[:8]}"
    port, base_port = free_port(), free_port()
    url, base_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{base_port}"
    procs: list[subprocess.Popen[bytes]] = []
    product, base, lat, base_lat = [], [], [], []
    try:
        with scratch_database() as db:
            env = env_with(database_url=db, twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT,
                           twilio_whatsapp_from="+5215587654321", public_url=url, redis_url=REDIS_URL,
                           redis_namespace=namespace)
            procs.append(subprocess.Popen([HELPDESK, "web", "--listen", f"127.0.0.1:{port}", "--log-level", "warning",
                                           "--processors", str(args.processors)],
                                          env=env, stderr=subprocess.DEVNULL))
            procs.append(subprocess.Popen([sys.executable, "-c", BASELINE, str(base_port)]))
            wait_port("127.0.0.1", port)
            wait_port("127.0.0.1", base_port)
            post_all(url, signed(url, 50, 999), args.connections)  # warm-up
            post_all(base_url, signed(base_url, 50, 999), args.connections)
            with psycopg.connect(db, autocommit=True) as conn:
                wait_threaded(conn, timeout=60)  # the warm-up's backlog is not part of the figures
            first_post = time.perf_counter()
            for run in range(runs):
                t, lats = post_all(base_url, signed(base_url, n, run), args.connections)
                base.append(n / t)
                base_lat.extend(lats)
                t, lats = post_all(url, signed(url, n, run), args.connections)
                product.append(n / t)
                lat.extend(lats)
            runs_ended = time.perf_counter()
            with psycopg.connect(db, autocommit=True) as conn:
                (kept,) = conn.execute("SELECT count(*) FROM raw_messages WHERE source = 'whatsapp'").fetchone()
                pending_after = pending(conn)
                threaded = wait_threaded(conn, timeout=300)
            all_threaded = time.perf_counter()
            if kept != 50 + n * runs:
                raise RuntimeError(f"{kept} raw messages kept, expected {50 + n * runs}")
            for proc in procs:
                proc.terminate()
            stop_started = time.perf_counter()
            with contextlib.suppress(subprocess.TimeoutExpired):  # it drains its pump's backlog first
                procs[0].wait(30)
            stopped = procs[0].returncode is not None
            stop_s = time.perf_counter() - stop_started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{namespace}*", count=500):
            client.delete(key)
        client.close()
    print(json.dumps({
        "benchmark": "webhook", "requests": n, "connections": args.connections, "runs": runs,
        "webhook_per_s": round(median(product), 1),
        "baseline_per_s": round(median(base), 1),
        "ratio": round(median(product) / median(base), 3),
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "baseline_p50_ms": round(percentile(base_lat, 50) * 1000, 2),
        "processors": args.processors,
        "pending_after_runs": pending_after,
        "all_threaded_after_s": round(all_threaded - runs_ended, 1) if threaded else ">300",
        "threaded_per_s": round(n * runs / (all_threaded - first_post), 1) if threaded else None,
        "web_sigterm_to_exit_s": round(stop_s, 1) if stopped else ">30 (killed)",
        "server": "uvicorn, log-level warning, keep-alive httpx clients",
        "machine": f"{platform.machine()} {platform.python_version()} cores={os.cpu_count()}",
    }))


if __name__ == "__main__":
    main()
