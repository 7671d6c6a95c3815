"""Mail threads onto the right ticket, never a duplicate, with the reason recorded.

Each test keeps raw bytes the way a door does and runs the same processing step the
doors run afterwards, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from inbound.keep import keep_raw
from inbound.process import Processor
from models.base import utcnow
from models.contact import Company
from models.message import Attachment, Blob, Message, RawMessage
from models.numbers import make_number
from models.outbox import Outbox
from models.stages import move_stage
from models.ticket import Participant, Ticket
from tests.mailbuilder import mail, message_id_of
from worker.runtime import Runtime


def deliver(rt: Runtime, raw: bytes, source: str = "smtp", envelope_to: str | None = None) -> str:
    raw_id = keep_raw(rt.sessions, source=source, data=raw, envelope_to=envelope_to)
    return Processor(rt.sessions, rt.settings, rt.catalog).process(raw_id) or ""


def tickets(rt: Runtime) -> list[Ticket]:
    with rt.transaction() as s:
        return list(s.scalars(select(Ticket).order_by(Ticket.id)))


def messages(rt: Runtime, ticket: Ticket) -> list[Message]:
    with rt.transaction() as s:
        return list(s.scalars(select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)))


def count(rt: Runtime, model) -> int:
    with rt.transaction() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_a_new_request_opens_a_ticket_with_an_acknowledgement(rt: Runtime) -> None:
    outcome = deliver(rt, mail())
    [ticket] = tickets(rt)
    assert outcome == f"opened ticket {ticket.number} by new"
    assert (ticket.pipeline, ticket.stage, ticket.subject) == ("mantenimiento", "Abierto", "Servicio preventivo")
    [msg] = messages(rt, ticket)
    assert msg.threaded_by == "new" and msg.channel == "email" and "necesito servicio" in msg.text
    with rt.transaction() as s:
        [ack] = s.scalars(select(Outbox)).all()
        assert (ack.template, ack.channel, ack.ticket_id) == ("ack", "email", ticket.id)


def test_the_recipient_address_chooses_the_pipeline(rt: Runtime) -> None:
    deliver(rt, mail(to="Seguros <seguros@jhleasing.mx>", subject="Renovar póliza"))
    [ticket] = tickets(rt)
    assert ticket.pipeline == "seguros" and ticket.inbox_address == "seguros@jhleasing.mx"


def test_the_same_message_id_twice_adds_nothing(rt: Runtime) -> None:
    raw = mail()
    deliver(rt, raw, "smtp")
    outcome = deliver(rt, raw, "imap")
    assert outcome.startswith("duplicate of")
    assert count(rt, Ticket) == 1 and count(rt, Message) == 1 and count(rt, Outbox) == 1


def test_a_reply_by_in_reply_to_joins_its_ticket(rt: Runtime) -> None:
    first = mail()
    deliver(rt, first)
    outcome = deliver(rt, mail(subject="Re: algo distinto", body="Gracias, ¿a qué hora?",
                               in_reply_to=message_id_of(first)))
    [ticket] = tickets(rt)
    assert "added to ticket" in outcome
    assert [m.threaded_by for m in messages(rt, ticket)] == ["new", "message_id"]


def test_a_reply_by_references_only_joins_its_ticket(rt: Runtime) -> None:
    first = mail()
    deliver(rt, first)
    deliver(rt, mail(sender="otra@cliente.mx", subject="Otro asunto", references=["x@y", message_id_of(first)]))
    [ticket] = tickets(rt)
    assert [m.threaded_by for m in messages(rt, ticket)] == ["new", "references"]


def test_a_reply_to_our_notification_joins_its_ticket(rt: Runtime) -> None:
    from models.identity import make_message_id

    deliver(rt, mail())
    with rt.transaction() as s:
        ack = s.scalar(select(Outbox))
        our_id = make_message_id(ack.id, "jhleasing.mx", rt.settings.secret_key)
    deliver(rt, mail(subject="Re: Ticket", body="ok", in_reply_to=our_id))
    [ticket] = tickets(rt)
    assert [m.threaded_by for m in messages(rt, ticket)] == ["new", "message_id"]


def test_the_subject_tag_joins_for_a_participant(rt: Runtime) -> None:
    deliver(rt, mail())
    [ticket] = tickets(rt)
    outcome = deliver(rt, mail(subject=f"RE: [JHL#{ticket.number}] Cita", body="Confirmo la cita"))
    assert outcome == f"added to ticket {ticket.number} by tag"


def test_a_number_in_the_text_joins_for_a_colleague_of_the_company(rt: Runtime) -> None:
    with rt.transaction() as s:
        s.add(Company(name="Cliente SA", mail_domain="cliente.mx"))
    deliver(rt, mail())
    [ticket] = tickets(rt)
    outcome = deliver(rt, mail(sender="jefe@cliente.mx", subject="Pregunta",
                               body=f"Buen día, mi folio es el {ticket.number}. ¿Cómo va?"))
    assert outcome == f"added to ticket {ticket.number} by number"


def test_a_stranger_quoting_a_number_opens_a_linked_flagged_ticket(rt: Runtime) -> None:
    deliver(rt, mail())
    [ticket] = tickets(rt)
    outcome = deliver(rt, mail(sender="extrano@otro.com", subject=f"[JHL#{ticket.number}] hola",
                               body="quiero ver este ticket"))
    assert outcome.startswith("opened ticket")
    first, second = tickets(rt)
    assert second.linked_number == ticket.number and second.needs_attention
    assert "not one of its participants" in second.attention_reason
    assert len(messages(rt, first)) == 1
    with rt.transaction() as s:
        templates = [r.template for r in s.scalars(select(Outbox).order_by(Outbox.id))]
    assert templates == ["ack", "flagged_new_ticket"]


def test_staff_may_write_into_any_ticket_by_number(rt: Runtime) -> None:
    deliver(rt, mail())
    [ticket] = tickets(rt)
    outcome = deliver(rt, mail(sender="ejecutivo@jhleasing.mx", subject="Nota", body=f"ticket {ticket.number}"))
    assert outcome == f"added to ticket {ticket.number} by number"


def test_a_wrong_check_digit_does_not_thread(rt: Runtime) -> None:
    deliver(rt, mail())
    [ticket] = tickets(rt)
    wrong = ticket.number + 1 if ticket.number % 10 != 9 else ticket.number - 1
    deliver(rt, mail(subject=f"[JHL#{wrong}] Otro", body="nuevo"))
    assert len(tickets(rt)) == 2


def test_the_same_sender_and_subject_while_open_is_a_follow_up(rt: Runtime) -> None:
    deliver(rt, mail(subject="Ruido en frenos"))
    outcome = deliver(rt, mail(subject="RE: ruido en FRENOS", body="olvidé decir que es el Versa"))
    [ticket] = tickets(rt)
    assert outcome == f"added to ticket {ticket.number} by subject"
    deliver(rt, mail(sender="otro@cliente.mx", subject="Ruido en frenos"))
    assert len(tickets(rt)) == 2


def test_a_message_after_close_joins_and_flags_inside_the_window_and_opens_a_new_one_after(rt: Runtime) -> None:
    deliver(rt, mail())
    [ticket] = tickets(rt)
    with rt.transaction() as s:
        t = s.get(Ticket, ticket.id)
        move_stage(s, t, "Cerrado", catalog=rt.catalog, settings=rt.settings)
    deliver(rt, mail(subject=f"Re: [JHL#{ticket.number}]", body="Otra duda"))
    with rt.transaction() as s:
        t = s.get(Ticket, ticket.id)
        assert t.needs_attention and "after the ticket was closed" in t.attention_reason
        t.closed_at = utcnow() - timedelta(days=rt.settings.followup_days + 1)
    deliver(rt, mail(subject=f"Re: [JHL#{ticket.number}]", body="Y otra más"))
    first, second = tickets(rt)
    assert second.linked_number == ticket.number
    assert len(messages(rt, first)) == 2


def test_auto_replies_and_bounces_open_nothing_and_get_no_acknowledgement(rt: Runtime) -> None:
    deliver(rt, mail(subject="Respuesta automática: fuera de la oficina", headers={"Auto-Submitted": "auto-replied"}))
    deliver(rt, mail(subject="Out of Office", headers={"X-Autoreply": "yes"}))
    deliver(rt, mail(sender="MAILER-DAEMON@mx.cliente.mx", subject="Undelivered Mail Returned to Sender",
                     body="This is the mail system.\n\n<nadie@cliente.mx>: host said: 550 5.1.1 User unknown"))
    assert count(rt, Ticket) == 0 and count(rt, Outbox) == 0


def test_an_auto_reply_to_a_ticket_is_kept_but_not_answered(rt: Runtime) -> None:
    first = mail()
    deliver(rt, first)
    deliver(rt, mail(subject="Respuesta automática", in_reply_to=message_id_of(first),
                     headers={"Auto-Submitted": "auto-replied"}))
    [ticket] = tickets(rt)
    assert len(messages(rt, ticket)) == 2
    assert count(rt, Outbox) == 1  # only the first acknowledgement


def test_a_bounce_of_our_notification_marks_it_bounced(rt: Runtime) -> None:
    from models.identity import make_message_id

    deliver(rt, mail())
    with rt.transaction() as s:
        ack = s.scalar(select(Outbox))
        ack.status = "sent"
        ack.provider_id = make_message_id(ack.id, "jhleasing.mx", rt.settings.secret_key)
        our_id = ack.provider_id
    dsn = (
        "From: MAILER-DAEMON@mx.cliente.mx\r\nTo: soporte@jhleasing.mx\r\nSubject: Delivery Status Notification\r\n"
        "Message-ID: <dsn1@mx.cliente.mx>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nNo se pudo entregar.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.cliente.mx\r\n\r\n"
        "Final-Recipient: rfc822; ana@cliente.mx\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{our_id}>\r\nSubject: x\r\n\r\n--b--\r\n"
    ).encode()
    outcome = deliver(rt, dsn)
    assert outcome.startswith("permanent bounce of notification")
    with rt.transaction() as s:
        assert s.scalar(select(Outbox)).status == "bounced"
    assert count(rt, Ticket) == 1


def test_our_own_mail_coming_back_is_a_loop(rt: Runtime) -> None:
    from models.identity import make_message_id

    assert deliver(rt, mail(sender="soporte@jhleasing.mx")).startswith("loop dropped")
    own = make_message_id(77, "jhleasing.mx", rt.settings.secret_key)
    assert deliver(rt, mail(message_id=f"<{own}>")).startswith("loop dropped")
    assert count(rt, Ticket) == 0


def test_a_staff_forward_opens_the_ticket_for_the_original_customer(rt: Runtime) -> None:
    body = (
        "Por favor atiendan a este cliente.\n\n"
        "---------- Forwarded message ---------\n"
        "De: Carlos Ruiz <carlos@transportes.mx>\n"
        "Date: lun, 3 mar 2025 a las 10:12\n"
        "Subject: Falla en el aire acondicionado\n"
        "To: <ejecutivo@jhleasing.mx>\n\n"
        "Buenas tardes, el aire de la unidad ABC-123 no enfría.\n"
    )
    deliver(rt, mail(sender="Laura <ejecutivo@jhleasing.mx>", subject="Fwd: Falla en el aire acondicionado",
                     body=body))
    [ticket] = tickets(rt)
    with rt.transaction() as s:
        t = s.get(Ticket, ticket.id)
        assert t.requester.email == "carlos@transportes.mx"
        assert t.subject == "Falla en el aire acondicionado"
        roles = {(p.contact.email, p.role) for p in s.scalars(select(Participant).where(Participant.ticket_id == t.id))}
        assert ("ejecutivo@jhleasing.mx", "forwarder") in roles
        [msg] = s.scalars(select(Message)).all()
        assert msg.forwarded_by == "ejecutivo@jhleasing.mx" and "no enfría" in msg.text
        [ack] = s.scalars(select(Outbox)).all()
        assert ack.contact_id == t.requester_id


def test_attachments_are_stored_once_by_content(rt: Runtime) -> None:
    pdf = b"%PDF-1.4 cotizacion" * 50
    deliver(rt, mail(attachments=[("../../etc/cotización.pdf", "application/pdf", pdf)]))
    deliver(rt, mail(sender="otro@cliente.mx", subject="Otra", attachments=[("copia.pdf", "application/pdf", pdf)]))
    assert count(rt, Attachment) == 2 and count(rt, Blob) == 1
    with rt.transaction() as s:
        names = sorted(a.filename for a in s.scalars(select(Attachment)))
    assert names == ["copia.pdf", "cotización.pdf"]


def test_unparseable_bytes_are_quarantined_and_can_be_retried(rt: Runtime) -> None:
    from inbound.process import requeue

    outcome = deliver(rt, b"\x00\x01\x02 not a mail at all \xff")
    assert outcome.startswith("quarantined")
    with rt.transaction() as s:
        raw = s.scalar(select(RawMessage))
        assert raw.status == "quarantined" and raw.error
        raw_id = raw.id
    requeue(rt.sessions, raw_id)
    assert Processor(rt.sessions, rt.settings, rt.catalog).process(raw_id).startswith("quarantined")


def test_a_mail_without_message_id_is_still_stored_once(rt: Runtime) -> None:
    raw = b"From: ana@cliente.mx\r\nTo: soporte@jhleasing.mx\r\nSubject: sin id\r\n\r\nHola\r\n"
    deliver(rt, raw)
    deliver(rt, raw)
    assert count(rt, Message) == 1


def test_a_valid_number_that_does_not_exist_is_ignored(rt: Runtime) -> None:
    deliver(rt, mail(subject=f"[JHL#{make_number(55555)}] hola"))
    [ticket] = tickets(rt)
    assert ticket.linked_number is None


def test_the_same_mail_by_two_doors_at_once_is_one_message_and_one_ticket(rt: Runtime) -> None:
    import threading

    mails = [mail(sender=f"u{i}@cliente.mx", subject=f"Solicitud {i}") for i in range(20)]
    smtp_ids = [keep_raw(rt.sessions, source="smtp", data=m) for m in mails]
    imap_ids = [keep_raw(rt.sessions, source="imap", data=m) for m in mails]
    errors: list[BaseException] = []

    def run(ids: list[int]) -> None:
        processor = Processor(rt.sessions, rt.settings, rt.catalog)
        try:
            for raw_id in ids:
                processor.process(raw_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ids,)) for ids in (smtp_ids, imap_ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert count(rt, Message) == 20 and count(rt, Ticket) == 20 and count(rt, Outbox) == 20
    with rt.transaction() as s:
        assert {r.status for r in s.scalars(select(RawMessage))} == {"done"}


def test_one_bad_message_in_a_batch_is_quarantined_alone(rt: Runtime) -> None:
    good1 = keep_raw(rt.sessions, source="smtp", data=mail(sender="a@cliente.mx", subject="Uno"))
    bad = keep_raw(rt.sessions, source="smtp", data=b"Subject: sin remitente\r\n\r\nhola\r\n")
    good2 = keep_raw(rt.sessions, source="smtp", data=mail(sender="b@cliente.mx", subject="Dos"))
    results = Processor(rt.sessions, rt.settings, rt.catalog).process_batch([good1, bad, good2])
    assert results[bad].startswith("quarantined: no sender address")
    assert results[good1].startswith("opened ticket") and results[good2].startswith("opened ticket")
    with rt.transaction() as s:
        statuses = {r.id: r.status for r in s.scalars(select(RawMessage))}
    assert statuses == {good1: "done", bad: "quarantined", good2: "done"}
    assert count(rt, Ticket) == 2 and count(rt, Outbox) == 2
