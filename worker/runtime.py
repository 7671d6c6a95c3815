"""The composition root: settings, pipeline catalog, database engine and sessions.

Nothing connects at import time; the CLI builds one ``Runtime`` per process and hands its
parts to the doors, the worker and the web app. The broker and senders hang off it too,
built lazily, so a command that only reads tickets never touches Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.pipelines import Catalog, cached_catalog
from config.settings import Settings
from models.db import make_engine, make_sessionmaker


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    engine: Engine
    sessions: sessionmaker[Session]
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings | None = None, **engine_kwargs: Any) -> Runtime:
        settings = settings or Settings()
        catalog = cached_catalog(str(settings.pipelines_file))
        engine_kwargs.setdefault("timeout", settings.database_timeout_seconds)
        engine = make_engine(settings.database_url, **engine_kwargs)
        return cls(settings=settings, catalog=catalog, engine=engine, sessions=make_sessionmaker(engine))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        with self.sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
