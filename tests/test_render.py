"""Every notification renders, on both channels, for every audience, with full and with
minimal data; texts say what the seeds require; nothing from the data is evaluated."""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from config.pipelines import load_catalog
from outbound.context import (
    LineItemView,
    NotificationContext,
    PersonView,
    ProviderView,
    RecipientView,
    SurveyView,
    TicketRef,
    TicketView,
    VehicleView,
)
from outbound.render import (
    CONTACT_KEYS,
    LAYOUTS,
    NOTICE_KEYS,
    SUBJECT_TEMPLATE,
    WHATSAPP_LIMIT,
    MissingTemplate,
    Renderer,
    iter_template_files,
    referenced_templates,
    stage_slug,
    stage_template_key,
    template_file,
    template_keys,
)

ROOT = Path(__file__).resolve().parent.parent
CATALOG = load_catalog(ROOT / "config" / "pipelines.yaml")
HOSTILE = "<script>alert('x')</script> {{ 7*7 }} {% if true %}IF{% endif %} & Cía"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _stages() -> list[tuple[str, str, str]]:
    return [
        (pid, stage.name, audience)
        for pid, pipeline in CATALOG.items()
        for stage in pipeline.stages
        if stage.notify
        for audience in stage.audience
    ]


def _items(n: int, long: bool = False) -> list[LineItemView]:
    word = "Reemplazo de balatas delanteras y rectificación de discos " * (3 if long else 1)
    return [
        LineItemView(
            kind="servicio" if i % 2 else "refacción",
            description=f"{word.strip()} #{i + 1}",
            quantity=Decimal(2),
            unit_price=Decimal("617.25"),
            amount=Decimal("1234.50"),
        )
        for i in range(n)
    ]


def _ticket(
    pid: str = "mantenimiento",
    stage: str = "Abierto",
    *,
    full: bool = True,
    items: int = 3,
    long: bool = False,
    subject: str = "Servicio preventivo",
) -> TicketView:
    pipeline = CATALOG[pid]
    st = pipeline.stage(stage)
    extra = {}
    if full:
        name_tail = " Servicio Integral Automotriz del Centro" * (4 if long else 0)
        extra = dict(
            vehicle=VehicleView(vin="3N1CN8AE0NL123456", plate="ABC-123-D", make="Nissan", model="Versa", year=2022),
            provider=ProviderView(
                name="Taller Hermanos Ruiz & Asociados" + name_tail,
                address="Av. Insurgentes Sur 1234, Col. Del Valle, Benito Juárez, CDMX"
                + (", entre calles Amores y Adolfo Prieto, a un costado del parque" * 4 if long else ""),
                phone="55 1234 5678",
            ),
            appointment_at=datetime(2025, 3, 3, 16, 30, tzinfo=UTC),
            expected_end_at=datetime(2025, 3, 7, 23, 0, tzinfo=UTC),
            line_items=_items(items, long),
            total=Decimal("1234.50") * items,
            mileage=45230,
            account_executive=PersonView(name="Laura Méndez", email="laura.mendez@jhleasing.mx", phone="55 8765 4321"),
        )
    return TicketView(
        number=104231,
        tag="[JHL#104231]",
        subject=subject,
        pipeline_id=pid,
        pipeline_label=pipeline.label,
        stage=st.name,
        stage_description=st.description,
        state=st.state,
        portal_status=st.portal_status(),
        kind="service" if pid == "servicio" else "attention",
        opened_at=datetime(2025, 3, 1, 15, 0, tzinfo=UTC),
        **extra,
    )


def _ctx(
    key: str, ticket: TicketView | None, audience: str = "requester", channel: str = "email", **kw: object
) -> NotificationContext:
    values: dict[str, object] = dict(
        template=key,
        ticket=ticket,
        recipient=RecipientView(name="Ana López", role=audience, channel=channel),
        reply_address="soporte@jhleasing.mx",
        public_url="https://helpdesk.jhleasing.mx",
    )
    values.update(kw)
    return NotificationContext(**values)


