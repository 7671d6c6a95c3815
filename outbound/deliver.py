"""The send step: claim an outbox row, render, send, record. Safe to run twice.

One ``deliver(outbox_id)`` is two short transactions around the network call:

1. **Claim** with one conditional ``UPDATE ... RETURNING``: the row must be ``pending``
   and due, or ``sending`` with a claim older than ``SEND_CLAIM_SECONDS`` (its worker
   died mid-send). A second job for the same row matches nothing and stops here, so a
   message delivered twice by the broker is sent once. The same transaction reads what
   the message needs (``outbound.snapshot``; on PostgreSQL claim and reads are one
   statement) and counts the attempt.
2. **Render and send**, outside any transaction, on the row's channel.
3. **Record**, guarded by the claim token: ``sent`` with the provider id (our
   Message-ID or Twilio's SID), ``ticket.last_outbound_at``, the outbound ``Message`` on
   the ticket (so a reply's ``In-Reply-To`` finds the ticket) and the survey's
   ``sent_at`` (``outbound.record``; one statement on PostgreSQL); or the next state
   after a failure:

   * ``TemporarySendError``: back to ``pending`` after an exponential backoff with
     jitter, until ``MAX_SEND_ATTEMPTS``, then ``failed``.
   * ``PermanentSendError``: the contact's other channel is tried once, right away;
     without one the row is ``failed`` with the reason (``helpdesk outbox --retry ID``).

A job may carry several ids (``deliver_many``): one claim, then 2 and 3 for each row.

Nothing is retried by the broker: the database row is the truth, and the relay's sweeper
puts due rows back on the queue (``worker.relay``).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from jinja2 import TemplateError
from sqlalchemy import update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.pipelines import Catalog
from config.settings import Settings
from models.base import utcnow
from models.delivery import apply_recorded_events
from models.notify import choose_channel
from models.outbox import Outbox
from models.prepared import prepared
from outbound import whatsapp as wa
from outbound.compose import Notification, build_notification
from outbound.connections import ThreadConnections
from outbound.email import EmailSender, email_sender
from outbound.errors import PermanentSendError, SendError, TemporarySendError
from outbound.mime import compose_email
from outbound.record import record_rest, record_sent, record_sent_at_once
from outbound.render import Renderer
from outbound.snapshot import (
    CLAIM,
    CLAIM_AND_READ,
    CLAIM_MANY_AND_READ,
    RELEASE,
    Snapshot,
    from_claim_and_read,
    read,
)

log = logging.getLogger(__name__)

#: What a template can throw that no retry will fix.
RENDER_ERRORS = (TemplateError, LookupError, ValueError, TypeError)
_FROM_SETTINGS: Any = object()


class Outcome(StrEnum):
    """What one ``deliver`` call did."""

    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # not due, already sent, or claimed by another worker


@dataclass(frozen=True)
class Sent:
    channel: str
    provider_id: str
    subject: str | None
    text: str


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds before attempt ``attempt + 1``: ``base * 2**(attempt-1)`` capped at ``cap``,
    of which the upper half is random ("equal jitter") so that rows failed together by
    one outage do not all come back in the same second."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + rng() * delay / 2


class Deliverer:
    """Sends outbox rows; one per process, shared by its worker threads.

    Parameters:
        sessions: the runtime's session factory; the send step runs Core statements,
            built once, on its engine (the ORM's per-query cost was most of a send). On
            PostgreSQL the claim and the record are one statement each, on a connection
            each worker thread keeps (``outbound.connections``); elsewhere they are short
            transactions of a few statements.
        settings, catalog: the runtime's.
        renderer: default: one ``Renderer`` for the settings' locale and time zone.
        email: default: the relay of ``OUTBOUND_SMTP_URL``, else .eml files.
        whatsapp: default: from the TWILIO_* settings (None: WhatsApp not configured,
            every WhatsApp row falls back to email).
        rng: the jitter's random source.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        catalog: Catalog,
        *,
        renderer: Renderer | None = None,
        email: EmailSender | None = None,
        whatsapp: wa.WhatsAppSender | None = _FROM_SETTINGS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.catalog = catalog
        self.renderer = renderer or Renderer(locale=settings.locale, default_timezone=settings.timezone)
        self.email = email or email_sender(settings.outbound_smtp_url, settings.outbox_dir)
        self.whatsapp = wa.WhatsAppSender.from_settings(settings) if whatsapp is _FROM_SETTINGS else whatsapp
        self.rng = rng
        self.engine: Engine = sessions.kw["bind"]
        self._claim_ttl = timedelta(seconds=settings.send_claim_seconds)
        self._connections = ThreadConnections(self.engine) if self.engine.dialect.name == "postgresql" else None

    def close(self) -> None:
        """Close the senders' and the worker threads' database connections."""
        if self._connections is not None:
            self._connections.close()
        self.email.close()
        if self.whatsapp is not None:
            self.whatsapp.close()

    # -- the step -------------------------------------------------------------------------

    def deliver(self, outbox_id: int) -> Outcome:
        """Claim, send and record one notification (see the module docstring).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database is unavailable; the row keeps its
                state (or its claim, which expires) and the sweeper brings it back.
        """
        token = uuid.uuid4().hex
        note = self._claim(outbox_id, token)
        if not isinstance(note, Notification):
            return note
        return self._deliver_claimed(note, token)

    def deliver_many(self, outbox_ids: Iterable[int]) -> dict[int, Outcome]:
        """Claim a job's rows together (one statement on PostgreSQL, ``CLAIM_MANY_AND_READ``),
        then send each and record it under the claim right after its send: a worker killed
        mid-job leaves the rest claimed, sent after the claim expires. Rows not reached
        within half the claim's lifetime (a slow relay) or after an unexpected error are
        handed back as due (``RELEASE``), before another worker could take them over.
        Elsewhere (SQLite) the rows go one by one through ``deliver``.

        Returns:
            Each id's outcome; ``SKIPPED`` for a row not claimed or handed back.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database is unavailable (see ``deliver``).
        """
        ids = list(dict.fromkeys(int(i) for i in outbox_ids))
        if self._connections is None or len(ids) == 1:
            return {outbox_id: self.deliver(outbox_id) for outbox_id in ids}
        outcomes = dict.fromkeys(ids, Outcome.SKIPPED)
        token = uuid.uuid4().hex
        hand_back_at = time.monotonic() + self._claim_ttl.total_seconds() / 2
        claimed = self._claim_many(ids, token)
        notes = [note for note in claimed.values() if isinstance(note, Notification)]
        outcomes.update({i: done for i, done in claimed.items() if not isinstance(done, Notification)})
        for i, note in enumerate(notes):
            if time.monotonic() > hand_back_at:
                self._release(notes[i:], token)
                break
            try:
                outcomes[note.outbox_id] = self._deliver_claimed(note, token)
            except BaseException:
                self._release(notes[i + 1:], token)
                raise
        return outcomes

    def _deliver_claimed(self, note: Notification, token: str) -> Outcome:
        """Send a row claimed under ``token`` and record the outcome."""
        outbox_id = note.outbox_id
        tried = [c for c in note.payload.get("tried_channels", []) if isinstance(c, str)]
        channel = note.channel
        try:
            sent = self._send(note, channel)
        except TemporarySendError as exc:
            return self._retry(note, token, channel, exc, tried)
        except PermanentSendError as exc:
            tried.append(channel)
            other = choose_channel(note.contact, exclude=tried)
            if other is None:
                return self._fail(note, token, channel, f"{channel}: {exc}", tried)
            log.info("notification %s: %s failed permanently (%s); trying %s", outbox_id, channel, exc, other)
            first_error = f"{channel}: {exc}"
            channel = other
            try:
                sent = self._send(note, channel)
            except TemporarySendError as again:
                return self._retry(note, token, channel, again, tried, earlier=first_error)
            except PermanentSendError as again:
                return self._fail(note, token, channel, f"{first_error}; {channel}: {again}", tried)
        return self._record_sent(note, token, sent, tried)

    # -- claim ----------------------------------------------------------------------------

    def _claim(self, outbox_id: int, token: str) -> Notification | Outcome:
        now = utcnow()
        params = {"oid": outbox_id, "now": now, "stale": now - self._claim_ttl, "token": token}
        if self._connections is None:
            with self.engine.begin() as conn:
                row = conn.execute(CLAIM, params).first()
                if row is None:
                    return Outcome.SKIPPED
                return self._prepare(conn, read(conn, row._mapping), token)

        def claim_and_prepare(conn: Connection) -> Notification | Outcome:
            found = prepared(CLAIM_AND_READ, conn.dialect).run(conn, params)
            if not found:
                return Outcome.SKIPPED
            return self._prepare(conn, from_claim_and_read(found[0]), token)

        return self._connections.run(claim_and_prepare)

    def _claim_many(self, ids: list[int], token: str) -> dict[int, Notification | Outcome]:
        """Claim and read ``ids`` in one statement (PostgreSQL); only the rows claimed."""
        now = utcnow()
        params = {"oids": ids, "now": now, "stale": now - self._claim_ttl, "token": token}

        def claim_and_prepare(conn: Connection) -> dict[int, Notification | Outcome]:
            found = prepared(CLAIM_MANY_AND_READ, conn.dialect).run(conn, params)
            snaps = [from_claim_and_read(row) for row in found]
            return {snap.row["id"]: self._prepare(conn, snap, token) for snap in snaps}

        assert self._connections is not None
        return self._connections.run(claim_and_prepare)

    def _release(self, notes: list[Notification], token: str) -> None:
        """Hand back claimed rows not sent (see ``deliver_many``); if the database is down
        too, their claims expire instead."""
        if not notes:
            return
        ids = [note.outbox_id for note in notes]
        try:
            with self.engine.begin() as conn:
                conn.execute(RELEASE, {"oids": ids, "token": token})
            log.info("handed back notifications %s, not sent in this job", ids)
        except SQLAlchemyError as exc:
            log.warning("cannot hand back notifications %s (%s); their claims will expire", ids, exc)

    def _prepare(self, conn: Connection, snap: Snapshot, token: str) -> Notification | Outcome:
        """The notification of a claimed row, or why it ends here (in the claim's
        transaction, or right after it under its token)."""
        outbox_id = snap.row["id"]
        attempts = snap.row["attempts"]
        if attempts > self.settings.max_send_attempts:
            # Earlier attempts never finished (a worker died on this row every time).
            return self._finish(conn, outbox_id, token, Outcome.FAILED,
                                f"gave up after {attempts - 1} attempts that did not finish")
        try:
            note = build_notification(conn, snap, settings=self.settings, catalog=self.catalog)
        except LookupError as exc:
            return self._finish(conn, outbox_id, token, Outcome.FAILED, str(exc))
        if note.cancel_reason:
            return self._finish(conn, outbox_id, token, Outcome.CANCELLED, note.cancel_reason)
        return note

    @staticmethod
    def _finish(conn: Connection, outbox_id: int, token: str, outcome: Outcome, reason: str) -> Outcome:
        conn.execute(
            update(Outbox).where(Outbox.id == outbox_id, Outbox.claim_token == token)
            .values(status=outcome.value, last_error=reason, claim_token=None)
        )
        log.warning("notification %s %s: %s", outbox_id, outcome.value, reason)
        return outcome

    # -- send -----------------------------------------------------------------------------

    def _send(self, note: Notification, channel: str) -> Sent:
        ctx = note.for_channel(channel)
        if channel == "email":
            to = note.contact.email
            if not to:
                raise PermanentSendError("the contact has no e-mail address")
            try:
                rendered = self.renderer.email(ctx)
            except RENDER_ERRORS as exc:
                raise PermanentSendError(f"cannot render {ctx.template!r} for email: {exc}") from exc
            message = compose_email(note, rendered.subject, rendered.text, rendered.html,
                                    company_name=self.settings.company_name, now=utcnow())
            self.email.send(message, sender=note.from_address, recipients=[to])
            return Sent("email", note.message_id, rendered.subject, rendered.text)
        if channel == "whatsapp":
            if self.whatsapp is None:
                raise PermanentSendError("WhatsApp is not configured (HELPDESK_TWILIO_*)")
            try:
                body = self.renderer.whatsapp(ctx)
            except RENDER_ERRORS as exc:
                raise PermanentSendError(f"cannot render {ctx.template!r} for WhatsApp: {exc}") from exc
            plan = wa.plan(
                note.contact, template=note.template, body=body, content_sid=note.whatsapp_template,
                variables=note.whatsapp_variables, force_template=bool(note.payload.get("force_template")),
                now=utcnow(),
            )
            return Sent("whatsapp", self.whatsapp.send(plan), None, body)
        raise PermanentSendError(f"unknown channel {channel!r}")

    # -- record ---------------------------------------------------------------------------

    def _record_sent(self, note: Notification, token: str, sent: Sent, tried: list[str]) -> Outcome:
        now = utcnow()
        fields: dict[str, Any] = {
            "oid": note.outbox_id, "ticket_id": note.ticket_id, "survey_id": note.survey_id, "channel": sent.channel,
            "provider_id": sent.provider_id, "sender": f"{self.settings.company_name} <{note.from_address}>",
            "subject": sent.subject, "text": sent.text, "now": now,
        }
        reply = note.template == "reply"
        if sent.channel == note.channel and not reply and self._connections is not None:
            done = self._connections.run(lambda conn: record_sent_at_once(conn, token=token, **fields))
        else:
            with self.engine.begin() as conn:
                if sent.channel == note.channel:
                    done = record_sent(conn, token=token, reply=reply, **fields)
                else:
                    done = self._guarded(conn, note, token, {
                        "status": "sent", "channel": sent.channel, "provider_id": sent.provider_id, "sent_at": now,
                        "last_error": None, "claim_token": None,
                        "payload": {**note.payload, "tried_channels": tried, "fallback_from": note.channel},
                    })
                    if done:
                        record_rest(conn, reply=reply, **fields)
        if not done:
            log.warning("notification %s was sent, but its claim had been taken over", note.outbox_id)
            return Outcome.SENT
        if sent.channel == "whatsapp":
            self._replay_early_reports(note.outbox_id)
        return Outcome.SENT

    def _replay_early_reports(self, outbox_id: int) -> None:
        """Twilio may call back before the SID is recorded; those reports were kept without
        a notification and are applied now."""
        with self.sessions.begin() as session:
            row = session.get(Outbox, outbox_id)
            if row is not None:
                apply_recorded_events(session, row)

    def _retry(self, note: Notification, token: str, channel: str, exc: SendError, tried: list[str],
               earlier: str | None = None) -> Outcome:
        reason = f"{earlier}; {channel}: {exc}" if earlier else f"{channel}: {exc}"
        if note.attempts >= self.settings.max_send_attempts:
            return self._fail(note, token, channel, f"gave up after {note.attempts} attempts: {reason}", tried)
        delay = backoff_delay(note.attempts, self.settings.send_backoff_seconds,
                              self.settings.send_backoff_max_seconds, self.rng)
        values: dict[str, Any] = {
            "status": "pending", "next_attempt_at": utcnow() + timedelta(seconds=delay), "last_error": reason,
            "claim_token": None, "claimed_at": None, "channel": channel,
        }
        if channel != note.channel:
            values["payload"] = {**note.payload, "tried_channels": tried, "fallback_from": note.channel}
        with self.engine.begin() as conn:
            self._guarded(conn, note, token, values)
        log.info("notification %s: temporary failure (%s); retry in %.1fs", note.outbox_id, reason, delay)
        return Outcome.RETRY

    def _fail(self, note: Notification, token: str, channel: str, reason: str, tried: list[str]) -> Outcome:
        values: dict[str, Any] = {"status": "failed", "last_error": reason, "claim_token": None, "channel": channel}
        if tried:
            values["payload"] = {k: v for k, v in note.payload.items() if k != "tried_channels"}
        with self.engine.begin() as conn:
            self._guarded(conn, note, token, values)
        log.warning("notification %s failed: %s", note.outbox_id, reason)
        return Outcome.FAILED

    @staticmethod
    def _guarded(conn: Connection, note: Notification, token: str, values: dict[str, Any]) -> bool:
        """Apply ``values`` only while our claim holds; False when another worker took it."""
        result = conn.execute(
            update(Outbox).where(Outbox.id == note.outbox_id, Outbox.claim_token == token).values(values)
        )
        return result.rowcount == 1
