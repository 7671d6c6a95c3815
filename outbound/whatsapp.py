"""WhatsApp out through Twilio's Messages API: free text or the stage's approved template.

WhatsApp only carries free text inside the 24-hour customer-service window that opens
when the customer writes to us (``contact.last_whatsapp_in_at``). Outside it, a business
may only send a template Meta approved, named here by its Twilio Content SID (the stage's
``whatsapp_template`` in ``config/pipelines.yaml``) with its variables::

    {{1}} the contact's name   {{2}} the ticket number
    {{3}} the stage            {{4}} the area (pipeline label)

No template for that stage (or a notice that is not a stage change): the send step falls
back to email. Rows marked ``force_template`` (Twilio reported 63016, "outside the
window", for the free text we sent) go as the template whatever our clock says.

Each worker thread has its own ``twilio.rest.Client`` (its HTTP session keeps the
connection to Twilio alive); ``TWILIO_API_BASE`` points every request at a test server.

Raises (from ``send``):
    TemporarySendError: 429, 5xx, connection errors, refused credentials.
    PermanentSendError: invalid or unreachable numbers and other 4xx answers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from models.contact import Contact
from outbound.errors import PermanentSendError, TemporarySendError

#: WhatsApp's customer-service window, minus a margin for the time a send takes.
WINDOW = timedelta(hours=24) - timedelta(minutes=2)
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
#: Twilio errors that mean "this number cannot receive WhatsApp from us".
UNREACHABLE_CODES = frozenset({21211, 21408, 21610, 21612, 21614, 63003, 63016, 63024})
#: The only message still sent on WhatsApp to a contact who opted out of it.
OPT_OUT_CONFIRMATION = "optout_confirm"


class BaseUrlHttpClient(TwilioHttpClient):
    """Sends every ``https://*.twilio.com`` request to ``base_url`` (``TWILIO_API_BASE``).

    The ``twilio`` client builds absolute URLs per domain; rewriting them in its HTTP
    client is the seam it offers, and keeps its auth, encoding and error handling.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        if self.session is not None:
            self.session.trust_env = False  # a local test server is never behind a proxy

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class WhatsAppPlan:
    """How one message goes: free ``body``, or ``content_sid`` with ``variables``."""

    to: str
    body: str | None = None
    content_sid: str | None = None
    variables: dict[str, str] | None = None


def whatsapp_address(contact: Contact) -> str:
    """The address WhatsApp gave us for the contact, else ``whatsapp:+E164``.

    Raises:
        PermanentSendError: the contact has no number.
    """
    if contact.whatsapp_address:
        return contact.whatsapp_address
    if not contact.phone:
        raise PermanentSendError("the contact has no WhatsApp number")
    return f"whatsapp:{contact.phone}"


def in_window(contact: Contact, now: datetime) -> bool:
    """Whether the contact wrote to us on WhatsApp recently enough for free text."""
    last = contact.last_whatsapp_in_at
    return last is not None and now - last < WINDOW


def plan(
    contact: Contact,
    *,
    template: str,
    body: str,
    content_sid: str | None,
    variables: dict[str, str],
    force_template: bool,
    now: datetime,
) -> WhatsAppPlan:
    """Decide free text or template for one notification.

    Parameters:
        template: the outbox template ("stage", "reply", "optout_confirm"...).
        body: the rendered free text.
        content_sid: the stage's approved template, if any.
        force_template: Twilio told us the window was closed (63016).

    Raises:
        PermanentSendError: opted out, no number, or outside the window with no template.
    """
    if contact.whatsapp_opt_out and template != OPT_OUT_CONFIRMATION:
        raise PermanentSendError("the contact opted out of WhatsApp")
    to = whatsapp_address(contact)
    if not force_template and in_window(contact, now):
        return WhatsAppPlan(to=to, body=body)
    if content_sid:
        return WhatsAppPlan(to=to, content_sid=content_sid, variables=variables)
    reason = "Twilio reported the 24-hour window closed" if force_template else "outside the 24-hour window"
    raise PermanentSendError(f"{reason} and no approved WhatsApp template for this notification")


class WhatsAppSender:
    """Creates messages through Twilio; see the module docstring.

    Parameters:
        account_sid, auth_token: the Twilio account.
        from_number: our WhatsApp sender, ``+E164`` or ``whatsapp:+E164``.
        status_callback: where Twilio posts sent/delivered/read/failed.
        api_base: ``TWILIO_API_BASE`` (a local test server); None: Twilio itself.
        timeout: seconds per HTTP request.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        status_callback: str | None = None,
        api_base: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_address = from_number if from_number.startswith("whatsapp:") else f"whatsapp:{from_number}"
        self.status_callback = status_callback
        self.api_base = api_base
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._http_clients: list[TwilioHttpClient] = []

    @classmethod
    def from_settings(cls, settings: Any) -> WhatsAppSender | None:
        """The sender for ``settings``, or None when Twilio is not configured."""
        if not (settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_whatsapp_from):
            return None
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_whatsapp_from,
            status_callback=settings.public_url.rstrip("/") + STATUS_CALLBACK_PATH,
            api_base=settings.twilio_api_base,
        )

    def send(self, message: WhatsAppPlan) -> str:
        """Create the message; return Twilio's SID.

        Raises:
            TemporarySendError / PermanentSendError: see the module docstring.
        """
        kwargs: dict[str, Any] = {"to": message.to, "from_": self.from_address}
        if message.content_sid:
            kwargs["content_sid"] = message.content_sid
            kwargs["content_variables"] = json.dumps(message.variables or {}, ensure_ascii=False)
        else:
            kwargs["body"] = message.body
        if self.status_callback:
            kwargs["status_callback"] = self.status_callback
        try:
            created = self._client().messages.create(**kwargs)
        except TwilioRestException as exc:
            raise _classify(exc) from exc
        except (requests.RequestException, OSError) as exc:
            raise TemporarySendError(f"cannot reach Twilio: {exc}") from exc
        except TwilioException as exc:
            raise TemporarySendError(f"Twilio client error: {exc}") from exc
        return str(created.sid)

    def close(self) -> None:
        """Close every thread's pooled HTTP connections."""
        with self._lock:
            clients, self._http_clients = self._http_clients, []
        for http in clients:
            if http.session is not None:
                http.session.close()
        self._local = threading.local()

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            http = (
                BaseUrlHttpClient(self.api_base, timeout=self.timeout)
                if self.api_base
                else TwilioHttpClient(timeout=self.timeout)
            )
            with self._lock:
                self._http_clients.append(http)
            client = Client(self.account_sid, self.auth_token, http_client=http)
            self._local.client = client
        return client


def _classify(exc: TwilioRestException) -> TemporarySendError | PermanentSendError:
    status, code = exc.status, exc.code
    text = f"Twilio {status}: {exc.msg}"
    if status == 429 or status >= 500:
        return TemporarySendError(text, code=code)
    if status in (401, 403) and code not in UNREACHABLE_CODES:
        return TemporarySendError(f"Twilio refused our credentials: {exc.msg}", code=code)
    return PermanentSendError(text, code=code)
