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
import re
import ssl
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from config.settings import Settings, host_port
from inbound.keep import TemporaryFailure
from inbound.loop_keeper import DoorKeeper, door_keeper

log = logging.getLogger("helpdesk.inbound.smtp")


class InboxHandler:
    """aiosmtpd handler: recipients must be inbox addresses; DATA is kept, then answered.

    Parameters:
        keeper: commits each message before its 250 (default: ``door_keeper(sessions)``,
            group commit on the event loop on PostgreSQL).
    """

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        inboxes: set[str],
        on_kept: Callable[[int], None] | None = None,
        keeper: DoorKeeper | None = None,
    ) -> None:
        self.sessions = sessions
        self.inboxes = {a.lower() for a in inboxes}
        self.on_kept = on_kept
        self.keeper = keeper or door_keeper(sessions)

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
            raw_id = await self.keeper.keep(source="smtp", data=data, envelope_from=envelope.mail_from or None,
                                            envelope_to=",".join(envelope.rcpt_tos))
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


# An angle-bracketed path whose local part and domain are plain dot-atoms
# (``<ana.lopez@cliente.mx> SIZE=1200``): nearly every MAIL FROM and RCPT TO.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)", re.DOTALL)


class TolerantSMTP(SMTP):
    """aiosmtpd's server, accepting lines longer than RFC 5321's 1,000 octets, and
    reading plain addresses without the email package's header parser.

    Long lines: real clients (and broken HTML mailers) send them; refusing with a 500
    would bounce a customer's mail for good. Postfix and Exim accept such lines too.
    """

    line_length_limit = 1 << 20

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address and the rest of a MAIL/RCPT argument, as aiosmtpd's own.

        Why: aiosmtpd parses every path with ``email._header_value_parser``, which cost
        the door about a tenth of its CPU per message. A plain ``<dot-atom@domain>`` path
        reads the same with one regular expression (tests/test_keep_smtp_paths.py
        compares both); anything else (quotes, comments, ``<>``, no brackets, route
        syntax) still goes to aiosmtpd's parser.
        """
        match = _PLAIN_PATH.match(arg.lstrip()) if arg else None
        if match is None:
            return super()._getaddr(arg)
        rest = match.group(2)
        if rest[:1] in (" ", "\t"):  # folding white space after ">": the parser eats it all
            rest = rest.lstrip()
        if rest.startswith("("):  # a comment: leave it to the parser
            return super()._getaddr(arg)
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest


class InboxController(Controller):
    """aiosmtpd's Controller, with the handler's keeper closed before its loop stops.

    Why before: the keeper's groups under way run on that loop (and its connection was
    opened there); closing it first lets them commit and answer, and a message arriving
    after that gets a 451 instead of waiting for a loop that will not run again.
    """

    def factory(self) -> SMTP:
        return TolerantSMTP(self.handler, **self.SMTP_kwargs)

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None and self.loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(self.handler.keeper.aclose(), self.loop)
            try:
                closing.result(timeout=60)
            except Exception:  # a hung database: stopping the loop cancels the group (unanswered)
                log.exception("the door's keeper did not close cleanly")
        super().stop(no_assert)


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
    keeper = door_keeper(sessions, connect_timeout=settings.database_timeout_seconds)
    handler = InboxHandler(sessions, set(settings.inbox_map), on_kept, keeper)
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
