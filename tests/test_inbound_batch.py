"""A batch of mail is threaded exactly as the same mail one message at a time, with a
handful of statements for the whole batch.

The doors' children thread kept mail in batches of 100 that read everything once
(``models.lookups``) and write everything in one flush. These tests feed the same
conversation twice (once a message per batch, once as one batch) and compare what was
stored, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import event, select

from inbound.keep import keep_raw
from inbound.process import Processor
from models.base import utcnow
from models.message import Message, RawMessage
from models.numbers import is_valid
from models.outbox import Outbox
from models.ticket import Participant, Ticket
from tests.mailbuilder import mail
from worker.runtime import Runtime


def conversation(run: str, existing_number: int) -> list[bytes]:
    """Requests, replies inside the same batch, follow-ups, duplicates, copies, strangers."""
    a, b, c = f"ana{run}@cliente.mx", f"beto{run}@cliente.mx", f"extrano{run}@otro.mx"
    return [
        mail(sender=a, subject=f"Frenos {run}", message_id=f"<{run}.1@cliente.mx>",
             cc=f"jefe{run}@cliente.mx"),
        mail(sender=a, subject=f"Re: Frenos {run}", message_id=f"<{run}.2@cliente.mx>",
             in_reply_to=f"{run}.1@cliente.mx", body="Olvidé decir que rechinan."),
        mail(sender=f"jefe{run}@cliente.mx", subject=f"Re: Frenos {run}", message_id=f"<{run}.3@cliente.mx>",
             references=[f"{run}.1@cliente.mx", f"{run}.2@cliente.mx"], body="Autorizo el servicio."),
        mail(sender=a, subject=f"Frenos {run}", message_id=f"<{run}.4@cliente.mx>",
             body="¿Alguna novedad?"),  # same sender, same subject, still open: a follow-up
        mail(sender=a, subject=f"Frenos {run}", message_id=f"<{run}.1@cliente.mx>"),  # a duplicate
        mail(sender=b, subject=f"Llantas {run}", message_id=f"<{run}.5@cliente.mx>"),
        mail(sender=b, subject=f"Placas {run}", message_id=f"<{run}.6@cliente.mx>"),
        mail(sender=b, subject=f"Tarjeta {run}", message_id=f"<{run}.7@cliente.mx>"),
        mail(sender=c, subject=f"Sobre el ticket {existing_number}", message_id=f"<{run}.8@cliente.mx>",
             body=f"Pregunto por el ticket {existing_number}."),  # a stranger citing a number
        mail(sender=b, subject=f"Re: Llantas {run}", message_id=f"<{run}.9@cliente.mx>",
             in_reply_to=f"{run}.5@cliente.mx", headers={"Auto-Submitted": "auto-replied"}),
    ]


def snapshot(rt: Runtime, run: str) -> list[tuple]:
    """What was stored for one run's messages, with the run's own names taken out."""
    with rt.transaction() as s:
        rows = s.execute(
            select(Message.external_id, Message.threaded_by, Ticket.id, Ticket.subject, Ticket.linked_number,
                   Ticket.needs_attention)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .where(Message.external_id.like(f"{run}.%"))
            .order_by(Message.external_id)).all()
        first_of = {}
        out = []
        for external_id, how, ticket_id, subject, linked, flagged in rows:
            first_of.setdefault(ticket_id, external_id)
            participants = sorted(
                (role, email.replace(run, "")) for role, email in s.execute(
                    select(Participant.role, Participant.contact_id).where(Participant.ticket_id == ticket_id)
                ).all() for email in [_email(s, email)])
            acks = sorted(s.scalars(select(Outbox.template).where(Outbox.ticket_id == ticket_id)))
            out.append((external_id.replace(run, ""), how, first_of[ticket_id].replace(run, ""),
                        subject.replace(run, ""), linked, flagged, participants, acks))
    return out


def _email(session, contact_id: int) -> str:
    from models.contact import ContactEmail

    return session.scalar(select(ContactEmail.email).where(ContactEmail.contact_id == contact_id)) or ""


def existing_ticket(rt: Runtime) -> int:
    keep_raw(rt.sessions, source="smtp", data=mail(sender="duena@flota.mx", subject="Ticket previo"))
    Processor(rt.sessions, rt.settings, rt.catalog).process_pending()
    with rt.transaction() as s:
        return s.scalar(select(Ticket.number).order_by(Ticket.id.desc()).limit(1))


def test_a_batch_threads_exactly_as_one_message_at_a_time(rt: Runtime) -> None:
    number = existing_ticket(rt)
    processor = Processor(rt.sessions, rt.settings, rt.catalog)
    for data in conversation("uno", number):
        raw_id = keep_raw(rt.sessions, source="smtp", data=data)
        processor.process_batch([raw_id])
    ids = [keep_raw(rt.sessions, source="smtp", data=data) for data in conversation("dos", number)]
    results = processor.process_batch(ids)
    assert len(results) == len(ids)
    one_by_one, batched = snapshot(rt, "uno"), snapshot(rt, "dos")
    assert batched == one_by_one
    hows = [row[1] for row in batched]
    assert hows.count("new") == 5 and {"message_id", "references", "subject"} <= set(hows)
    assert any("duplicate" in outcome for outcome in results.values())
    assert any(outcome.startswith("auto_reply, added to") for outcome in results.values())


def test_new_tickets_of_a_batch_get_distinct_valid_numbers_in_order(rt: Runtime) -> None:
    ids = [keep_raw(rt.sessions, source="smtp", data=mail(sender=f"u{i}@cliente.mx", subject=f"Asunto {i}"))
           for i in range(12)]
    results = Processor(rt.sessions, rt.settings, rt.catalog).process_batch(ids)
    with rt.transaction() as s:
        numbers = list(s.scalars(select(Ticket.number).order_by(Ticket.id)))
        outcomes = [s.get(RawMessage, i).outcome for i in ids]
    assert len(numbers) == 12 and numbers == sorted(numbers) and all(is_valid(n) for n in numbers)
    assert outcomes == [results[i] for i in ids] == [f"opened ticket {n} by new" for n in numbers]


def test_the_hourly_acknowledgement_cap_holds_inside_one_batch(rt: Runtime) -> None:
    limit = rt.settings.ack_limit_per_hour
    ids = [keep_raw(rt.sessions, source="smtp", data=mail(sender="prisa@cliente.mx", subject=f"Pedido {i}"))
           for i in range(limit + 3)]
    Processor(rt.sessions, rt.settings, rt.catalog).process_batch(ids)
    with rt.transaction() as s:
        acks = s.scalars(select(Outbox).where(Outbox.template == "ack")).all()
        assert len(acks) == limit
        assert all(a.created_at <= utcnow() for a in acks)


def test_a_batch_of_mail_costs_a_few_statements_not_a_dozen_per_message(rt: Runtime) -> None:
    """Threading used to make ~13 round trips per mail; a batch now asks once for all."""
    processor = Processor(rt.sessions, rt.settings, rt.catalog)
    first = [keep_raw(rt.sessions, source="smtp",
                      data=mail(sender=f"c{i}@cliente.mx", subject=f"Unidad {i}", message_id=f"<p{i}@cliente.mx>"))
             for i in range(20)]
    replies = [keep_raw(rt.sessions, source="smtp",
                        data=mail(sender=f"c{i}@cliente.mx", subject=f"Re: Unidad {i}",
                                  message_id=f"<q{i}@cliente.mx>", in_reply_to=f"p{i}@cliente.mx"))
               for i in range(20)]
    statements: list[str] = []
    engine = rt.sessions.kw["bind"]

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        results = processor.process_batch(first + replies)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert sum(r.endswith("by message_id") for r in results.values()) == 20
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) < 10, f"{len(reads)} queries for 40 mails"
    if engine.dialect.name == "postgresql":  # rows are written a table at a time
        assert len(statements) < 40, f"{len(statements)} statements for 40 mails"
    # SQLite cannot return new ids in parameter order, so SQLAlchemy inserts its rows one
    # by one there; in-process, those cost no round trip.


def test_answers_do_not_outlive_their_transaction(rt: Runtime) -> None:
    """A session reused after close or rollback asks the database again, never a stale cache."""
    from models.contact import get_or_create_by_email
    from models.lookups import lookups

    session = rt.sessions()
    try:
        assert lookups(session).contact_by_email("tarde@cliente.mx") is None  # known absent now
        session.close()  # a read that ended without a commit
        with rt.sessions.begin() as other:  # meanwhile another process adds the contact
            get_or_create_by_email(other, "tarde@cliente.mx", "Tarde")
        with session.begin():
            assert lookups(session).contact_by_email("tarde@cliente.mx") is not None
            session.rollback()
        assert "helpdesk.lookups" not in session.info
    finally:
        session.close()


def test_a_batch_writes_its_messages_as_plain_rows_in_arrival_order(rt: Runtime) -> None:
    """Messages without files are written after the flush as plain rows (no ORM object is
    built for them); one with files is an ORM row, written after those before it, so the
    conversation keeps the order in which the mail arrived. The acknowledgement is a
    plain row too, and its id is still what is published after the commit."""
    from models.notify import install_publisher

    built: list[object] = []
    published: list[int] = []
    install_publisher(rt.sessions, published.extend)

    def note(target: object, args: object, kwargs: object) -> None:
        built.append(target)

    event.listen(Message, "init", note)
    event.listen(Outbox, "init", note)
    try:
        ids = [
            keep_raw(rt.sessions, source="smtp", data=mail(sender="orden@cliente.mx", subject="Orden",
                                                         message_id="<o1@cliente.mx>")),
            keep_raw(rt.sessions, source="smtp", data=mail(
                sender="orden@cliente.mx", subject="Re: Orden", message_id="<o2@cliente.mx>",
                in_reply_to="o1@cliente.mx", attachments=[("factura.pdf", "application/pdf", b"%PDF-1.4 x")])),
            keep_raw(rt.sessions, source="smtp", data=mail(sender="orden@cliente.mx", subject="Re: Orden",
                                                         message_id="<o3@cliente.mx>", in_reply_to="o2@cliente.mx")),
        ]
        results = Processor(rt.sessions, rt.settings, rt.catalog).process_batch(ids)
    finally:
        event.remove(Message, "init", note)
        event.remove(Outbox, "init", note)
    assert [results[i].split(" by ")[-1] for i in ids] == ["new", "message_id", "message_id"]
    assert [type(row) for row in built] == [Message]  # only the message that carries a file
    with rt.transaction() as s:
        stored = s.execute(select(Message.external_id, Message.raw_id).order_by(Message.id)).all()
        participants = s.scalars(select(Participant.role)).all()
        acks = s.scalars(select(Outbox.id).where(Outbox.template == "ack")).all()
    assert len(acks) == 1 and published == acks
    assert stored == [("o1@cliente.mx", ids[0]), ("o2@cliente.mx", ids[1]), ("o3@cliente.mx", ids[2])]
    assert participants == ["requester"]


def test_a_rolled_back_savepoint_drops_only_its_own_deferred_rows(rt: Runtime) -> None:
    """A row deferred before a savepoint, with no ORM change to flush when it begins, is
    still pending inside it; the savepoint's rollback must not take it along."""
    from models import deferred
    from models.contact import get_or_create_by_email
    from models.tickets import NewMessage, add_message_later, open_ticket

    with rt.transaction() as s, deferred.deferring(s):
        contact = get_or_create_by_email(s, "guardado@cliente.mx", "Guardado")
        ticket = open_ticket(s, catalog=rt.catalog, settings=rt.settings, pipeline_id="mantenimiento",
                             requester=contact, subject="Guardado", acknowledge=False, flush=False)
        deferred.flush(s)  # the ticket is written: the session has no ORM change left
        add_message_later(s, ticket, contact, NewMessage(channel="email", text="antes", external_id="antes@x"))
        try:
            with s.begin_nested():
                add_message_later(s, ticket, contact, NewMessage(channel="email", text="no", external_id="no@x"))
                raise RuntimeError("this message fails")
        except RuntimeError:
            pass
        add_message_later(s, ticket, contact, NewMessage(channel="email", text="despues", external_id="despues@x"))
        assert deferred.has_deferred(s)
        deferred.flush(s)
        assert not deferred.has_deferred(s)
    with rt.transaction() as s:
        assert s.scalars(select(Message.external_id).order_by(Message.id)).all() == ["antes@x", "despues@x"]
        assert s.scalars(select(Participant.role)).all() == ["requester"]


