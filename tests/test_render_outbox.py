"""Every notification the outbox can hold renders through the compose path, on both
channels, with service data (vehicle, provider, appointment, line items) from the
database: a missing template or variable fails here, not at a customer's expense."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest
from sqlalchemy import select

from models.base import utcnow
from models.notify import enqueue
from models.outbox import Outbox
from models.survey import Survey
from models.tickets import find_by_number
from outbound.compose import Notification, load_outbox
from outbound.email import wire_bytes
from outbound.mime import compose_email
from outbound.render import WHATSAPP_LIMIT, Renderer
from tests.outbound_helpers import add_service_data, move, open_email_ticket
from worker.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

NOTE = 'Llevar la tarjeta de circulación <b>original</b> & "copia".'


def render_both(rt: Runtime, renderer: Renderer, outbox_id: int) -> tuple[Notification, str, str, str]:
    """(notification, subject, text part, WhatsApp text) after a round trip through bytes."""
    with rt.engine.connect() as conn:
        note = load_outbox(conn, outbox_id, settings=rt.settings, catalog=rt.catalog)
    rendered = renderer.email(note.for_channel("email"))
    msg = compose_email(note, rendered.subject, rendered.text, rendered.html, company_name="JHLeasing", now=utcnow())
    parsed = BytesParser(policy=policy.default).parsebytes(wire_bytes(msg))
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = parsed.get_body(("html",)).get_content().replace("\r\n", "\n")
    assert parsed["Subject"] == rendered.subject
    assert text == rendered.text and html == rendered.html
    whatsapp = renderer.whatsapp(note.for_channel("whatsapp"))
    assert 0 < len(whatsapp) < WHATSAPP_LIMIT
    return note, parsed["Subject"], text, whatsapp


def test_every_notifying_stage_of_every_pipeline_renders_on_both_channels(rt: Runtime) -> None:
    renderer = Renderer()
    planned: list[tuple[int, int, str]] = []
    for pipeline in rt.catalog.values():
        number = open_email_ticket(rt, pipeline=pipeline.id, email=f"{pipeline.id}@customer.example",
                                   first_message_id=f"{pipeline.id}@mail.example")
        add_service_data(rt, number)
        with rt.transaction() as session:
            ticket = find_by_number(session, number)
            assert ticket is not None and ticket.requester is not None
            for stage in pipeline.stages:
                if stage.notify:
                    row = enqueue(session, ticket=ticket, contact=ticket.requester, template="stage", payload={
                        "pipeline": pipeline.id, "stage": stage.name, "note": NOTE,
                        "previous_stage": pipeline.first.name, "reopened": False,
                    })
                    assert row is not None
                    planned.append((row.id, number, stage.name))
    assert len(planned) == sum(1 for p in rt.catalog.values() for s in p.stages if s.notify)
    for outbox_id, number, stage in planned:
        note, subject, text, whatsapp = render_both(rt, renderer, outbox_id)
        assert f"[JHL#{number}]" in subject, subject
        assert stage in text and str(number) in whatsapp
        assert "Llevar la tarjeta de circulación" in text and "Llevar la tarjeta" in whatsapp
        assert "<b>original</b>" not in renderer.email(note.for_channel("email")).html
        assert note.context.ticket is not None and note.context.ticket.vehicle is not None
        assert len(note.context.ticket.line_items) == 2


def test_every_notice_renders_on_both_channels(rt: Runtime) -> None:
    renderer = Renderer()
    number = open_email_ticket(rt, acknowledge=True, phone="+5215500000001")
    add_service_data(rt, number)
    move(rt, number, "Cerrado")
    move(rt, number, "En servicio", note="Se detectó una falla adicional.")  # a reopen
    other = open_email_ticket(rt, email="ana.lopez@customer.example.org", first_message_id="o@x")
    with rt.transaction() as session:
        ticket = find_by_number(session, number)
        assert ticket is not None and ticket.requester is not None
        contact = ticket.requester
        survey_id = session.scalar(select(Survey.id))
        notices = {
            "reply": {"text": "Ya tenemos la cotización <script>alert(1)</script>.", "by": "ejecutivo@jhleasing.mx"},
            "flagged_new_ticket": {"linked_number": other},
            "joined_ticket": {},
            "survey_thanks": {"score": 2, "survey_id": survey_id},
        }
        ids = {t: enqueue(session, ticket=ticket, contact=contact, template=t, payload=p).id  # type: ignore[union-attr]
               for t, p in notices.items()}
        for template in ("optout_confirm", "optin_confirm"):
            ids[template] = enqueue(session, ticket=None, contact=contact, template=template).id  # type: ignore[union-attr]
        rows = {row.template: row.id for row in session.scalars(select(Outbox).where(
            Outbox.template.in_(("ack", "survey", "stage"))).order_by(Outbox.id))}
    ids.update(rows)  # the acknowledgement, the survey and the last stage move (the reopen)
    for template, outbox_id in ids.items():
        note, subject, text, whatsapp = render_both(rt, renderer, outbox_id)
        if template not in ("optout_confirm", "optin_confirm"):
            assert f"[JHL#{number}]" in subject, (template, subject)
    _, _, reply_text, _ = render_both(rt, renderer, ids["reply"])
    assert "<script>alert(1)</script>" in reply_text  # plain text shows it as written...
    with rt.engine.connect() as conn:
        note = load_outbox(conn, ids["reply"], settings=rt.settings, catalog=rt.catalog)
    assert "<script>" not in renderer.email(note.for_channel("email")).html  # ...HTML escapes it
    _, _, reopened, _ = render_both(rt, renderer, ids["stage"])
    assert "Se detectó una falla adicional." in reopened
    _, _, survey_text, survey_whatsapp = render_both(rt, renderer, ids["survey"])
    assert "/encuesta/" in survey_text and "1 al 5" in survey_whatsapp
