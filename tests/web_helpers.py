"""The web app under a real uvicorn on a free port, and Twilio-signed posts to it.

``WebApp`` wraps a started app: ``web.whatsapp(...)`` posts a signed inbound message and
``web.processed()`` waits until the background thread has threaded everything kept. The
fixtures that start them live in ``tests/web_fixtures.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from models.message import RawMessage
from tests.support.ports import wait_until
from tests.support.twilio_server import signed_webhook_post
from worker.runtime import Runtime

PHONE = "+5215512345678"  # WhatsApp's form of a Mexico City mobile
WA_FROM = f"whatsapp:{PHONE}"
OUR_NUMBER = "whatsapp:+5215587654321"


class Uvicorn:
    """``app`` served by uvicorn in a thread on ``port``; stopped (lifespan included) on exit."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{port}", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> Uvicorn:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), message="uvicorn did not start")
        if not self.server.started:
            raise RuntimeError("uvicorn failed to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def inbound(sid: str | None = None, body: str = "", frm: str = WA_FROM, **extra: str) -> dict[str, str]:
    """The form Twilio posts for an inbound WhatsApp message."""
    digits = frm.split("+", 1)[-1]
    fields = {
        "SmsMessageSid": sid or new_sid(), "NumMedia": "0", "ProfileName": "Juan Pérez",
        "MessageType": "text", "SmsSid": "", "WaId": digits, "SmsStatus": "received", "Body": body,
        "To": OUR_NUMBER, "NumSegments": "1", "ReferralNumMedia": "0", "MessageSid": "",
        "AccountSid": "", "From": frm, "ApiVersion": "2010-04-01",
    }
    fields["MessageSid"] = fields["SmsSid"] = fields["SmsMessageSid"]
    fields.update(extra)
    return fields


def new_sid(prefix: str = "SM") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


class WebApp:
    def __init__(self, rt: Runtime, server: Uvicorn, auth_token: str) -> None:
        self.rt = rt
        self.server = server
        self.url = server.url
        self.auth_token = auth_token
        self.http = httpx.Client(base_url=server.url, timeout=20, trust_env=False)

    def post_signed(self, path: str, params: dict[str, str], *, token: str | None = None,
                    signed_url: str | None = None) -> httpx.Response:
        headers, body = signed_webhook_post(signed_url or self.url + path, params, token or self.auth_token)
        return self.http.post(path, content=body, headers=headers)

    def whatsapp(self, body: str = "", sid: str | None = None, frm: str = WA_FROM, **extra: str) -> httpx.Response:
        response = self.post_signed("/webhooks/twilio/whatsapp", inbound(sid, body, frm, **extra))
        assert response.status_code == 200, response.text
        return response

    def send(self, body: str = "", **kwargs: Any) -> None:
        """Post a message and wait until it is threaded."""
        self.whatsapp(body, **kwargs)
        self.processed()

    def processed(self, timeout: float = 20) -> None:
        def done() -> bool:
            with self.rt.sessions() as s:
                return not s.scalar(select(func.count(RawMessage.id)).where(
                    RawMessage.source == "whatsapp", RawMessage.status.in_(("pending", "processing"))))

        wait_until(done, timeout=timeout, message="kept WhatsApp messages not processed")

    def close(self) -> None:
        self.http.close()
