"""A batch asks in one statement which Message-IDs are stored mail and which are sent
notifications (PostgreSQL), and each answer still threads its mail.

Why it matters: the two questions share one array of ids and come back as tagged rows;
a mix-up of the tags would thread a reply to a relay's Message-ID as a duplicate, or a
duplicate as a reply. Runs on SQLite (two queries) and PostgreSQL (one).
"""

from __future__ import annotations

from sqlalchemy import select

from inbound.keep import keep_raw
from inbound.process import Processor
from models.message import Message
from models.outbox import Outbox
from models.ticket import Ticket
from tests.mailbuilder import mail
from worker.runtime import Runtime


def test_stored_mail_and_sent_notifications_are_told_apart_in_one_batch(rt: Runtime) -> None:
    first = keep_raw(rt.sessions, source="smtp", data=mail(
        sender="ana@cliente.mx", subject="Frenos", message_id="<a1@cliente.mx>"))
    other = keep_raw(rt.sessions, source="smtp", data=mail(
        sender="beto@cliente.mx", subject="Llantas", message_id="<b1@cliente.mx>"))
    processor = Processor(rt.sessions, rt.settings, rt.catalog)
    processor.process_batch([first, other])
    with rt.transaction() as s:
        llantas = s.scalar(select(Ticket).where(Ticket.subject == "Llantas"))
        assert llantas is not None
        ack = s.scalar(select(Outbox).where(Outbox.ticket_id == llantas.id))
        assert ack is not None
        ack.status = "sent"
        ack.provider_id = "relay.77@smtp.relay.example"  # a relay's own Message-ID
    ids = [
        keep_raw(rt.sessions, source="smtp", data=mail(  # the same mail again
            sender="ana@cliente.mx", subject="Frenos", message_id="<a1@cliente.mx>")),
        keep_raw(rt.sessions, source="smtp", data=mail(  # a reply to the sent notification
            sender="beto@cliente.mx", subject="Re: otra cosa", message_id="<b2@cliente.mx>",
            in_reply_to="relay.77@smtp.relay.example")),
        keep_raw(rt.sessions, source="smtp", data=mail(  # a reply to the stored mail
            sender="ana@cliente.mx", subject="Re: algo distinto", message_id="<a2@cliente.mx>",
            in_reply_to="a1@cliente.mx")),
    ]
    results = processor.process_batch(ids)
    assert results[ids[0]] == "duplicate of <a1@cliente.mx>"
    assert results[ids[1]].endswith("by message_id")  # not by subject: it names another one
    assert results[ids[2]].endswith("by message_id")
    with rt.transaction() as s:
        placed = dict(s.execute(select(Message.external_id, Ticket.subject)
                                .join(Ticket, Ticket.id == Message.ticket_id)).all())
    assert placed == {"a1@cliente.mx": "Frenos", "b1@cliente.mx": "Llantas",
                      "b2@cliente.mx": "Llantas", "a2@cliente.mx": "Frenos"}