def _survey() -> SurveyView:
    return SurveyView(
        token="tok",
        urls={s: f"https://helpdesk.jhleasing.mx/encuesta/tok?score={s}&x=1" for s in range(1, 6)},
        expires_at=datetime(2025, 4, 1, 5, 0, tzinfo=UTC),
    )


def _notice_ctx(key: str, ticket: TicketView | None, **kw: object) -> NotificationContext:
    extra: dict[str, object] = {
        "reply": {"staff_text": "Hola Ana,\nya revisamos tu caso."},
        "survey": {"survey": _survey()},
        "survey_thanks": {"score": 2},
        "joined_ticket": {"other_open_tickets": [TicketRef(number=104236, subject="Llantas")]},
        "flagged_new_ticket": {"quoted_number": 104249},
    }.get(key, {})
    extra.update(kw)
    return _ctx(key, None if key in CONTACT_KEYS else ticket, **extra)


def _check_email(mail, ticket: TicketView | None) -> None:
    assert "\n" not in mail.subject and mail.subject == mail.subject.strip()
    if ticket is not None:
        assert mail.subject.startswith(ticket.tag)
    assert "&lt;" not in mail.text and "&amp;" not in mail.text and "&#" not in mail.text
    assert "<p" not in mail.text and "<table" not in mail.text
    assert mail.html.lstrip().startswith("<!DOCTYPE html>")
    assert mail.html.rstrip().endswith("</html>")
    assert "None" not in mail.text and "None" not in mail.html


# -- every key renders ------------------------------------------------------------------


@pytest.mark.parametrize(("pid", "stage", "audience"), _stages())
@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
def test_every_notifying_stage_renders_on_both_channels(renderer, pid, stage, audience, full):
    key = stage_template_key(pid, stage)
    assert renderer.has_template(key), key
    ticket = _ticket(pid, stage, full=full, items=3 if full else 0)
    for note in (None, "Por favor trae la tarjeta de circulación."):
        ctx = _ctx(key, ticket, audience, note=note)
        mail = renderer.email(ctx)
        _check_email(mail, ticket)
        assert ticket.tag in mail.text  # the footer tells how to reply
        wa = renderer.whatsapp(replace(ctx, recipient=replace(ctx.recipient, channel="whatsapp")))
        assert len(wa) < WHATSAPP_LIMIT
        assert ticket.tag in wa
        if note:
            assert note in mail.text and note in mail.html and note in wa


@pytest.mark.parametrize("key", NOTICE_KEYS)
@pytest.mark.parametrize("full", [True, False], ids=["full", "minimal"])
def test_every_notice_renders_on_both_channels(renderer, key, full):
    ticket = _ticket(full=full, items=3 if full else 0)
    ctx = _notice_ctx(key, ticket)
    _check_email(renderer.email(ctx), ctx.ticket)
    assert len(renderer.whatsapp(ctx)) < WHATSAPP_LIMIT


@pytest.mark.parametrize(("pid", "stage", "audience"), _stages())
def test_a_reopen_says_so(renderer, pid, stage, audience):
    ctx = _ctx(stage_template_key(pid, stage), _ticket(pid, stage), audience, reopened=True, previous_stage="Cerrado")
    mail = renderer.email(ctx)
    assert "Reabierto" in mail.subject
    assert "reabrimos el ticket" in mail.text and "“Cerrado”" in mail.text
    assert "reabrimos el ticket" in renderer.whatsapp(ctx)


# -- WhatsApp size ------------------------------------------------------------------------


@pytest.mark.parametrize(("pid", "stage", "audience"), _stages())
def test_whatsapp_stays_under_the_limit_with_30_items_and_long_names(renderer, pid, stage, audience):
    ticket = _ticket(pid, stage, items=30, long=True, subject="Solicitud " * 60)
    ctx = _ctx(
        stage_template_key(pid, stage),
        ticket,
        audience,
        channel="whatsapp",
        note="Nota muy larga del equipo. " * 80,
        reopened=True,
        previous_stage="Cerrado",
    )
    ctx = replace(ctx, recipient=replace(ctx.recipient, name="Ana " * 50))
    assert len(renderer.whatsapp(ctx)) < WHATSAPP_LIMIT


