"""``helpdesk web``: Twilio's webhooks, the survey page and the health check (FastAPI).

The WhatsApp webhook is a door like the SMTP server: it checks the X-Twilio-Signature,
commits the body exactly as posted, answers empty TwiML, and leaves the decision to the
background pump (``worker.inbound_pump``), so Twilio's 15-second timeout never depends on
threading or media downloads. The commit goes through ``inbound.loop_keeper.door_keeper``: posts
arriving together share one INSERT and one commit on a held connection, each is answered
only after its own row is committed, and the event loop awaits it without a thread-pool
hop (on PostgreSQL the keeper runs on the event loop itself). The signature is
checked against ``PUBLIC_URL`` + path, not the URL this process sees, because behind a
proxy or TLS terminator those differ and Twilio signs the URL it called.

Answers::

    403  bad or missing signature (or no TWILIO_AUTH_TOKEN): nothing stored
    413  a body far larger than any Twilio webhook
    503  the message could not be committed: Twilio retries
    200  kept (an empty TwiML ``<Response/>``)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qsl

import redis
from fastapi import FastAPI, Form, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from inbound.keep import TemporaryFailure
from inbound.loop_keeper import DoorKeeper, door_keeper
from inbound.media import RetryPolicy
from inbound.twilio_status import BadCallback, StatusCallback, record_status
from worker import survey_page
from worker.inbound_pump import default_sweep, make_pump
from worker.runtime import Runtime

log = logging.getLogger("helpdesk.web")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MAX_BODY = 256 * 1024  # Twilio's webhooks are a few kilobytes
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
}


def _fields(names: dict[str, str], required: tuple[str, ...]) -> dict[str, Any]:
    """An OpenAPI request body for a Twilio form: declared here because the handler reads
    the raw bytes itself (the signature and the kept copy need them exactly as sent)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {k: {"type": "string", "description": d} for k, d in names.items()},
                        "required": list(required),
                    }
                }
            },
        }
    }


WHATSAPP_FIELDS = {
    "MessageSid": "Twilio's id of the message (SM…/MM…); stored once.",
    "AccountSid": "The account the message belongs to.",
    "From": "The sender, `whatsapp:+5215512345678`.",
    "To": "Our WhatsApp number, `whatsapp:+…`.",
    "Body": "The text.",
    "WaId": "The sender's WhatsApp id (digits of the number).",
    "ProfileName": "The sender's WhatsApp profile name.",
    "NumMedia": "How many media files (MediaUrl0…).",
    "MediaUrl0": "URL of the first media file (fetched with the account's credentials).",
    "MediaContentType0": "Content type of the first media file.",
    "OriginalRepliedMessageSid": "The message this one replies to.",
    "ButtonPayload": "Quick-reply payload, e.g. `survey:5`.",
    "ButtonText": "Quick-reply text.",
    "Latitude": "Shared location: latitude.",
    "Longitude": "Shared location: longitude.",
    "Address": "Shared location: address.",
    "Label": "Shared location: name of the place.",
}
STATUS_FIELDS = {
    "MessageSid": "The notification's Twilio id (our outbox provider id).",
    "MessageStatus": "queued, sent, delivered, read, failed, undelivered…",
    "ErrorCode": "Twilio's error code (63016: outside the 24-hour window).",
    "ErrorMessage": "Twilio's error text.",
    "AccountSid": "The account.",
    "From": "Our number.",
    "To": "The recipient.",
}
_TWIML_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Kept; empty TwiML.", "content": {"text/xml": {"schema": {"type": "string"}}}},
    400: {"description": "Not a status callback.", "content": {"text/plain": {"schema": {"type": "string"}}}},
    403: {"description": "Bad or missing X-Twilio-Signature; nothing stored.",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    413: {"description": "Body too large.", "content": {"text/plain": {"schema": {"type": "string"}}}},
    503: {"description": "Could not store now; Twilio retries.",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}
_WHATSAPP_RESPONSES = {k: v for k, v in _TWIML_RESPONSES.items() if k != 400}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The page.", "content": _HTML},
    400: {"description": "No score chosen: the page again, with the error.", "content": _HTML},
    404: {"description": "Unknown survey.", "content": _HTML},
    410: {"description": "The survey expired.", "content": _HTML},
}

Signature = Annotated[str | None, Header(alias="X-Twilio-Signature", description="Twilio's HMAC-SHA1 signature.")]
Token = Annotated[str, Path(min_length=1, max_length=64, description="The survey's token.")]


class _Params(dict[str, list[str]]):
    """Form fields with repeats, as RequestValidator reads them (``getlist``)."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


class Service(Protocol):
    """Something the web process runs beside the app (the threading children, the outbox
    publisher): started before the first request, stopped in the app's shutdown."""

    def start(self) -> object: ...

    def stop(self) -> object: ...


