"""A local HTTP server that answers like Twilio's Messages API, for WhatsApp/SMS tests.

``TwilioServer`` listens on 127.0.0.1 (a free port), checks HTTP basic auth (account SID
and auth token), creates messages (``201`` with Twilio's JSON), serves media behind basic
auth, records every request, and can be told to fail the way Twilio does: ``429``/``5xx``
for the next n requests, ``400``/21211 for a bad number, and error 63016 (outside the
WhatsApp 24-hour window), which like the real service arrives later, through the status
callback. Status callbacks and webhooks carry a real ``X-Twilio-Signature`` computed with
``twilio.request_validator.RequestValidator``.

Pointing the official ``twilio`` client (9.x) at this server
-----------------------------------------------------------
The client builds absolute URLs from each domain's ``base_url`` (``twilio/base/domain.py``:
``Domain.absolute_url``; ``twilio/rest/api/__init__.py``: ``https://api.twilio.com``) and
hands them to its ``http_client`` (``twilio/base/client_base.py``: ``ClientBase.request``
-> ``self.http_client.request(method, uri, ...)``). ``Client`` accepts any
``http_client``, so the supported seam is a ``TwilioHttpClient`` subclass that swaps the
scheme and host of ``https://*.twilio.com`` URLs for the local base URL (this module's
``LocalTwilioHttpClient``, about fifteen lines; production code should carry its own
copy behind the ``TWILIO_API_BASE`` setting, not import from ``tests``)::

    from urllib.parse import urlsplit

    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    class LocalTwilioHttpClient(TwilioHttpClient):
        def __init__(self, base_url: str, **kwargs):
            super().__init__(**kwargs)
            self.base_url = base_url.rstrip("/")
            if self.session is not None:
                self.session.trust_env = False  # no HTTP(S)_PROXY detour for loopback

        def request(self, method, url, *args, **kwargs):
            parts = urlsplit(url)
            host = parts.hostname or ""
            if host == "twilio.com" or host.endswith(".twilio.com"):
                url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
            return super().request(method, url, *args, **kwargs)

    client = Client(account_sid, auth_token,
                    http_client=LocalTwilioHttpClient("http://127.0.0.1:PORT"))
    client.messages.create(to="whatsapp:+5215512345678", from_="whatsapp:+14155238886",
                           body="Hola")

This covers every domain (api, messaging, content...) and keeps the client's own auth,
headers, form encoding and error handling (a 429 raises ``TwilioRestException`` with
``status == 429`` and ``code == 20429``). A narrower alternative, for the Api domain only,
is ``client.api.base_url = "http://127.0.0.1:PORT"`` (``client.api`` is created once and
cached, and ``base_url`` is read on every request); it leaves other domains on
twilio.com and keeps environment proxies, hence the subclass above is preferred.
Do not use ``edge``/``region``: they only rewrite the host into ``api.EDGE.REGION.twilio.com``.
"""

from __future__ import annotations

import base64
import json
import math
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, urlencode, urlsplit
from urllib.request import ProxyHandler, Request, build_opener

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from .ports import LOOPBACK

API_VERSION = "2010-04-01"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    63016: (
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template."
    ),
}


def twilio_error(code: int, status: int, message: str | None = None) -> dict[str, Any]:
    """Twilio's REST error body: ``{"code", "message", "more_info", "status"}``."""
    return {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, HTTPStatus(status).phrase),
        "more_info": MORE_INFO.format(code=code),
        "status": status,
    }


def _bare_number(address: str) -> str:
    """``whatsapp:+52...`` -> ``+52...``: faults are set per number, whatever the channel."""
    return address.split(":", 1)[1] if ":" in address else address


class _MultiParams(dict[str, list[str]]):
    """Form params with repeated keys, in the shape RequestValidator accepts (getlist)."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def compute_signature(url: str, params: Mapping[str, str | Sequence[str]], auth_token: str) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for a form POST of ``params`` to ``url``.

    ``url`` must be exactly what the receiver sees as its full URL (scheme, host, port,
    path and query), since the signature covers it.
    """
    multi = _MultiParams(
        {k: [v] if isinstance(v, str) else list(v) for k, v in params.items()}
    )
    return RequestValidator(auth_token).compute_signature(url, multi)


