"""Threading WhatsApp messages onto tickets, in the issue's order, through the real webhook."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from models.base import utcnow
from models.contact import Company, Contact, get_or_create_by_email, get_or_create_by_phone
from models.message import Message
from models.outbox import Outbox
from models.stages import move_stage
from models.survey import Survey
from models.ticket import Ticket
from models.tickets import NewMessage, add_message, open_ticket
from tests.web_helpers import PHONE, WA_FROM, WebApp, new_sid
from worker.runtime import Runtime

STRANGER = "whatsapp:+5218111111111"

pytest_plugins = ["tests.web_fixtures"]


def contact_by_phone(rt: Runtime, phone: str = PHONE, company: str | None = None) -> int:
    from models.phones import normalize_phone

    with rt.transaction() as s:
        contact = get_or_create_by_phone(s, normalize_phone(phone), "Juan Pérez", whatsapp_address=f"whatsapp:{phone}")
        if company:
            firm = Company(name=company)
            s.add(firm)
            s.flush()
            contact.company_id = firm.id
        s.flush()
        return contact.id


def new_ticket(rt: Runtime, contact_id: int, subject: str, *, written_ago: timedelta | None = None,
               pipeline: str = "mantenimiento") -> int:
    with rt.transaction() as s:
        contact = s.get(Contact, contact_id)
        ticket = open_ticket(s, catalog=rt.catalog, settings=rt.settings, pipeline_id=pipeline,
                             requester=contact, subject=subject, acknowledge=False,
                             message=NewMessage(channel="note", text=subject, sender="staff"))
        if written_ago is not None:
            ticket.last_outbound_at = utcnow() - written_ago
        return ticket.number


def ticket_of(rt: Runtime, number: int) -> Ticket:
    with rt.sessions() as s:
        return s.scalars(select(Ticket).where(Ticket.number == number)).one()


def last_message(rt: Runtime) -> tuple[int, str | None]:
    with rt.sessions() as s:
        m = s.scalars(select(Message).where(Message.channel == "whatsapp").order_by(Message.id.desc())).first()
        number = s.scalar(select(Ticket.number).where(Ticket.id == m.ticket_id))
        return number, m.threaded_by


def outbox(rt: Runtime) -> list[Outbox]:
    with rt.sessions() as s:
        return list(s.scalars(select(Outbox).order_by(Outbox.id)))


def test_a_reply_to_our_notification_lands_on_its_ticket(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    first = new_ticket(web.rt, cid, "Cambio de llantas")
    new_ticket(web.rt, cid, "Verificación", written_ago=timedelta(minutes=1))
    with web.rt.transaction() as s:
        t = s.scalars(select(Ticket).where(Ticket.number == first)).one()
        s.add(Outbox(ticket_id=t.id, contact_id=cid, channel="whatsapp", template="stage", payload={},
                     status="sent", provider_id="SMreplied0001"))
    web.send("¿Ya tienen la cotización?", OriginalRepliedMessageSid="SMreplied0001")
    assert last_message(web.rt) == (first, "reply_context")


def test_a_reply_to_a_staff_message_we_sent_lands_on_its_ticket(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    first = new_ticket(web.rt, cid, "Gestoría de placas")
    new_ticket(web.rt, cid, "Otra cosa", written_ago=timedelta(minutes=1))
    with web.rt.transaction() as s:
        t = s.scalars(select(Ticket).where(Ticket.number == first)).one()
        add_message(s, t, None, NewMessage(channel="whatsapp", text="Hola", external_id="SMstaff0001"),
                    direction="out")
    web.send("Gracias", OriginalRepliedMessageSid="SMstaff0001")
    assert last_message(web.rt) == (first, "reply_context")


def test_a_ticket_number_in_the_text_from_a_participant_lands_on_that_ticket(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    quoted = new_ticket(web.rt, cid, "Siniestro")
    new_ticket(web.rt, cid, "Mantenimiento", written_ago=timedelta(minutes=1))
    web.send(f"Sobre el folio {quoted}: ya llegó el ajustador")
    assert last_message(web.rt) == (quoted, "number")


def test_a_contact_of_the_same_company_may_quote_the_number(web: WebApp) -> None:
    owner = contact_by_phone(web.rt, "+5215599999999", company="Transportes del Norte")
    quoted = new_ticket(web.rt, owner, "Servicio 10,000 km")
    with web.rt.transaction() as s:
        colleague = get_or_create_by_phone(s, "+525512345678", "Ana")
        colleague.company_id = s.get(Contact, owner).company_id
    web.send(f"Pregunto por el ticket {quoted}")
    assert last_message(web.rt) == (quoted, "number")


def test_a_stranger_quoting_a_number_gets_a_new_flagged_linked_ticket(web: WebApp) -> None:
    owner = contact_by_phone(web.rt, "+5215599999999")
    quoted = new_ticket(web.rt, owner, "Caso ajeno")
    web.send(f"Quiero saber del ticket #{quoted}", frm=STRANGER)
    number, threaded_by = last_message(web.rt)
    assert number != quoted and threaded_by == "new_flagged"
    ticket = ticket_of(web.rt, number)
    assert ticket.linked_number == quoted and ticket.needs_attention
    assert [(o.template, o.channel) for o in outbox(web.rt)] == [("flagged_new_ticket", "whatsapp")]
    web.send(f"Sigo esperando noticias del ticket #{quoted}", frm=STRANGER)
    assert last_message(web.rt) == (number, "number")  # the same conversation, not another ticket


def test_the_only_open_ticket_takes_the_message(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    only = new_ticket(web.rt, cid, "Revisión de frenos")
    web.send("¿A qué hora paso por la unidad?")
    assert last_message(web.rt) == (only, "single_open")
    assert outbox(web.rt) == []


def test_several_open_tickets_the_last_written_takes_it_and_a_notice_says_so(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    older = new_ticket(web.rt, cid, "Llantas", written_ago=timedelta(days=2))
    written = new_ticket(web.rt, cid, "Frenos", written_ago=timedelta(hours=1))
    newest = new_ticket(web.rt, cid, "Placas")
    web.send("Ya pueden pasar por ella")
    assert last_message(web.rt) == (written, "last_written")
    notices = outbox(web.rt)
    assert [(o.template, o.channel) for o in notices] == [("joined_ticket", "whatsapp")]
    assert notices[0].payload["number"] == written
    assert sorted(notices[0].payload["other_open_numbers"]) == sorted([older, newest])
    web.send("Y también necesito la factura")
    assert last_message(web.rt) == (written, "last_written")
    assert len(outbox(web.rt)) == 1  # at most one notice per ticket per hour


def test_nothing_open_opens_a_new_ticket(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    closed = new_ticket(web.rt, cid, "Viejo")
    with web.rt.transaction() as s:
        t = s.scalars(select(Ticket).where(Ticket.number == closed)).one()
        t.state, t.closed_at = "Cerrado", utcnow() - timedelta(days=40)
    web.send("Necesito otra cita")
    number, threaded_by = last_message(web.rt)
    assert number != closed and threaded_by == "new"


def test_a_reply_to_a_recently_closed_ticket_joins_it_and_flags_it(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    number = new_ticket(web.rt, cid, "Entrega de unidad")
    with web.rt.transaction() as s:
        t = s.scalars(select(Ticket).where(Ticket.number == number)).one()
        t.state, t.closed_at = "Cerrado", utcnow() - timedelta(days=2)
    web.send(f"El ticket {number} sigue con falla")
    assert last_message(web.rt) == (number, "number")
    assert ticket_of(web.rt, number).needs_attention


def test_a_reply_long_after_closing_opens_a_new_ticket_linked_to_the_old_one(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    number = new_ticket(web.rt, cid, "Entrega de unidad")
    with web.rt.transaction() as s:
        t = s.scalars(select(Ticket).where(Ticket.number == number)).one()
        t.state, t.closed_at = "Cerrado", utcnow() - timedelta(days=60)
    web.send(f"El ticket {number} volvió a fallar")
    new, threaded_by = last_message(web.rt)
    assert new != number and threaded_by == "new_linked"
    assert ticket_of(web.rt, new).linked_number == number
    assert [o.template for o in outbox(web.rt)] == ["ack"]
    web.send(f"Les recuerdo lo del ticket {number}")
    assert last_message(web.rt) == (new, "number")


def closed_with_survey(rt: Runtime, contact_id: int) -> tuple[int, int]:
    number = new_ticket(rt, contact_id, "Servicio de 20,000 km")
    with rt.transaction() as s:
        ticket = s.scalars(select(Ticket).where(Ticket.number == number)).one()
        move_stage(s, ticket, "Cerrado", catalog=rt.catalog, settings=rt.settings, by="staff@jhleasing.mx")
        survey = s.scalars(select(Survey).where(Survey.ticket_id == ticket.id)).one()
        survey.sent_at = utcnow()
        return number, survey.id


def test_a_score_after_a_survey_records_it_and_a_comment_joins_it(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    number, survey_id = closed_with_survey(web.rt, cid)
    open_one = new_ticket(web.rt, cid, "Otro asunto abierto")
    before = len(outbox(web.rt))
    web.send("5 estrellas")
    web.send("Muy buena atención del asesor")
    with web.rt.sessions() as s:
        survey = s.get(Survey, survey_id)
        assert (survey.score, survey.channel, survey.comment) == (5, "whatsapp", "Muy buena atención del asesor")
        messages = s.scalars(select(Message).where(Message.channel == "whatsapp").order_by(Message.id))
        threads = [m.threaded_by for m in messages]
        assert threads == ["survey", "survey_comment"]
        assert s.scalar(select(Ticket.state).where(Ticket.number == number)) == "Cerrado"
        assert len(s.scalars(select(Ticket)).all()) == 2
    thanks = outbox(web.rt)[before:]
    assert [(o.template, o.channel, o.payload["score"]) for o in thanks] == [("survey_thanks", "whatsapp", 5)]
    web.send("Por cierto, ¿cómo va lo otro?")  # the comment is taken: back to normal threading
    assert last_message(web.rt) == (open_one, "single_open")


def test_the_quick_reply_payload_and_stars_answer_the_survey(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    _, first = closed_with_survey(web.rt, cid)
    web.send("Excelente", ButtonPayload="survey:4", ButtonText="Excelente")
    with web.rt.sessions() as s:
        assert s.get(Survey, first).score == 4
    other = contact_by_phone(web.rt, "+5215522222222")
    _, second = closed_with_survey(web.rt, other)
    web.send("⭐⭐⭐", frm="whatsapp:+5215522222222")
    with web.rt.sessions() as s:
        assert s.get(Survey, second).score == 3


def test_a_swipe_reply_to_the_survey_message_answers_it(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    number, survey_id = closed_with_survey(web.rt, cid)
    with web.rt.transaction() as s:
        row = s.scalars(select(Outbox).where(Outbox.template == "survey")).one()
        row.provider_id = "SMsurvey0001"
    web.send("2", OriginalRepliedMessageSid="SMsurvey0001")
    with web.rt.sessions() as s:
        assert s.get(Survey, survey_id).score == 2
        assert not s.scalar(select(Ticket.needs_attention).where(Ticket.number == number))


def test_a_score_without_a_pending_survey_is_an_ordinary_message(web: WebApp) -> None:
    cid = contact_by_phone(web.rt)
    only = new_ticket(web.rt, cid, "Abierto")
    web.send("5")
    assert last_message(web.rt) == (only, "single_open")


def test_an_email_contact_writing_on_whatsapp_is_acknowledged_on_whatsapp(web: WebApp) -> None:
    with web.rt.transaction() as s:
        contact = get_or_create_by_email(s, "juan@transportes.mx", "Juan")
        contact.phone = "+525512345678"
    web.send("Hola, soy Juan, les escribo por WhatsApp", sid=new_sid())
    assert [(o.template, o.channel) for o in outbox(web.rt)] == [("ack", "whatsapp")]
    with web.rt.sessions() as s:
        assert s.scalars(select(Contact)).one().whatsapp_address == WA_FROM
