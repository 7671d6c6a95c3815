"""Satisfaction surveys: sent after the delay with confirm links, and counted per pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import select

from config.settings import Settings
from models.base import utcnow
from models.survey import Survey
from outbound.deliver import Deliverer, Outcome
from tests.cli_helpers import helpdesk
from tests.outbound_helpers import build_runtime, delivering, move, open_email_ticket, outbox_rows, running, wait_status
from tests.support import fixtures
from tests.support.smtp_sink import SmtpSink
from worker.cli_outbound import survey_stats
from worker.runtime import Runtime

smtp_sink = fixtures.smtp_sink

pytestmark = pytest.mark.timeout(60)


def close(rt: Runtime, number: int) -> None:
    move(rt, number, "Cerrado")


def test_closing_a_ticket_sends_its_survey_after_the_delay_with_one_confirm_link_per_score(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url, survey_delay_seconds=1,
                       public_url="https://helpdesk.jhleasing.mx")
    deliverer = Deliverer(rt.sessions, rt.settings, rt.catalog)
    try:
        number = open_email_ticket(rt)
        close(rt, number)
        [row] = outbox_rows(rt, "survey")
        assert deliverer.deliver(row.id) == Outcome.SKIPPED  # not due yet: nothing goes early
        with running(rt, redis_namespace, sweep_grace=0):
            wait_status(rt, row.id, "sent")
            mails = smtp_sink.wait_for_mail(2)
        survey_mail = next(m for m in mails if "¿Cómo te atendimos?" in m.message["Subject"])
        with rt.sessions() as session:
            survey = session.scalars(select(Survey)).one()
        text = survey_mail.message.get_body(("plain",)).get_content()
        html = survey_mail.message.get_body(("html",)).get_content()
        for score in range(1, 6):
            link = f"https://helpdesk.jhleasing.mx/encuesta/{survey.token}?score={score}"
            assert link in text and link in html
        assert survey.sent_at is not None and survey.channel == "email"
        assert f"[JHL#{number}]" in survey_mail.message["Subject"]
    finally:
        deliverer.close()
        rt.close()


def test_a_survey_whose_ticket_was_reopened_before_sending_is_cancelled(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink
) -> None:
    with delivering(make_settings, outbound_smtp_url=smtp_sink.url) as (rt, deliverer):
        number = open_email_ticket(rt)
        close(rt, number)
        move(rt, number, "En servicio")  # reopened within the delay
        [row] = outbox_rows(rt, "survey")
        assert deliverer.deliver(row.id) == Outcome.CANCELLED
        [row] = outbox_rows(rt, "survey")
        assert row.status == "cancelled" and "reopened" in (row.last_error or "")


def test_surveys_give_sent_answered_average_and_csat_per_pipeline(
    make_settings: Callable[..., Settings], cli_env: dict[str, str]
) -> None:
    rt = build_runtime(make_settings)
    try:
        scores = [5, 4, 2, None]  # the last one sent, never answered
        for i in range(len(scores)):
            number = open_email_ticket(rt, email=f"c{i}@customer.example", first_message_id=f"s{i}@x")
            close(rt, number)
        gestoria = open_email_ticket(rt, email="g@customer.example", first_message_id="g@x", pipeline="gestorias")
        close(rt, gestoria)
        with rt.transaction() as session:
            surveys = list(session.scalars(select(Survey).order_by(Survey.id)))
            for survey, score in zip(surveys, [*scores, None], strict=True):
                survey.sent_at = utcnow()
                if score is not None:
                    survey.score, survey.answered_at = score, utcnow()
        with rt.sessions() as session:
            stats = survey_stats(session, rt.catalog)
        assert stats["mantenimiento"] == {"sent": 4, "answered": 3, "average": 3.67, "csat": 0.6667}
        assert stats["gestorias"] == {"sent": 1, "answered": 0, "average": None, "csat": None}
        assert stats["seguros"] == {"sent": 0, "answered": 0, "average": None, "csat": None}
        assert list(stats) == list(rt.catalog)
        assert json.loads(helpdesk(cli_env, "surveys", "--json").stdout) == stats
        table = helpdesk(cli_env, "surveys").stdout
        assert "mantenimiento" in table and "66.7%" in table and "3.67" in table
    finally:
        rt.close()