def test_whatsapp_quote_truncates_items_with_a_count(renderer):
    ticket = _ticket("mantenimiento", "Enviado a cliente", items=30, long=True)
    ctx = _ctx(stage_template_key("mantenimiento", "Enviado a cliente"), ticket, "fleet_manager")
    wa = renderer.whatsapp(ctx)
    assert len(wa) < WHATSAPP_LIMIT
    shown = wa.count("• Reemplazo")
    assert 0 < shown < 30
    assert f"y {30 - shown} conceptos más" in wa
    assert "$37,035.00" in wa  # the total is always there


def test_a_huge_staff_reply_is_clipped_on_whatsapp_but_whole_by_email(renderer):
    text = "Detalle del diagnóstico. " * 200
    ctx = _notice_ctx("reply", _ticket(), staff_text=text)
    assert len(renderer.whatsapp(ctx)) < WHATSAPP_LIMIT
    assert text.strip() in renderer.email(ctx).text


# -- content the seeds require -------------------------------------------------------------

FIVE_REMINDERS = (
    "No realices ningún pago",
    "la factura es a nombre de JHLeasing",
    "No aceptes ningún servicio adicional",
    "Revisa bien el vehículo",
    "Ante cualquier duda, contacta a tu Ejecutivo de Cuenta de JHLeasing",
)


@pytest.mark.parametrize(("pid", "stage"), [("mantenimiento", "Entrega vehículo"), ("servicio", "Pagado")])
@pytest.mark.parametrize("full", [True, False])
def test_pickup_carries_the_five_reminders(renderer, pid, stage, full):
    ticket = _ticket(pid, stage, full=full)
    ctx = _ctx(stage_template_key(pid, stage), ticket)
    mail = renderer.email(ctx)
    wa = renderer.whatsapp(replace(ctx, recipient=replace(ctx.recipient, channel="whatsapp")))
    for reminder in FIVE_REMINDERS:
        assert reminder in mail.text
        assert reminder in htmllib.unescape(mail.html)
        assert reminder in wa
    assert mail.html.count("<li") == 5
    if full:
        assert "Av. Insurgentes Sur 1234" in mail.text and "Laura Méndez" in mail.text


@pytest.mark.parametrize("pid", ["mantenimiento", "servicio"])
def test_quote_to_the_fleet_manager_lists_every_item_and_the_total(renderer, pid):
    ticket = _ticket(pid, "Enviado a cliente", items=12)
    mail = renderer.email(_ctx(stage_template_key(pid, "Enviado a cliente"), ticket, "fleet_manager"))
    for i in range(1, 13):
        assert f"#{i} (" in mail.text
        assert f"#{i}<br>" in mail.html
    assert mail.text.count("$1,234.50") == 12 and mail.html.count("$1,234.50") == 12
    assert "$14,814.00" in mail.text and "$14,814.00" in mail.html
    assert "$617.25" in mail.text and "refacción" in mail.text and "servicio" in mail.text
    assert "apruebas" in mail.text and "rechazas" in mail.text


def test_quote_to_the_requester_says_it_went_to_the_fleet_manager(renderer):
    ticket = _ticket("mantenimiento", "Enviado a cliente")
    mail = renderer.email(_ctx(stage_template_key("mantenimiento", "Enviado a cliente"), ticket, "requester"))
    assert "responsable de la flota" in mail.text
    assert "$1,234.50" not in mail.text


def test_warranty_says_items_are_billed_at_zero(renderer):
    ticket = replace(_ticket("mantenimiento", "Enviado a cliente"), warranty=True)
    mail = renderer.email(_ctx(stage_template_key("mantenimiento", "Enviado a cliente"), ticket, "fleet_manager"))
    assert "garantía" in mail.text and "$0.00" in mail.text


@pytest.mark.parametrize("pid", list(CATALOG))
def test_the_first_notification_gives_the_number_and_how_to_reply(renderer, pid):
    stage = next(s for s in CATALOG[pid].stages if s.notify)
    ticket = _ticket(pid, stage.name)
    ctx = _ctx(stage_template_key(pid, stage.name), ticket)
    mail = renderer.email(ctx)
    assert "104231" in mail.text and "[JHL#104231]" in mail.text
    assert "responde a este correo sin modificar el asunto" in mail.text
    assert "no enviar correos nuevos sobre este mismo caso" in mail.text
    wa = renderer.whatsapp(replace(ctx, recipient=replace(ctx.recipient, channel="whatsapp")))
    assert "104231" in wa and "responde en este mismo chat" in wa
    assert "no iniciar conversaciones ni enviar correos nuevos" in wa


