"""The SMTP door (aiosmtpd): accept mail for our inboxes, keep it, answer.

It checks cheaply (``550 5.1.1`` for an unknown recipient, never a relay; ``552`` above
the size limit, advertised with SIZE), commits the raw bytes, and only then answers
``250``. When the commit fails it answers ``451`` so the sender retries; nothing here can
produce aiosmtpd's ``500`` for an unexpected error. Parsing and threading run afterwards,
on what was committed, so a crash after the 250 loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from config.settings import Settings, host_port
from inbound.keep import GroupKeeper, TemporaryFailure

log = logging.getLogger("helpdesk.inbound.smtp")


class InboxHandler:
    """aiosmtpd handler: recipients must be inbox addresses; DATA is kept, then answered."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        inboxes: set[str],
        on_kept: Callable[[int], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.inboxes = {a.lower() for a in inboxes}
        self.on_kept = on_kept
        self.keeper = GroupKeeper(sessions)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.strip().lower() not in self.inboxes:
            return "550 5.1.1 No such mailbox here (this server does not relay)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        try:
            raw_id = await asyncio.wrap_future(self.keeper.keep(
                source="smtp", data=data, envelope_from=envelope.mail_from or None,
                envelope_to=",".join(envelope.rcpt_tos),
            ))
        except TemporaryFailure as exc:
            log.warning("451 to %s: %s", session.peer, exc)
            return "451 4.3.0 Cannot store the message now, please retry later"
        except Exception:  # never aiosmtpd's 500: the sender must retry
            log.exception("451 to %s: unexpected failure while keeping the message", session.peer)
            return "451 4.3.0 Temporary local problem, please retry later"
        if self.on_kept is not None:
            try:
                self.on_kept(raw_id)
            except Exception:  # the message is kept; the sweep will process it
                log.exception("could not schedule processing of raw %s", raw_id)
        return f"250 2.0.0 OK queued as {raw_id}"


class TolerantSMTP(SMTP):
    """aiosmtpd's server, accepting lines longer than RFC 5321's 1,000 octets.

    Real clients (and broken HTML mailers) send them; refusing with a 500 would bounce
    a customer's mail for good. Postfix and Exim accept such lines too.
    """

    line_length_limit = 1 << 20


class InboxController(Controller):
    """aiosmtpd's Controller, with the handler's group keeper started and stopped with it."""

    def factory(self) -> SMTP:
        return TolerantSMTP(self.handler, **self.SMTP_kwargs)

    def start(self) -> None:
        self.handler.keeper.start()
        super().start()

    def stop(self, no_assert: bool = False) -> None:
        super().stop(no_assert)
        self.handler.keeper.stop()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.smtp_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.smtp_tls_cert), str(settings.smtp_tls_key or settings.smtp_tls_cert))
    return context


def make_controller(
    settings: Settings,
    sessions: sessionmaker[DbSession],
    on_kept: Callable[[int], None] | None = None,
    listen: str | None = None,
) -> Controller:
    """An aiosmtpd Controller for the inbox on ``listen`` (default SMTP_LISTEN)."""
    host, port = host_port(listen or settings.smtp_listen)
    handler = InboxHandler(sessions, set(settings.inbox_map), on_kept)
    kwargs: dict[str, Any] = {
        "data_size_limit": settings.max_message_bytes,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "ident": "helpdesk-worker ESMTP",
    }
    context = tls_context(settings)
    if context is not None:
        kwargs["tls_context"] = context
    return InboxController(handler, hostname=host, port=port, **kwargs)
