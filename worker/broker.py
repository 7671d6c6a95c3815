"""The Dramatiq broker: Redis for ``helpdesk worker``, in-process for ``helpdesk run``.

``redis_broker`` builds a ``RedisBroker`` on ``REDIS_URL`` under ``REDIS_NAMESPACE`` (tests
pass a namespace of their own, so they share the developer's Redis without touching
its keys). Its client fails fast (short connect timeout): publishing happens right after
a commit, in the committing thread, and a Redis outage must cost that thread
milliseconds, not seconds. The outbox, not Redis, is the truth: the local Redis keeps
nothing on disk, and whatever a restart drops the sweeper re-enqueues.

``embedded_broker`` is Dramatiq's ``StubBroker``: the same actors and the same
``dramatiq.Worker`` threads, with the queue in this process's memory. ``helpdesk run``
uses it so a newcomer needs no Redis; a crash loses only the queue, which the sweeper
rebuilds from the database at the next start.

No Dramatiq middleware is installed on purpose: retries live in the database (backoff
per row), and the time-limit and shutdown middlewares stop threads by raising
exceptions asynchronously, which can cut an SMTP transaction in half.
"""

from __future__ import annotations

import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from config.settings import Settings

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 10.0


def redis_broker(url: str, namespace: str) -> RedisBroker:
    """A ``RedisBroker`` on ``url`` whose keys all start with ``namespace``."""
    pool = redis.ConnectionPool.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT, health_check_interval=30
    )
    return RedisBroker(client=redis.Redis(connection_pool=pool), namespace=namespace, middleware=[])


def embedded_broker() -> StubBroker:
    """An in-process broker (``helpdesk run``)."""
    return StubBroker(middleware=[])


def make_broker(settings: Settings, *, embedded: bool = False, namespace: str | None = None) -> Broker:
    """The broker the settings ask for; ``namespace`` overrides ``REDIS_NAMESPACE``."""
    if embedded:
        return embedded_broker()
    return redis_broker(settings.redis_url, namespace or settings.redis_namespace)


def close_broker(broker: Broker) -> None:
    """Close the broker and its Redis connections (Dramatiq's ``close`` leaves them open)."""
    broker.close()
    client = getattr(broker, "client", None)
    if client is not None:
        client.close()
        client.connection_pool.disconnect()
