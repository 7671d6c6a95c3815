"""A mail batch writes its new contacts and tickets as plain INSERTs, not through the
ORM's unit of work, and what it writes is what the ORM wrote.

Why it matters: the unit of work for a batch's new contacts and tickets was a fifth of
threading a mail. These tests watch the session (no new ticket or contact ever becomes
pending in it) and read back what was stored, on SQLite and PostgreSQL, including a
ticket changed after a flush in the middle of the batch (a mail with files is written
as soon as it is handled).
"""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from inbound.keep import keep_raw
from inbound.process import Processor
from models.contact import Contact, ContactEmail
from models.message import Message
from models.numbers import is_valid
from models.ticket import Participant, Ticket
from tests.mailbuilder import mail
from worker.runtime import Runtime


def process_watching_the_session(rt: Runtime, ids: list[int]) -> tuple[dict[int, str], list[object]]:
    """Process ``ids`` as one batch; also returns the tickets, contacts and addresses
    that became pending in the ORM session meanwhile."""
    pending: list[object] = []

    def note(session: Session, instance: object) -> None:
        if isinstance(instance, Ticket | Contact | ContactEmail):
            pending.append(instance)

    event.listen(rt.sessions, "transient_to_pending", note)
    try:
        return Processor(rt.sessions, rt.settings, rt.catalog).process_batch(ids), pending
    finally:
        event.remove(rt.sessions, "transient_to_pending", note)


def test_new_senders_and_their_tickets_are_written_without_the_unit_of_work(rt: Runtime) -> None:
    ids = [
        keep_raw(rt.sessions, source="smtp", data=mail(
            sender="Nuevo Uno <nuevo1@cliente.mx>", subject="Frenos", message_id="<c1@cliente.mx>",
            cc="jefa@cliente.mx")),
        keep_raw(rt.sessions, source="smtp", data=mail(
            sender="nuevo2@cliente.mx", subject="Llantas", message_id="<c2@cliente.mx>")),
        keep_raw(rt.sessions, source="smtp", data=mail(
            sender="nuevo1@cliente.mx", subject="Re: Frenos", message_id="<c3@cliente.mx>",
            in_reply_to="c1@cliente.mx")),
    ]
    results, pending = process_watching_the_session(rt, ids)
    assert pending == []
    assert [results[i].rsplit(" by ", 1)[1] for i in ids] == ["new", "new", "message_id"]
    with rt.transaction() as s:
        tickets = s.scalars(select(Ticket).order_by(Ticket.id)).all()
        assert [t.subject for t in tickets] == ["Frenos", "Llantas"]
        assert all(is_valid(t.number) for t in tickets) and tickets[0].number < tickets[1].number
        assert [t.priority for t in tickets] == ["normal", "normal"]  # column defaults applied
        requester = s.get(Contact, tickets[0].requester_id)
        assert requester is not None and requester.name == "Nuevo Uno" and requester.email == "nuevo1@cliente.mx"
        assert requester.preferred_channel == "email"
        roles = sorted(s.execute(
            select(Participant.role, ContactEmail.email)
            .join(ContactEmail, ContactEmail.contact_id == Participant.contact_id)
            .where(Participant.ticket_id == tickets[0].id)).all())
        assert roles == [("cc", "jefa@cliente.mx"), ("requester", "nuevo1@cliente.mx")]
        messages = s.execute(select(Message.external_id, Message.ticket_id).order_by(Message.id)).all()
        assert messages == [("c1@cliente.mx", tickets[0].id), ("c2@cliente.mx", tickets[1].id),
                            ("c3@cliente.mx", tickets[0].id)]


def test_a_ticket_written_in_the_middle_of_a_batch_still_takes_later_changes(rt: Runtime) -> None:
    """A mail with files flushes the batch so far, writing the new ticket and contact
    before it as plain rows the session does not track; a reply after it that joins
    that ticket must still mark it updated, and a sender first seen without a name and
    then with one keeps the name."""
    ids = [
        keep_raw(rt.sessions, source="smtp", data=mail(
            sender="temprano@cliente.mx", subject="Motor", message_id="<m1@cliente.mx>")),
        keep_raw(rt.sessions, source="smtp", data=mail(
            sender="otro@cliente.mx", subject="Factura", message_id="<m2@cliente.mx>",
            attachments=[("factura.pdf", "application/pdf", b"%PDF-1.4 x")])),
        keep_raw(rt.sessions, source="smtp", data=mail(
            sender="Ya Con Nombre <temprano@cliente.mx>", subject="Re: Motor", message_id="<m3@cliente.mx>",
            in_reply_to="m1@cliente.mx")),
    ]
    results, pending = process_watching_the_session(rt, ids)
    assert pending == []
    assert results[ids[2]].endswith("by message_id")
    with rt.transaction() as s:
        ticket = s.scalar(select(Ticket).where(Ticket.subject == "Motor"))
        reply_at = s.scalar(select(Message.created_at).where(Message.external_id == "m3@cliente.mx"))
        assert ticket is not None and reply_at is not None
        assert ticket.updated_at >= reply_at > ticket.created_at
        contact = s.get(Contact, ticket.requester_id)
        assert contact is not None and contact.name == "Ya Con Nombre"
