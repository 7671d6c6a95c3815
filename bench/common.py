"""Shared pieces of the benchmarks: a scratch PostgreSQL database, child processes,
percentiles. Benchmarks print one JSON line and compare against a baseline measured in
the same run; they never assert timings."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("HELPDESK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
HELPDESK = str(Path(sys.executable).parent / "helpdesk")


@contextmanager
def scratch_database(prefix: str = "helpdesk_bench") -> Iterator[str]:
    """A new PostgreSQL database with the schema migrated, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        subprocess.run([HELPDESK, "db", "upgrade"], env={**os.environ, "HELPDESK_DATABASE_URL": url},
                       check=True, capture_output=True)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


REDIS_URL = os.environ.get("HELPDESK_TEST_REDIS", "redis://127.0.0.1:6379/0")


@contextmanager
def scratch_namespace(prefix: str = "helpdesk-bench") -> Iterator[str]:
    """A Redis key namespace of its own for the product under test, emptied afterwards:
    the doors publish acknowledgements that no worker consumes during a benchmark."""
    import redis

    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield namespace
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i:i + 1000])
        client.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env.update({f"HELPDESK_{k.upper()}": v for k, v in values.items()})
    env["PYTHONPATH"] = str(ROOT)
    return env