def test_two_processors_never_split_a_conversation_between_their_batches(rt: Runtime) -> None:
    """Two children thread the same backlog; each reply comes a few mails after its
    request, so requests and replies land in different, concurrent batches (on
    PostgreSQL a trigger keeps each batch open 50 ms after its reads). Senders are known
    contacts (no new contact makes a batch wait on a unique index). Every reply must join
    its request's ticket: a batch waits for the other batch that holds mail of the same
    sender or Message-ID (``inbound.process._serialize``) before it reads. (On SQLite
    every transaction takes the write lock at BEGIN: batches never overlap there.)"""
    import threading

    senders = [f"conocido{i}@cliente.mx" for i in range(24)]
    for sender in senders:
        keep_raw(rt.sessions, source="smtp", data=mail(sender=sender, subject="Primer contacto"))
    Processor(rt.sessions, rt.settings, rt.catalog).process_pending()
    mails: list[bytes] = []
    for i, sender in enumerate(senders):
        mails.append(mail(sender=sender, subject=f"Tema nuevo {i}", message_id=f"<tema{i}@cliente.mx>"))
        if i >= 3:  # the reply to the request three before
            j = i - 3
            mails.append(mail(sender=senders[j], subject=f"Re: Tema nuevo {j}", message_id=f"<resp{j}@cliente.mx>",
                              in_reply_to=f"tema{j}@cliente.mx", body="Gracias."))
    for j in range(len(senders) - 3, len(senders)):
        mails.append(mail(sender=senders[j], subject=f"Re: Tema nuevo {j}", message_id=f"<resp{j}@cliente.mx>",
                          in_reply_to=f"tema{j}@cliente.mx", body="Gracias."))
    for data in mails:
        keep_raw(rt.sessions, source="smtp", data=data)
    engine = rt.sessions.kw["bind"]
    if engine.dialect.name == "postgresql":  # hold each batch open after its reads
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE FUNCTION test_slow_write() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$")
            conn.exec_driver_sql("CREATE TRIGGER test_slow_write AFTER INSERT ON messages "
                                 "FOR EACH STATEMENT EXECUTE FUNCTION test_slow_write()")
    errors: list[BaseException] = []

    def child() -> None:
        try:
            Processor(rt.sessions, rt.settings, rt.catalog).process_pending(batch=3)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=child) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with rt.transaction() as s:
        ticket_of = dict(s.execute(select(Message.external_id, Message.ticket_id)
                                   .where(Message.external_id.like("tema%") | Message.external_id.like("resp%"))).all())
        statuses = set(s.scalars(select(RawMessage.status)))
    assert statuses == {"done"}
    assert len(ticket_of) == 2 * len(senders)
    split = [j for j in range(len(senders)) if ticket_of[f"resp{j}@cliente.mx"] != ticket_of[f"tema{j}@cliente.mx"]]
    assert split == []
