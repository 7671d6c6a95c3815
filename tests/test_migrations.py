"""``helpdesk db upgrade`` builds the schema the models describe, on both databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import models.all  # noqa: F401
from models.base import Base
from models.db import make_engine
from tests.cli_helpers import helpdesk
from tests.conftest import PG_ADMIN_DSN


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"helpdesk_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_and_models_agree(empty_url: str, redis_namespace: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    env["HELPDESK_DATABASE_URL"] = empty_url
    env["HELPDESK_REDIS_NAMESPACE"] = redis_namespace  # `open` publishes; keep the shared Redis clean
    assert "database at head" in helpdesk(env, "db", "upgrade").stdout
    helpdesk(env, "db", "upgrade")  # a second run is a no-op
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [d for d in compare_metadata(context, Base.metadata) if not _is_sequence(d)]
    engine.dispose()
    assert diff == []
    # The ticket number sequence works after migrations alone.
    number = helpdesk(env, "open", "--pipeline", "seguros", "--email", "a@b.mx", "--subject", "s",
                      "--text", "t").stdout.strip()
    assert number.isdigit()


def _is_sequence(diff: object) -> bool:
    return "Sequence" in repr(diff)