def signed_webhook_post(
    url: str, params: Mapping[str, str | Sequence[str]], auth_token: str
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a form POST signed like Twilio's webhooks.

    Use it to post an inbound WhatsApp message or a status callback to our web app::

        headers, body = signed_webhook_post(url, {"MessageSid": sid, ...}, token)
        httpx.post(url, content=body, headers=headers)
    """
    body = urlencode(
        [(k, v) for k, vs in params.items() for v in ([vs] if isinstance(vs, str) else vs)]
    ).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": compute_signature(url, params, auth_token),
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
    }
    return headers, body


class LocalTwilioHttpClient(TwilioHttpClient):
    """A ``TwilioHttpClient`` that sends ``https://*.twilio.com`` requests to ``base_url``.

    See the module docstring: pass it as ``Client(sid, token, http_client=...)``.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        if self.session is not None:
            self.session.trust_env = False  # no HTTP(S)_PROXY detour for loopback

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "twilio.com" or host.endswith(".twilio.com"):
            url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)

    def close(self) -> None:
        """Close pooled connections (the base class never does)."""
        if self.session is not None:
            self.session.close()


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the server received, whatever it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    #: Form fields, last value of each (``form_lists`` keeps repeats such as MediaUrl).
    form: dict[str, str]
    form_lists: dict[str, list[str]]
    headers: dict[str, str]
    auth: tuple[str, str] | None
    status: int
    message_sid: str | None


