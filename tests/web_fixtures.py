"""Fixtures that start the web app under uvicorn; test modules load them with
``pytest_plugins = ["tests.web_fixtures"]``.

    twilio       -- a local Twilio-shaped server (media behind basic auth, status callbacks).
    web_factory  -- starts ``WebApp``s on ``rt``'s database with settings overrides; each
                    has PUBLIC_URL = its own address and ``twilio``'s account.
    web          -- one such app with the defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from config.settings import Settings
from inbound.media import RetryPolicy
from tests.support.ports import free_port
from tests.support.twilio_server import TwilioServer
from tests.web_helpers import OUR_NUMBER, Uvicorn, WebApp
from worker.runtime import Runtime
from worker.web import create_app


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


@pytest.fixture
def web_factory(make_settings: Callable[..., Settings], twilio: TwilioServer) -> Iterator[Callable[..., WebApp]]:
    """Start the web app (uvicorn) with settings overrides; all are stopped at the end."""
    started: list[tuple[WebApp, Uvicorn, Runtime]] = []

    def start(*, media_policy: RetryPolicy | None = None, sweep_seconds: float = 0.2,
              public_url: str | None = None, pump: bool = True, **overrides: Any) -> WebApp:
        port = free_port()
        values: dict[str, Any] = {
            "twilio_account_sid": twilio.account_sid, "twilio_auth_token": twilio.auth_token,
            "twilio_api_base": twilio.base_url, "twilio_whatsapp_from": OUR_NUMBER.split(":", 1)[1],
            "public_url": public_url or f"http://127.0.0.1:{port}",
        }
        values.update(overrides)
        rt = Runtime.build(make_settings(**values))
        app = create_app(rt, pump=pump, sweep_seconds=sweep_seconds,
                         media_policy=media_policy or RetryPolicy(first_delay=timedelta(milliseconds=200)))
        server = Uvicorn(app, port).__enter__()
        web = WebApp(rt, server, twilio.auth_token)
        started.append((web, server, rt))
        return web

    yield start
    for web, server, rt in reversed(started):
        web.close()
        server.__exit__()
        rt.close()


@pytest.fixture
def web(web_factory: Callable[..., WebApp]) -> WebApp:
    return web_factory()
