"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379) are real services.
Tests make their own PostgreSQL database (one per test session and xdist worker, dropped
at the end) and their own Redis namespace, and remove only what they made. A missing
service is an error, never a skip: a skipped test proves nothing in CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import text

from config.settings import Settings
from models.base import Base
from models.db import create_schema
from worker.runtime import Runtime

PG_ADMIN_DSN = os.environ.get("HELPDESK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HELPDESK_TEST_REDIS", "redis://127.0.0.1:6379/0")




def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    name = f"helpdesk_test_{_worker_id()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}. Start it (see README).")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    yield url
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_schema(pg_database: str) -> str:
    from models.db import make_engine

    engine = make_engine(pg_database)
    create_schema(engine)
    engine.dispose()
    return pg_database


def _clean_pg(url: str) -> None:
    from models.db import make_engine

    engine = make_engine(url, pool_size=1)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER SEQUENCE ticket_number_seq RESTART WITH 1"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated-shape database; the test runs once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'helpdesk.db'}"
        from models.db import make_engine

        engine = make_engine(url)
        create_schema(engine)
        engine.dispose()
        yield url
    else:
        url = request.getfixturevalue("pg_schema")
        _clean_pg(url)
        yield url
        _clean_pg(url)


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for this test's database, isolated from the developer's .env."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "inbox_addresses": ["soporte@jhleasing.mx", "seguros@jhleasing.mx=seguros"],
            "staff_domains": ["jhleasing.mx"],
            "outbox_dir": tmp_path / "outbox",
            "secret_key": "test-secret",
            "survey_delay_seconds": 0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return factory


@pytest.fixture
def rt(make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    """A runtime (settings, catalog, engine, sessions) on this test's database."""
    runtime = Runtime.build(make_settings())
    yield runtime
    runtime.close()


@pytest.fixture
def cli_env(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path, redis_namespace: str
) -> dict[str, str]:
    """Environment for running the real ``helpdesk`` command in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env.update(
        HELPDESK_DATABASE_URL=database_url,
        HELPDESK_INBOX_ADDRESSES="soporte@jhleasing.mx,seguros@jhleasing.mx=seguros",
        HELPDESK_STAFF_DOMAINS="jhleasing.mx",
        HELPDESK_OUTBOX_DIR=str(tmp_path / "outbox"),
        HELPDESK_SECRET_KEY="test-secret",
        HELPDESK_REDIS_URL=REDIS_URL,
        HELPDESK_REDIS_NAMESPACE=redis_namespace,
    )
    return env


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}. Start it (see README).")
    namespace = f"helpdesk-test-{uuid.uuid4().hex[:10]}"
    yield namespace
    for key in client.scan_iter(match=f"{namespace}*", count=500):
        client.delete(key)
    client.close()


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


from tests.support.fixtures import *  # noqa: E402,F401,F403  (smtp_sink, dovecot, twilio_server, ...)