def test_appointment_shows_provider_address_date_and_time(renderer):
    ticket = _ticket("mantenimiento", "Cita agendada")
    text = renderer.email(_ctx(stage_template_key("mantenimiento", "Cita agendada"), ticket)).text
    assert "Taller Hermanos Ruiz & Asociados" in text
    assert "Av. Insurgentes Sur 1234" in text
    assert "lunes 3 de marzo de 2025" in text and "10:30 a.m." in text
    assert "puntualmente" in text


def test_dates_follow_the_recipient_time_zone(renderer):
    ticket = _ticket("mantenimiento", "Cita agendada")
    ctx = _ctx(stage_template_key("mantenimiento", "Cita agendada"), ticket)
    ctx = replace(ctx, recipient=replace(ctx.recipient, timezone="America/Tijuana"))
    assert "8:30 a.m." in renderer.email(ctx).text


def test_cancelled_tells_to_pick_up_the_vehicle_and_talk_to_the_fleet_manager(renderer):
    ticket = _ticket("mantenimiento", "Cancelado")
    text = renderer.email(_ctx(stage_template_key("mantenimiento", "Cancelado"), ticket)).text
    assert "no se realizará" in text and "pasar por tu vehículo" in text
    assert "responsable de la flota" in text


def test_in_service_gives_the_expected_end_date(renderer):
    ticket = _ticket("mantenimiento", "En servicio")
    text = renderer.email(_ctx(stage_template_key("mantenimiento", "En servicio"), ticket)).text
    assert "viernes 7 de marzo de 2025" in text and "retraso" in text


def test_survey_email_has_five_distinct_links_and_whatsapp_asks_for_a_number(renderer):
    ctx = _notice_ctx("survey", _ticket())
    mail = renderer.email(ctx)
    hrefs = re.findall(r'href="([^"]+)"', mail.html)
    assert len(hrefs) == 5 and len(set(hrefs)) == 5
    assert all("&amp;x=1" in h for h in hrefs)  # attribute values are escaped
    links = re.findall(r"https://\S+", mail.text)
    assert len(set(links)) == 5
    assert (
        "responde con un número del 1 al 5"
        in renderer.whatsapp(replace(ctx, recipient=replace(ctx.recipient, channel="whatsapp"))).lower()
    )


def test_optout_and_optin_work_without_a_ticket(renderer):
    wa = renderer.whatsapp(_notice_ctx("optout_confirm", None))
    assert "ya no recibirás mensajes" in wa and "ALTA" in wa and "correo" in wa
    assert "BAJA" in renderer.whatsapp(_notice_ctx("optin_confirm", None))


def test_joined_ticket_names_the_ticket_and_the_other_open_ones(renderer):
    wa = renderer.whatsapp(_notice_ctx("joined_ticket", _ticket()))
    assert "104231" in wa and "104236" in wa and "su número" in wa


# -- safety: data is data ----------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["stage/mantenimiento/enviado_a_cliente", "reply", "stage/gestorias/esperando_informacion_cliente"]
)
def test_hostile_data_is_escaped_in_html_and_never_evaluated(renderer, key):
    ticket = replace(
        _ticket("mantenimiento", "Enviado a cliente", subject=HOSTILE),
        line_items=_items(1)
        + [
            LineItemView(
                kind="servicio", description=HOSTILE, quantity=Decimal(1), unit_price=Decimal(1), amount=Decimal(1)
            )
        ],
    )
    ctx = _ctx(
        key,
        ticket,
        "fleet_manager",
        note=HOSTILE,
        staff_text=HOSTILE,
        recipient=RecipientView(name=HOSTILE, role="fleet_manager"),
    )
    mail = renderer.email(ctx)
    assert "<script>" not in mail.html
    assert "&lt;script&gt;" in mail.html
    for out in (mail.subject, mail.text, mail.html, renderer.whatsapp(ctx)):
        assert "49" not in out.replace("104231", "")
        assert "{{ 7*7 }}" in out
        assert "IF{%" in out or "{% if true %}" in out
    assert "<script>alert('x')</script>" in mail.text  # plain text is not escaped
    assert "<script>" in mail.subject and "&lt;" not in mail.subject


