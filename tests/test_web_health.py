"""``/healthz`` reports the database and the broker: 200 when both answer, 503 otherwise."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.ports import free_port
from tests.web_helpers import WebApp

pytest_plugins = ["tests.web_fixtures"]


def test_healthy_with_the_real_database_and_redis(web_factory: Callable[..., WebApp], redis_url: str) -> None:
    web = web_factory(redis_url=redis_url)
    response = web.http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True and body["database"]["kind"] in ("sqlite", "postgresql")
    assert body["broker"] == {"ok": True, "kind": "redis", "error": None}


def test_unavailable_when_redis_does_not_answer(web_factory: Callable[..., WebApp]) -> None:
    web = web_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = web.http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"]["ok"] is True
    assert body["broker"]["ok"] is False and "Connection" in body["broker"]["error"]


def test_the_embedded_broker_counts_as_up(web_factory: Callable[..., WebApp]) -> None:
    web = web_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    web.rt.extras["broker_mode"] = "embedded"
    response = web.http.get("/healthz")
    assert response.status_code == 200 and response.json()["broker"]["kind"] == "embedded"


def test_unavailable_when_the_database_does_not_answer(web_factory: Callable[..., WebApp], redis_url: str) -> None:
    web = web_factory(pump=False, redis_url=redis_url,
                      database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    response = web.http.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"]["ok"] is False and body["database"]["kind"] == "postgresql"
    assert body["broker"]["ok"] is True


def test_helpdesk_web_serves_on_http_listen(cli_env: dict[str, str], redis_url: str) -> None:
    import signal
    import subprocess

    import httpx

    from tests.cli_helpers import HELPDESK
    from tests.support.ports import wait_until

    port = free_port()
    env = dict(cli_env, HELPDESK_HTTP_LISTEN=f"127.0.0.1:{port}", HELPDESK_REDIS_URL=redis_url,
               HELPDESK_TWILIO_AUTH_TOKEN="0" * 32)
    process = subprocess.Popen([HELPDESK, "web"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as http:
            def healthy() -> httpx.Response | None:
                try:
                    return http.get("/healthz")
                except httpx.TransportError:
                    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                    return None

            response = wait_until(healthy, timeout=30, message="helpdesk web did not answer")
            assert response.status_code == 200, response.text
            assert http.get("/openapi.json").json()["paths"]["/webhooks/twilio/whatsapp"]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal it caught
    assert process.returncode in (0, -signal.SIGTERM), stderr.decode()
    assert b"Application shutdown complete" in stderr