@dataclass
class SentMessage:
    """A message created through the API, with its current status (callbacks move it)."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    status: str
    content_sid: str | None
    content_variables: str | None
    status_callback: str | None
    messaging_service_sid: str | None
    media_urls: list[str]
    form: dict[str, str]
    date_created: datetime
    error_code: int | None = None
    error_message: str | None = None

    @property
    def content_variables_json(self) -> dict[str, Any]:
        """ContentVariables decoded (``{}`` when absent)."""
        return json.loads(self.content_variables) if self.content_variables else {}

    def to_json(self) -> dict[str, Any]:
        """The resource as Twilio returns it (field names and string types included)."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        created = format_datetime(self.date_created)
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": created,
            "date_sent": None,
            "date_updated": created,
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),
            "num_segments": str(_segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


def _segments(body: str) -> int:
    """SMS segments as Twilio counts them (GSM-ish 160/153, otherwise UCS-2 70/67)."""
    single, multi = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else math.ceil(len(body) / multi)


@dataclass(frozen=True)
class CallbackResult:
    """A status callback the server posted, and what the receiver answered."""

    url: str
    params: dict[str, str]
    signature: str
    status: int | None  # None when the receiver could not be reached
    body: bytes
    error: str | None = None


@dataclass
class _Fault:
    remaining: int
    status: int
    code: int
    message: str | None
    retry_after: int | None


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    messages: dict[str, SentMessage] = field(default_factory=dict)
    callbacks: list[CallbackResult] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    rejected: dict[str, tuple[int, int, str | None]] = field(default_factory=dict)
    outside_window: dict[str, float] = field(default_factory=dict)
    auto_statuses: tuple[str, ...] = ()
    auto_delay: float = 0.0
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    media_faults: list[int] = field(default_factory=list)


class TwilioServer:
    """The fake-free Twilio: a real HTTP server speaking Twilio's Messages API.

    Parameters:
        account_sid: ``AC`` + 32 hex; random when omitted.
        auth_token: 32 hex; random when omitted.

    Attributes:
        base_url: ``http://127.0.0.1:PORT``, what ``TWILIO_API_BASE`` should be set to.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        host: str = LOOPBACK,
    ) -> None:
        self.account_sid = account_sid or f"AC{uuid.uuid4().hex}"
        self.auth_token = auth_token or uuid.uuid4().hex
        self.host = host
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None
        self._jobs: queue.Queue[tuple[float, str, str, int | None] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._state = _State()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> TwilioServer:
        """Bind a kernel-chosen port and serve in a background thread."""
        if self._httpd is not None:
            raise RuntimeError("TwilioServer already started")
        handler = type("_BoundHandler", (_Handler,), {"twilio": self})
        httpd = ThreadingHTTPServer((self.host, 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"twilio-server-{self.port}", daemon=True,
        )
        self._thread.start()
        self._stopping.clear()
        self._dispatcher = threading.Thread(
            target=self._dispatch, name=f"twilio-callbacks-{self.port}", daemon=True
        )
        self._dispatcher.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop callbacks not yet due, close the socket."""
        if self._dispatcher is not None:
            self._stopping.set()
            self._jobs.put(None)
            self._dispatcher.join(10)
            self._dispatcher = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> TwilioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def http_client(self) -> LocalTwilioHttpClient:
        """A twilio ``http_client`` aimed at this server (close it when done)."""
        return LocalTwilioHttpClient(self.base_url, timeout=10)

    def client(self) -> Client:
        """An official ``twilio.rest.Client`` with this server's credentials and URL."""
        return Client(self.account_sid, self.auth_token, http_client=self.http_client())

    # -- what happened -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order, including refused ones."""
        with self._lock:
            return list(self._state.requests)

    @property
    def messages(self) -> list[SentMessage]:
        """Messages created (201), in order."""
        with self._lock:
            return list(self._state.messages.values())

    @property
    def callbacks(self) -> list[CallbackResult]:
        """Status callbacks posted so far, with the receiver's answers."""
        with self._lock:
            return list(self._state.callbacks)

    def message(self, sid: str) -> SentMessage:
        with self._lock:
            return self._state.messages[sid]

    def wait_for_messages(self, n: int = 1, timeout: float = 10.0) -> list[SentMessage]:
        """Block until ``n`` messages were created; return all. AssertionError on timeout."""
        return self._wait(lambda s: len(s.messages) >= n, lambda s: list(s.messages.values()),
                          timeout, lambda s: f"expected {n} message(s), got {len(s.messages)}")

    def wait_for_callbacks(self, n: int = 1, timeout: float = 10.0) -> list[CallbackResult]:
        """Block until ``n`` status callbacks were posted (answered or not); return all."""
        return self._wait(lambda s: len(s.callbacks) >= n, lambda s: list(s.callbacks),
                          timeout, lambda s: f"expected {n} callback(s), got {s.callbacks}")

    def _wait(self, done: Any, result: Any, timeout: float, describe: Any) -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not done(self._state):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{describe(self._state)} within {timeout:.1f}s")
                self._lock.wait(remaining)
            return result(self._state)

    # -- faults and behaviour ------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        code: int | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``n`` message creations with ``status`` and Twilio's error JSON.

        ``code`` defaults to Twilio's for the status (20429, 20500, 20503...).
        ``retry_after`` adds a ``Retry-After`` header (seconds).
        """
        with self._lock:
            self._state.faults.append(
                _Fault(n, status, code or 20000 + status, message, retry_after)
            )

    def reject_to(
        self, number: str, code: int = 21211, status: int = 400, message: str | None = None
    ) -> None:
        """Refuse every message to ``number`` (with or without ``whatsapp:``): permanent."""
        with self._lock:
            self._state.rejected[_bare_number(number)] = (code, status, message)

    def outside_window(self, number: str, delay: float = 0.05) -> None:
        """Treat ``number`` as outside WhatsApp's 24-hour window, as Twilio does.

        A freeform message (Body without ContentSid) to it is still accepted (201,
        ``queued``); ``delay`` seconds later its status becomes ``failed`` with error
        63016 and, when it has a StatusCallback, that is posted there, signed. Template
        messages (ContentSid) are not affected.
        """
        with self._lock:
            self._state.outside_window[_bare_number(number)] = delay

    def auto_status_callbacks(
        self, statuses: Sequence[str] = ("sent", "delivered"), delay: float = 0.0
    ) -> None:
        """After each message creation, post these statuses to its StatusCallback."""
        with self._lock:
            self._state.auto_statuses = tuple(statuses)
            self._state.auto_delay = delay

    def add_media(self, path: str, data: bytes, content_type: str) -> str:
        """Serve ``data`` at ``/media/<path>`` behind basic auth; return its full URL."""
        path = path.lstrip("/")
        with self._lock:
            self._state.media[path] = (data, content_type)
        return f"{self.base_url}/media/{path}"

    def fail_media_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` media downloads with ``status``."""
        with self._lock:
            self._state.media_faults.extend([status] * n)

    def reset(self) -> None:
        """Forget requests, messages, callbacks, faults and media."""
        with self._lock:
            self._state = _State()

    # -- status callbacks ----------------------------------------------------------------

    def status_callback_params(
        self,
        message_sid: str,
        status: str,
        error_code: int | None = None,
        error_message: str | None = None,
    ) -> dict[str, str]:
        """The form fields Twilio posts to a StatusCallback for ``message_sid``."""
        msg = self.message(message_sid)
        params = {
            "AccountSid": msg.account_sid,
            "ApiVersion": API_VERSION,
            "From": msg.from_ or "",
            "MessageSid": msg.sid,
            "MessageStatus": status,
            "SmsSid": msg.sid,
            "SmsStatus": status,
            "To": msg.to,
        }
        if msg.to.startswith("whatsapp:"):
            params["ChannelPrefix"] = "whatsapp"
            params["ChannelToAddress"] = _bare_number(msg.to)
            params["StructuredMessage"] = "false"
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
            params["ErrorMessage"] = error_message or ERROR_MESSAGES.get(error_code, "")
        return params

    def send_status_callback(
        self,
        message_sid: str,
        status: str,
        error_code: int | None = None,
        *,
        error_message: str | None = None,
        url: str | None = None,
        auth_token: str | None = None,
        timeout: float = 10.0,
    ) -> CallbackResult:
        """Post a signed status callback now, as Twilio would, and return the answer.

        Parameters:
            message_sid: a message created through this server.
            status: ``queued``, ``sent``, ``delivered``, ``read``, ``failed``,
                ``undelivered``...; also stored as the message's status.
            error_code: e.g. 63016 (outside the 24-hour window), 63024...
            url: where to post; default the message's StatusCallback.
            auth_token: the signing key; default this server's (pass another to test
                that a wrongly signed callback is refused).
        """
        msg = self.message(message_sid)
        target = url or msg.status_callback
        if not target:
            raise ValueError(f"message {message_sid} has no StatusCallback; pass url=")
        params = self.status_callback_params(message_sid, status, error_code, error_message)
        with self._lock:
            msg.status = status
            if error_code is not None:
                msg.error_code = error_code
                msg.error_message = params["ErrorMessage"]
        headers, body = signed_webhook_post(target, params, auth_token or self.auth_token)
        opener = build_opener(ProxyHandler({}))  # loopback: never through a proxy
        request = Request(target, data=body, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=timeout) as response:
                result = CallbackResult(target, params, headers["X-Twilio-Signature"],
                                        response.status, response.read())
        except HTTPError as error:
            with error:
                result = CallbackResult(target, params, headers["X-Twilio-Signature"],
                                        error.code, error.read())
        except (URLError, OSError) as error:
            result = CallbackResult(target, params, headers["X-Twilio-Signature"],
                                    None, b"", error=str(error))
        with self._lock:
            self._state.callbacks.append(result)
            self._lock.notify_all()
        return result

    def _dispatch(self) -> None:
        """Post queued callbacks in order, each not before its due time."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            due, sid, status, error_code = job
            if self._stopping.wait(max(0.0, due - time.monotonic())):
                continue  # stopping: drop what is still queued, drain to the sentinel
            with self._lock:
                msg = self._state.messages.get(sid)
            if msg is None:  # forgotten by reset()
                continue
            if msg.status_callback:
                self.send_status_callback(sid, status, error_code)
            else:
                with self._lock:
                    msg.status = status
                    if error_code is not None:
                        msg.error_code = error_code
                        msg.error_message = ERROR_MESSAGES.get(error_code)

    # -- request handling (server threads) -----------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._state.requests.append(req)
            self._lock.notify_all()

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._state.faults:
                return None
            fault = self._state.faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._state.faults.pop(0)
            return fault

    def _create_message(self, account_sid: str, form: dict[str, str],
                        lists: dict[str, list[str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
        fault = self._take_fault()
        if fault is not None:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            return fault.status, twilio_error(fault.code, fault.status, fault.message), extra
        to = form.get("To", "")
        if not to:
            return 400, twilio_error(21604, 400), {}
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return 400, twilio_error(21603, 400), {}
        if not (form.get("Body") or lists.get("MediaUrl") or form.get("ContentSid")):
            return 400, twilio_error(21602, 400), {}
        with self._lock:
            rejected = self._state.rejected.get(_bare_number(to))
            window_delay = self._state.outside_window.get(_bare_number(to))
            auto, auto_delay = self._state.auto_statuses, self._state.auto_delay
        if rejected is not None:
            code, status, message = rejected
            text = message or ERROR_MESSAGES.get(code, "").format(to=_bare_number(to))
            return status, twilio_error(code, status, text), {}
        msg = SentMessage(
            sid=f"SM{uuid.uuid4().hex}",
            account_sid=account_sid,
            to=to,
            from_=form.get("From"),
            body=form.get("Body", ""),
            status="accepted" if form.get("MessagingServiceSid") else "queued",
            content_sid=form.get("ContentSid"),
            content_variables=form.get("ContentVariables"),
            status_callback=form.get("StatusCallback"),
            messaging_service_sid=form.get("MessagingServiceSid"),
            media_urls=list(lists.get("MediaUrl", [])),
            form=dict(form),
            date_created=datetime.now(UTC).replace(microsecond=0),
        )
        with self._lock:
            self._state.messages[msg.sid] = msg
            self._lock.notify_all()
        now = time.monotonic()
        if window_delay is not None and not msg.content_sid:
            self._jobs.put((now + window_delay, msg.sid, "failed", 63016))
        else:
            for status in auto:
                self._jobs.put((now + auto_delay, msg.sid, status, None))
        return 201, msg.to_json(), {}

    def _fetch_message(self, sid: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            msg = self._state.messages.get(sid)
            if msg is None:
                return 404, twilio_error(20404, 404)
            return 200, msg.to_json()

    def _media(self, path: str) -> tuple[int, bytes, str]:
        with self._lock:
            if self._state.media_faults:
                status = self._state.media_faults.pop(0)
                return status, json.dumps(twilio_error(20000 + status, status)).encode(), (
                    "application/json"
                )
            found = self._state.media.get(path)
        if found is None:
            return 404, json.dumps(twilio_error(20404, 404)).encode(), "application/json"
        data, content_type = found
        return 200, data, content_type


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning TwilioServer (set on a per-server subclass)."""

    twilio: TwilioServer
    server_version = "TwilioLocal/1.0"
    # HTTP/1.0: one request per connection, so no handler thread outlives ``stop``.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line; requests are recorded instead."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        lists = parse_qs(raw.decode("utf-8"), keep_blank_values=True) if raw else {}
        form = {k: v[-1] for k, v in lists.items()}
        auth = self._basic_auth()
        segments = [s for s in parts.path.split("/") if s]
        status, message_sid = 404, None
        headers: dict[str, str] = {}
        body: bytes
        content_type = "application/json"
        if auth != (self.twilio.account_sid, self.twilio.auth_token):
            status = 401
            body = json.dumps(twilio_error(20003, 401, "Authenticate")).encode()
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        elif method == "GET" and segments[:1] == ["media"] and len(segments) > 1:
            status, body, content_type = self.twilio._media("/".join(segments[1:]))
        elif (
            len(segments) >= 4
            and segments[:2] == [API_VERSION, "Accounts"]
            and segments[2] != self.twilio.account_sid
        ):
            body = json.dumps(twilio_error(20404, 404)).encode()
        elif method == "POST" and segments[3:] == ["Messages.json"]:
            status, payload, headers = self.twilio._create_message(segments[2], form, lists)
            message_sid = payload.get("sid")
            body = json.dumps(payload).encode()
        elif method == "GET" and len(segments) == 5 and segments[3] == "Messages":
            message_sid = segments[4].removesuffix(".json")
            status, payload = self.twilio._fetch_message(message_sid)
            body = json.dumps(payload).encode()
        else:
            body = json.dumps(twilio_error(20404, 404)).encode()
        self.twilio._record(
            RecordedRequest(
                method=method,
                path=parts.path,
                query=parse_qs(parts.query),
                form=form,
                form_lists=lists,
                headers={k: v for k, v in self.headers.items()},
                auth=auth,
                status=status,
                message_sid=message_sid,
            )
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _basic_auth(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password