def test_newlines_in_the_subject_data_stay_on_one_line(renderer):
    ctx = _ctx("stage/mantenimiento/abierto", _ticket(subject="Línea 1\r\nBcc: x@evil.test"))
    subject = renderer.email(ctx).subject
    assert "\n" not in subject and "\r" not in subject
    assert subject.startswith("[JHL#104231] Recibimos tu solicitud - Línea 1 Bcc:")


def test_money_is_mexican_pesos(renderer):
    ticket = _ticket("servicio", "Facturado", items=1)
    mail = renderer.email(_ctx("stage/servicio/facturado", ticket, "fleet_manager"))
    assert "$1,234.50" in mail.text and "$617.25" in mail.html


# -- the key space and the files -----------------------------------------------------------


def test_stage_slug():
    assert stage_slug("Entrega vehículo") == "entrega_vehiculo"
    assert stage_slug("Facturación / entrega") == "facturacion_entrega"
    assert stage_slug("Esperando información cliente") == "esperando_informacion_cliente"
    assert stage_slug("  Saldo Insoluto ") == "saldo_insoluto"
    assert stage_template_key("gestorias", "Trámite ingresado") == "stage/gestorias/tramite_ingresado"


def test_every_key_maps_to_a_file_and_no_file_is_orphaned(renderer):
    keys = template_keys(CATALOG)
    files = {template_file(k) for k in keys}
    for key in keys:
        assert renderer.has_template(key), f"missing templates/{template_file(key)}"
    roots = files | set(LAYOUTS.values()) | {SUBJECT_TEMPLATE}
    reachable = referenced_templates(renderer, roots)
    orphans = set(iter_template_files()) - reachable
    assert not orphans, f"templates not reachable from any key: {sorted(orphans)}"
    stage_files = {f for f in iter_template_files() if f.startswith("stage/")}
    assert stage_files <= files, f"stage files for no notifying stage: {stage_files - files}"


def test_every_message_file_has_a_subject_and_a_body(renderer):
    for key in template_keys(CATALOG):
        template = renderer.env.get_template("text:" + template_file(key))
        assert {"subject", "body"} <= set(template.blocks), key


def test_unknown_or_malicious_keys_are_refused(renderer):
    assert not renderer.has_template("stage/mantenimiento/no_existe")
    assert not renderer.has_template("../pyproject")
    with pytest.raises(MissingTemplate):
        renderer.email(_ctx("../../etc/passwd", _ticket()))
    with pytest.raises(MissingTemplate):
        renderer.whatsapp(_ctx("stage/mantenimiento/no_existe", _ticket()))


def test_a_ticket_message_without_a_ticket_is_refused(renderer):
    with pytest.raises(ValueError, match="needs a ticket"):
        renderer.email(_ctx("stage/mantenimiento/abierto", None))
    with pytest.raises(ValueError, match="needs survey"):
        renderer.email(_ctx("survey", _ticket()))


def test_a_misspelt_variable_fails_instead_of_printing_nothing(tmp_path):
    for name in ("layouts", "parts"):
        (tmp_path / name).symlink_to(ROOT / "templates" / name)
    (tmp_path / "subject.j2").symlink_to(ROOT / "templates" / "subject.j2")
    (tmp_path / "reply.j2").write_text(
        "{% extends layout %}{% block subject %}x{% endblock %}{% block body %}{{ ticket.numbr }}{% endblock %}\n",
        encoding="utf-8",
    )
    broken = Renderer(tmp_path)
    with pytest.raises(UndefinedError):
        broken.email(_notice_ctx("reply", _ticket()))
    with pytest.raises(UndefinedError):
        broken.whatsapp(_notice_ctx("reply", _ticket()))
