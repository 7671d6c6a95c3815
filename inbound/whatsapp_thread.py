"""Where a WhatsApp message goes: the five threading steps, in the issue's order.

1. A reply to one of our messages (OriginalRepliedMessageSid) → that ticket.
2. A valid ticket number in the text from a participant (or a contact of the ticket's
   company) → that ticket; from anybody else → a new ticket linked to it, flagged.
3. A pending survey and a score (or the quick-reply payload) → the survey answer; a text
   right after answering → the survey's comment. Neither opens a ticket.
4. The contact's only open ticket → that ticket; several → the one we last wrote to,
   with a notice naming it and how to pick another.
5. Otherwise a new attention ticket, acknowledged on WhatsApp.

A closed ticket reached by steps 1, 2 or 4 takes the message and is flagged while it is
within ``followup_days`` of closing; later, a new ticket linked to the old number opens.
Every message records the step in ``Message.threaded_by``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config.pipelines import Catalog
from config.settings import Settings
from inbound.media import pending_line
from inbound.whatsapp import WhatsAppMessage
from inbound.whatsapp_words import media_filename, subject_from, survey_score
from models.base import utcnow
from models.contact import Contact
from models.message import Attachment, Message
from models.notify import acks_in_last_hour, enqueue, whatsapp_possible
from models.numbers import find_numbers
from models.outbox import Outbox
from models.survey import Survey
from models.ticket import Participant, Ticket
from models.tickets import NewMessage, add_message, add_participant, find_by_number, flag, open_ticket

if TYPE_CHECKING:
    from inbound.process import RawRow

#: A text this soon after a WhatsApp survey answer is that answer's comment.
COMMENT_WINDOW = timedelta(minutes=30)
#: The "which ticket" notice goes at most once per ticket in this time.
NOTICE_QUIET = timedelta(hours=1)


class Router:
    """One message's threading, with what every step needs at hand."""

    def __init__(self, session: Session, message: WhatsAppMessage, contact: Contact, raw: RawRow,
                 settings: Settings, catalog: Catalog) -> None:
        self.session = session
        self.message = message
        self.contact = contact
        self.raw = raw
        self.settings = settings
        self.catalog = catalog
        self.now = utcnow()

    # -- the message itself ------------------------------------------------------------

    def text(self) -> str:
        parts = [self.message.body] if self.message.body else []
        if self.message.location:
            parts.append(self.message.location)
        parts += [pending_line(media_filename(m.content_type, i)) for i, m in enumerate(self.message.media, 1)]
        return "\n".join(parts)

    def new_message(self, threaded_by: str) -> NewMessage:
        name = self.message.profile_name or self.contact.name
        phone = self.contact.phone or self.message.sender
        return NewMessage(
            channel="whatsapp", text=self.text(), external_id=self.message.sid,
            sender=f"{name} <{phone}>" if name else phone, raw_id=self.raw.id,
            threaded_by=threaded_by, created_at=self.now,
        )

    def store(self, ticket: Ticket, threaded_by: str) -> Message:
        """Add the message (and its pending media) to ``ticket``; the flush claims the sid."""
        row = add_message(self.session, ticket, self.contact, self.new_message(threaded_by))
        self._attach(row)
        ticket.updated_at = self.now
        self.session.flush()
        return row

    def _attach(self, row: Message) -> None:
        for i, media in enumerate(self.message.media, 1):
            row.attachments.append(Attachment(
                filename=media_filename(media.content_type, i),
                content_type=media.content_type or "application/octet-stream",
                size=0, source_url=media.url,
            ))

    @property
    def channel(self) -> str | None:
        """Answers to a WhatsApp message go on WhatsApp, unless the contact opted out."""
        return "whatsapp" if whatsapp_possible(self.contact) else None

    # -- outcomes ----------------------------------------------------------------------

    def join(self, ticket: Ticket, threaded_by: str) -> str:
        """Add to ``ticket``; a closed one is flagged within the follow-up window, and is
        replaced by a new linked ticket after it."""
        if not ticket.is_open:
            closed_at = ticket.closed_at or ticket.updated_at
            if closed_at < self.now - timedelta(days=self.settings.followup_days):
                successor = self.open_linked(ticket.number)
                if successor is not None:
                    return self.join(successor, threaded_by)
                return self.open_new("new_linked", follows=ticket)
            flag(ticket, f"Mensaje de WhatsApp después del cierre ({self.message.sid})")
        if threaded_by in ("reply_context", "number"):
            add_participant(self.session, ticket, self.contact, "cc")
        self.store(ticket, threaded_by)
        return f"ticket {ticket.number} ({threaded_by})"

    def open_new(self, threaded_by: str, *, quoted: int | None = None, follows: Ticket | None = None) -> str:
        reason = None
        if quoted is not None:
            reason = f"El remitente citó el ticket {quoted}, del que no es participante"
        ticket = open_ticket(
            self.session, catalog=self.catalog, settings=self.settings,
            pipeline_id=self.settings.default_pipeline, requester=self.contact,
            subject=subject_from(self.message.body), message=self.new_message(threaded_by),
            linked_number=quoted, attention_reason=reason, ack_channel=self.channel,
        )
        if follows is not None:
            ticket.linked_number = follows.number
        self.session.flush()
        row = self.session.scalar(
            select(Message).where(Message.channel == "whatsapp", Message.external_id == self.message.sid)
        )
        if row is not None:
            self._attach(row)
            self.session.flush()
        return f"ticket {ticket.number} ({threaded_by})"

    # -- step 1: reply context ---------------------------------------------------------

    def replied_to(self) -> tuple[Ticket, Outbox | None] | None:
        sid = self.message.replied_sid
        if not sid:
            return None
        row = self.session.scalar(
            select(Outbox).where(Outbox.provider_id == sid, Outbox.ticket_id.is_not(None)).limit(1)
        )
        if row is not None:
            return self.session.get(Ticket, row.ticket_id), row  # type: ignore[return-value]
        ticket_id = self.session.scalar(
            select(Message.ticket_id).where(
                Message.channel == "whatsapp", Message.external_id == sid, Message.direction == "out"
            )
        )
        return (self.session.get(Ticket, ticket_id), None) if ticket_id is not None else None  # type: ignore[return-value]

    # -- step 2: a ticket number -------------------------------------------------------

    def open_linked(self, number: int) -> Ticket | None:
        """The contact's open ticket already opened about ``number`` (quoting it again
        must not open another one)."""
        return self.session.scalar(
            select(Ticket)
            .join(Participant, Participant.ticket_id == Ticket.id)
            .where(Participant.contact_id == self.contact.id, Ticket.linked_number == number,
                   Ticket.state == "Abierto")
            .order_by(Ticket.id.desc())
            .limit(1)
        )

    def may_write_to(self, ticket: Ticket) -> bool:
        participant = self.session.scalar(
            select(Participant.id).where(
                Participant.ticket_id == ticket.id, Participant.contact_id == self.contact.id
            )
        )
        if participant is not None:
            return True
        return self.contact.company_id is not None and ticket.company_id == self.contact.company_id

    # -- step 3: survey ----------------------------------------------------------------

    def pending_survey(self, hint: Survey | None = None) -> Survey | None:
        def pending(s: Survey | None) -> bool:
            return bool(s and s.sent_at and s.answered_at is None and s.expires_at > self.now)

        if pending(hint):
            return hint
        return self.session.scalar(
            select(Survey)
            .where(Survey.contact_id == self.contact.id, Survey.sent_at.is_not(None),
                   Survey.answered_at.is_(None), Survey.expires_at > self.now)
            .order_by(Survey.sent_at.desc(), Survey.id.desc())
            .limit(1)
        )

    def recently_answered(self) -> Survey | None:
        return self.session.scalar(
            select(Survey)
            .where(Survey.contact_id == self.contact.id, Survey.channel == "whatsapp",
                   Survey.answered_at >= self.now - COMMENT_WINDOW)
            .order_by(Survey.answered_at.desc())
            .limit(1)
        )

    def survey(self, hint: Survey | None = None) -> str | None:
        """The survey answer or its comment, or None when the message is neither."""
        score = survey_score(self.message.body, self.message.button_payload)
        if score is not None:
            survey = self.pending_survey(hint)
            if survey is not None:
                self.store(self._survey_ticket(survey), "survey")
                answered = self.session.execute(
                    update(Survey)
                    .where(Survey.id == survey.id, Survey.answered_at.is_(None))
                    .values(score=score, answered_at=self.now, channel="whatsapp")
                    .execution_options(synchronize_session="fetch")
                ).rowcount
                if not answered:
                    return f"survey {survey.id} already answered"
                enqueue(self.session, ticket=self._survey_ticket(survey), contact=self.contact,
                        template="survey_thanks", payload={"survey_id": survey.id, "score": score},
                        channel=self.channel)
                return f"survey {survey.id} answered {score} (survey)"
        survey = self.recently_answered()
        if survey is None or not self.message.body:
            return None
        if score is not None:  # the same score again: kept with the survey, no second thanks
            self.store(self._survey_ticket(survey), "survey")
            return f"survey {survey.id} score repeated (survey)"
        if survey.comment is not None:
            return None
        self.store(self._survey_ticket(survey), "survey_comment")
        self.session.execute(
            update(Survey).where(Survey.id == survey.id, Survey.comment.is_(None))
            .values(comment=self.message.body[:4000])
            .execution_options(synchronize_session="fetch")
        )
        return f"survey {survey.id} comment (survey_comment)"

    def _survey_ticket(self, survey: Survey) -> Ticket:
        return self.session.get(Ticket, survey.ticket_id)  # type: ignore[return-value]

    # -- step 4: open tickets ----------------------------------------------------------

    def open_tickets(self) -> list[Ticket]:
        tickets = list(self.session.scalars(
            select(Ticket)
            .join(Participant, Participant.ticket_id == Ticket.id)
            .where(Participant.contact_id == self.contact.id, Ticket.state == "Abierto",
                   Ticket.kind == "attention")
        ))
        # The one we last wrote to first, then the newest (no NULLS LAST: SQLite lacks it).
        return sorted(
            tickets,
            key=lambda t: (t.last_outbound_at is not None, t.last_outbound_at or t.created_at, t.id),
            reverse=True,
        )

    def notice(self, chosen: Ticket, others: list[Ticket]) -> None:
        """Tell which ticket the message joined, at most once per ticket per hour."""
        recent = self.session.scalar(
            select(func.count(Outbox.id)).where(
                Outbox.ticket_id == chosen.id, Outbox.template == "joined_ticket",
                Outbox.created_at >= self.now - NOTICE_QUIET,
            )
        )
        if recent or acks_in_last_hour(self.session, self.contact) >= self.settings.ack_limit_per_hour:
            return
        enqueue(self.session, ticket=chosen, contact=self.contact, template="joined_ticket",
                payload={"number": chosen.number, "other_open_numbers": [t.number for t in others],
                         "pipeline": chosen.pipeline, "stage": chosen.stage},
                channel=self.channel)

    # -- the order ---------------------------------------------------------------------

    def route(self) -> str:
        replied = self.replied_to()
        if replied is not None:
            ticket, row = replied
            if row is not None and row.template == "survey":
                hint = self.session.get(Survey, (row.payload or {}).get("survey_id") or 0)
                answered = self.survey(hint)
                if answered is not None:
                    return answered
            return self.join(ticket, "reply_context")
        for number in find_numbers(self.message.body, self.settings.ticket_prefix):
            ticket = find_by_number(self.session, number)
            if ticket is None:
                continue
            if self.may_write_to(ticket):
                return self.join(ticket, "number")
            linked = self.open_linked(number)
            if linked is not None:
                return self.join(linked, "number")
            return self.open_new("new_flagged", quoted=number)
        answered = self.survey()
        if answered is not None:
            return answered
        tickets = self.open_tickets()
        if len(tickets) == 1:
            return self.join(tickets[0], "single_open")
        if tickets:
            chosen, others = tickets[0], tickets[1:]
            outcome = self.join(chosen, "last_written")
            self.notice(chosen, others)
            return outcome
        return self.open_new("new")


def route(session: Session, message: WhatsAppMessage, contact: Contact, raw: RawRow,
          settings: Settings, catalog: Catalog) -> str:
    """Thread ``message`` from ``contact``; return the outcome for the raw row."""
    return Router(session, message, contact, raw, settings, catalog).route()
