"""Opening tickets and moving them through stages, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from config.pipelines import UnknownStage
from models.contact import Company, Contact, ContactEmail, get_or_create_by_email, get_or_create_by_phone
from models.numbers import is_valid
from models.outbox import Outbox
from models.stages import SameStage, move_stage
from models.survey import Survey
from models.ticket import LineItem, StageHistory, Ticket
from models.tickets import NewMessage, open_ticket, subject_key
from worker.runtime import Runtime


def _open(rt: Runtime, session, email: str = "ana@cliente.mx", pipeline: str = "mantenimiento", **kw) -> Ticket:
    contact = get_or_create_by_email(session, email, "Ana Pérez")
    return open_ticket(
        session, catalog=rt.catalog, settings=rt.settings, pipeline_id=pipeline, requester=contact,
        subject="Servicio preventivo", message=NewMessage(channel="email", text="Necesito servicio"), **kw,
    )


def test_a_new_ticket_starts_in_the_first_stage_with_a_valid_number_and_an_ack(rt: Runtime) -> None:
    with rt.transaction() as s:
        ticket = _open(rt, s)
        number = ticket.number
    with rt.transaction() as s:
        ticket = s.scalar(select(Ticket).where(Ticket.number == number))
        assert is_valid(number)
        assert (ticket.stage, ticket.state, ticket.portal_status) == ("Abierto", "Abierto", "Abierto-Abierto")
        [row] = s.scalars(select(Outbox)).all()
        assert (row.template, row.channel, row.status, row.payload["stage"]) == ("ack", "email", "pending", "Abierto")
        assert [p.role for p in ticket.participants] == ["requester"]


def test_moving_a_stage_records_history_and_writes_its_notification(rt: Runtime) -> None:
    with rt.transaction() as s:
        ticket = _open(rt, s, acknowledge=False)
        move_stage(s, ticket, "cita agendada", catalog=rt.catalog, settings=rt.settings,
                   by="ejecutivo@jhleasing.mx", note="Taller Norte, lunes 10:00")
    with rt.transaction() as s:
        ticket = s.scalar(select(Ticket))
        assert ticket.portal_status == "Abierto-Cita agendada"
        [h] = ticket.history
        assert (h.from_stage, h.to_stage, h.by, h.note, h.reopen) == (
            "Abierto", "Cita agendada", "ejecutivo@jhleasing.mx", "Taller Norte, lunes 10:00", False)
        [row] = s.scalars(select(Outbox)).all()
        assert row.template == "stage" and row.payload["stage"] == "Cita agendada"
        assert row.payload["note"] == "Taller Norte, lunes 10:00"


def test_a_stage_that_does_not_notify_writes_no_outbox_row(rt: Runtime) -> None:
    with rt.transaction() as s:
        ticket = _open(rt, s, pipeline="gestorias", acknowledge=False)
        move_stage(s, ticket, "Integración expediente", catalog=rt.catalog, settings=rt.settings)
        assert s.scalar(select(func.count(Outbox.id))) == 0


def test_an_unknown_stage_is_refused_with_the_valid_ones_and_nothing_changes(rt: Runtime) -> None:
    with rt.transaction() as s:
        tid = _open(rt, s, acknowledge=False).id
    with pytest.raises(UnknownStage, match="valid stages: Abierto, Cita agendada"), rt.transaction() as s:
        move_stage(s, s.get(Ticket, tid), "Valuación aseguradora", catalog=rt.catalog, settings=rt.settings)
    with rt.transaction() as s:
        assert s.get(Ticket, tid).stage == "Abierto"
        assert s.scalar(select(func.count(StageHistory.id))) == 0


def test_moving_to_the_current_stage_is_refused(rt: Runtime) -> None:
    with rt.transaction() as s:
        ticket = _open(rt, s)
        with pytest.raises(SameStage):
            move_stage(s, ticket, "Abierto", catalog=rt.catalog, settings=rt.settings)


def test_closing_sends_a_survey_once_and_leaving_a_terminal_stage_is_a_reopen(rt: Runtime) -> None:
    with rt.transaction() as s:
        ticket = _open(rt, s, acknowledge=False)
        move_stage(s, ticket, "Cerrado", catalog=rt.catalog, settings=rt.settings)
        assert ticket.state == "Cerrado" and ticket.closed_at is not None
        entry = move_stage(s, ticket, "En servicio", catalog=rt.catalog, settings=rt.settings, by="ae@jhleasing.mx")
        assert entry.reopen and ticket.state == "Abierto" and ticket.closed_at is None
        move_stage(s, ticket, "Cerrado", catalog=rt.catalog, settings=rt.settings)
    with rt.transaction() as s:
        surveys = s.scalars(select(Survey)).all()
        assert len(surveys) == 2 and len({x.token for x in surveys}) == 2
        templates = [r.template for r in s.scalars(select(Outbox).order_by(Outbox.id))]
        assert templates == ["stage", "survey", "stage", "stage", "survey"]
        reopen = s.scalars(select(Outbox).where(Outbox.template == "stage")).all()[1]
        assert reopen.payload["reopened"] is True


def test_the_quote_goes_to_the_fleet_manager_and_the_requester(rt: Runtime) -> None:
    with rt.transaction() as s:
        company = Company(name="Transportes del Bajío", mail_domain="bajio.mx")
        s.add(company)
        s.flush()
        manager = Contact(name="Luis Flota", role="fleet_manager", company_id=company.id)
        manager.emails.append(ContactEmail(email="flota@bajio.mx"))
        s.add(manager)
        s.flush()
        ticket = _open(rt, s, email="chofer@bajio.mx", acknowledge=False)
        assert ticket.company_id == company.id
        ticket.line_items.append(LineItem(kind="part", description="Balatas", quantity=Decimal(2),
                                          unit_price=Decimal("850.50")))
        move_stage(s, ticket, "Enviado a cliente", catalog=rt.catalog, settings=rt.settings)
        rows = s.scalars(select(Outbox).order_by(Outbox.id)).all()
        assert [(r.audience, r.contact_id) for r in rows] == [("fleet_manager", manager.id),
                                                              ("requester", ticket.requester_id)]
        assert ticket.total == Decimal("1701.00")
        ticket.warranty = True
        assert ticket.total == Decimal("0.00")


def test_the_preferred_channel_is_used_and_the_other_when_it_is_impossible(rt: Runtime) -> None:
    with rt.transaction() as s:
        contact = get_or_create_by_phone(s, "+525512345678", "Beto")
        ticket = open_ticket(s, catalog=rt.catalog, settings=rt.settings, pipeline_id="tecnologia",
                             requester=contact, subject="No entra al portal")
        contact.emails.append(ContactEmail(email="beto@cliente.mx"))
        contact.whatsapp_opt_out = True
        move_stage(s, ticket, "En proceso", catalog=rt.catalog, settings=rt.settings)
        assert [r.channel for r in s.scalars(select(Outbox).order_by(Outbox.id))] == ["whatsapp", "email"]


def test_acknowledgements_are_capped_per_sender_per_hour(make_settings) -> None:
    rt = Runtime.build(make_settings(ack_limit_per_hour=2))
    try:
        with rt.transaction() as s:
            for _ in range(4):
                _open(rt, s)
            assert s.scalar(select(func.count(Outbox.id))) == 2
            assert s.scalar(select(func.count(Ticket.id))) == 4
    finally:
        rt.close()


def test_subject_key_ignores_prefixes_tags_case_and_accents() -> None:
    assert subject_key("RE: Rv: [JHL#104231] Cotización  Balatas") == "cotizacion balatas"
    assert subject_key("Fwd: cotizacion balatas") == "cotizacion balatas"


def test_concurrent_creation_gets_distinct_numbers(rt: Runtime) -> None:
    numbers: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            for j in range(25):
                with rt.transaction() as s:
                    t = _open(rt, s, email=f"user{i}-{j}@cliente.mx", acknowledge=False)
                    n = t.number
                with lock:
                    numbers.append(n)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:1]
    assert len(numbers) == 200 and len(set(numbers)) == 200
    assert all(is_valid(n) for n in numbers)