class Check(BaseModel):
    ok: bool
    error: str | None = None
    kind: str | None = None


class Health(BaseModel):
    status: str
    database: Check
    broker: Check


def plain(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain")


def twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")


async def read_body(request: Request) -> bytes | None:
    """The raw body, or None when it is larger than any webhook should be."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return bytes(body)


def form_pairs(body: bytes) -> list[tuple[str, str]] | None:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None


def signature_valid(runtime: Runtime, request: Request, pairs: list[tuple[str, str]] | None,
                    signature: str | None) -> bool:
    """True when ``signature`` signs PUBLIC_URL + path (+ query) and these form fields."""
    token = runtime.settings.twilio_auth_token
    if not token:
        log.error("TWILIO_AUTH_TOKEN is not set: every webhook is refused")
        return False
    if not signature or pairs is None:
        return False
    url = runtime.settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    params = _Params()
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return bool(RequestValidator(token).validate(url, params, signature))


class Door:
    """Keeps webhook bodies through one ``door_keeper``, made on first use (on the loop
    that serves the requests: PostgreSQL's keeper opens its connection there).

    Why not ``keep_raw`` in the thread pool: a pool hop and a pool checkout per request,
    and one commit per message; here concurrent posts share a statement and a commit, and
    the event loop just awaits them.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._keeper: DoorKeeper | None = None

    async def keep(self, data: bytes, sender: str | None) -> int:
        """The committed raw message's id.

        Raises:
            TemporaryFailure: not committed; the caller answers 503 so Twilio retries.
        """
        if self._keeper is None:  # the event loop is one thread: no race here
            self._keeper = door_keeper(self.runtime.sessions,
                                       connect_timeout=self.runtime.settings.database_timeout_seconds)
        # A request cancelled after its group was sent (a server shutdown) is kept
        # anyway, and Twilio's retry is then a duplicate, dropped by threading.
        return await self._keeper.keep(source="whatsapp", data=data, envelope_from=sender)

    async def aclose(self) -> None:
        """Commit the groups under way, then close the keeper."""
        if self._keeper is not None:
            keeper, self._keeper = self._keeper, None
            await keeper.aclose()


def check_database(runtime: Runtime) -> Check:
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return Check(ok=True, kind=runtime.engine.dialect.name)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return Check(ok=False, kind=runtime.engine.dialect.name, error=(reason[0] if reason else "error")[:200])


def check_broker(runtime: Runtime) -> Check:
    if runtime.extras.get("broker_mode") == "embedded":
        return Check(ok=True, kind="embedded")
    client = redis.Redis.from_url(runtime.settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        client.ping()
        return Check(ok=True, kind="redis")
    except (redis.RedisError, OSError) as exc:
        return Check(ok=False, kind="redis", error=f"{type(exc).__name__}: {exc}"[:200])
    finally:
        client.close()


def create_app(runtime: Runtime, *, pump: bool = True, sweep_seconds: float | None = None,
               media_policy: RetryPolicy | None = None, services: Sequence[Service] = ()) -> FastAPI:
    """The web app on ``runtime``.

    Parameters:
        pump: run the background thread that processes kept messages and fetches media
            (started and stopped with the app's lifespan).
        sweep_seconds: how often that thread looks for pending rows and due media.
        media_policy: when failed media downloads are retried.
        services: started with the app's lifespan and stopped, in reverse, in its
            shutdown. Why there and not around ``uvicorn.run``: uvicorn re-raises the
            SIGTERM it caught once it has shut down, so code after it never runs.
    """
    worker = make_pump(runtime, sweep_seconds=sweep_seconds or default_sweep(runtime),
                       media_policy=media_policy) if pump else None
    door = Door(runtime)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        started: list[Service] = []
        try:
            for service in services:
                await run_in_threadpool(service.start)
                started.append(service)
            if worker is not None:
                worker.start()
            yield
        finally:
            await door.aclose()
            if worker is not None:
                await run_in_threadpool(worker.stop)
            for service in reversed(started):
                await run_in_threadpool(service.stop)

    app = FastAPI(title="helpdesk-worker", version="1", lifespan=lifespan,
                  description="Twilio WhatsApp webhooks, the satisfaction survey page and the health check.")
    app.state.runtime = runtime
    app.state.pump = worker
    company = runtime.settings.company_name

    async def signed_form(
        request: Request, signature: str | None
    ) -> tuple[bytes, list[tuple[str, str]] | None] | Response:
        """The body and its form fields when Twilio signed them; else the refusal (413, 403)."""
        body = await read_body(request)
        if body is None:
            return plain(413, "body too large")
        pairs = form_pairs(body)
        if not signature_valid(runtime, request, pairs, signature):
            return plain(403, "invalid X-Twilio-Signature")
        return body, pairs

    @app.post("/webhooks/twilio/whatsapp", response_class=Response, responses=_WHATSAPP_RESPONSES,
              openapi_extra=_fields(WHATSAPP_FIELDS, ("MessageSid", "From")), summary="Inbound WhatsApp message")
    async def whatsapp_webhook(request: Request, x_twilio_signature: Signature = None) -> Response:
        """Keep the message and answer; threading runs after the answer."""
        signed = await signed_form(request, x_twilio_signature)
        if isinstance(signed, Response):
            return signed
        body, pairs = signed
        sender = next((v for k, v in pairs or [] if k == "From"), "")
        sender = "".join(ch for ch in sender if ch.isprintable())[:320] or None  # metadata only
        try:
            raw_id = await door.keep(body, sender)
        except TemporaryFailure as exc:
            log.warning("whatsapp webhook: %s", exc)
            return plain(503, "cannot store the message now; retry")
        if worker is not None:
            worker.submit(raw_id)
        return twiml()

    @app.post("/webhooks/twilio/status", response_class=Response, responses=_TWIML_RESPONSES,
              openapi_extra=_fields(STATUS_FIELDS, ("MessageSid", "MessageStatus")),
              summary="Delivery status of a WhatsApp notification")
    async def status_webhook(request: Request, x_twilio_signature: Signature = None) -> Response:
        """Record the status on its notification, in the request (idempotent, small)."""
        signed = await signed_form(request, x_twilio_signature)
        if isinstance(signed, Response):
            return signed
        _body, pairs = signed
        form: dict[str, str] = {}
        for key, value in pairs or []:
            form.setdefault(key, value)
        try:
            callback = StatusCallback.from_form(form)
        except BadCallback as exc:
            return plain(400, str(exc))

        def record() -> str:
            with runtime.transaction() as session:
                return record_status(session, callback)

        try:
            outcome = await run_in_threadpool(record)
        except SQLAlchemyError as exc:
            log.warning("status callback %s: not stored (%s)", callback.sid, type(exc).__name__)
            return plain(503, "cannot store the status now; retry")
        log.info("status callback: %s", outcome)
        return twiml()

    def survey_closed(state: survey_page.SurveyState | None) -> HTMLResponse | None:
        """The page for a survey that cannot be answered (unknown, answered, expired)."""
        if state is None:
            return HTMLResponse(survey_page.unknown_page(company), 404, PAGE_HEADERS)
        if state.answered:
            return HTMLResponse(survey_page.already_page(state, company), 200, PAGE_HEADERS)
        if state.expired:
            return HTMLResponse(survey_page.expired_page(company), 410, PAGE_HEADERS)
        return None

    @app.get("/encuesta/{token}", response_class=HTMLResponse, responses=_PAGE_RESPONSES,
             summary="The satisfaction survey page (shows only; records nothing)")
    def survey_form(token: Token,
                    score: Annotated[int | None, Query(ge=1, le=5, description="Preselected score.")] = None
                    ) -> HTMLResponse:
        with runtime.sessions() as session:
            state = survey_page.find_survey(session, token)
        closed = survey_closed(state)
        if closed is not None:  # also for a missing survey: state is set below
            return closed
        return HTMLResponse(survey_page.form_page(state, company, preselect=score), 200, PAGE_HEADERS)

    @app.post("/encuesta/{token}", response_class=HTMLResponse, responses=_PAGE_RESPONSES,
              summary="Record the survey answer (once)")
    def survey_answer(
        token: Token,
        score: Annotated[int | None, Form(ge=1, le=5, description="1 (muy insatisfecho) to 5.")] = None,
        comment: Annotated[str, Form(max_length=survey_page.MAX_COMMENT, description="Optional.")] = "",
    ) -> HTMLResponse:
        with runtime.transaction() as session:
            state = survey_page.find_survey(session, token)
            closed = survey_closed(state)
            if closed is not None:  # also for a missing survey: state is set below
                return closed
            if score is None:
                html = survey_page.form_page(state, company, error="Elige una calificación del 1 al 5.")
                return HTMLResponse(html, 400, PAGE_HEADERS)
            recorded = survey_page.record_answer(session, token, score, comment)
        if not recorded:  # answered (or expired) between our read and our write
            with runtime.sessions() as session:
                state = survey_page.find_survey(session, token) or state
            if state.answered:
                return HTMLResponse(survey_page.already_page(state, company), 200, PAGE_HEADERS)
            return HTMLResponse(survey_page.expired_page(company), 410, PAGE_HEADERS)
        return HTMLResponse(survey_page.thanks_page(state, score, company), 200, PAGE_HEADERS)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "Not ready."}},
             summary="Database and broker")
    def healthz() -> JSONResponse:
        database = check_database(runtime)
        broker = check_broker(runtime)
        ok = database.ok and broker.ok
        result = Health(status="ok" if ok else "unavailable", database=database, broker=broker)
        return JSONResponse(result.model_dump(), status_code=200 if ok else 503)

    return app
