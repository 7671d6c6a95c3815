"""Fuzz the web app from its own OpenAPI document: no input may produce a 500.

Webhook bodies are signed like Twilio's when they are a form, so the fuzzing reaches past
the signature check into the door and, through the processor, into the WhatsApp handler:
whatever Twilio-shaped garbage arrives is threaded or quarantined with a reason, never an
unexpected failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import select

from config.settings import Settings
from inbound.process import Processor
from models.message import RawMessage
from tests.support.twilio_server import compute_signature
from worker.runtime import Runtime
from worker.web import create_app

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC_URL = "http://testserver"
WEBHOOKS = ("/webhooks/twilio/whatsapp", "/webhooks/twilio/status")


@pytest.fixture
def fuzz_rt(make_settings: Any) -> Iterator[Runtime]:
    runtime = Runtime.build(make_settings(twilio_auth_token=TOKEN, public_url=PUBLIC_URL,
                                          twilio_account_sid="AC" + "0" * 32))
    runtime.extras["broker_mode"] = "embedded"
    yield runtime
    runtime.close()


@pytest.fixture
def fuzz_app(fuzz_rt: Runtime) -> Any:
    return create_app(fuzz_rt, pump=False)


def _document() -> dict[str, Any]:
    """The OpenAPI document; it does not depend on the database, so a runtime that never
    connects serves to build it. (schemathesis' ``from_fixture`` fails under pytest 9.)"""
    runtime = Runtime.build(Settings(_env_file=None, database_url="sqlite://"))
    try:
        return create_app(runtime, pump=False).openapi()
    finally:
        runtime.close()


schema = schemathesis.openapi.from_dict(_document())


def twilio_headers(case: Any) -> dict[str, str]:
    """A valid signature for a form body (garbage bodies stay unsigned and get 403)."""
    body = case.body
    if case.path not in WEBHOOKS or not isinstance(body, dict):
        return {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in body.items()):
        return {}
    return {"X-Twilio-Signature": compute_signature(PUBLIC_URL + case.formatted_path, body, TOKEN)}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_app_fail(case: Any, fuzz_rt: Runtime, fuzz_app: Any) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    case.call_and_validate(
        app=fuzz_app, base_url=PUBLIC_URL, headers=twilio_headers(case),
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )
    if case.path == "/webhooks/twilio/whatsapp":
        Processor(fuzz_rt.sessions, fuzz_rt.settings, fuzz_rt.catalog).process_pending()
        with fuzz_rt.sessions() as session:
            errors = list(session.scalars(select(RawMessage.error).where(RawMessage.error.like("unexpected%"))))
        assert errors == []
