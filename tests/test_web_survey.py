"""The survey page: a GET shows (and records nothing), a POST records once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from models.base import utcnow
from models.contact import get_or_create_by_email
from models.stages import move_stage
from models.survey import Survey
from models.ticket import Ticket
from models.tickets import open_ticket
from tests.web_helpers import WebApp

pytest_plugins = ["tests.web_fixtures"]


def survey_for(web: WebApp, subject: str = "Servicio <b>urgente</b>") -> tuple[str, int]:
    with web.rt.transaction() as s:
        contact = get_or_create_by_email(s, "juan@transportes.mx", "Juan")
        ticket = open_ticket(s, catalog=web.rt.catalog, settings=web.rt.settings, pipeline_id="mantenimiento",
                             requester=contact, subject=subject, acknowledge=False)
        move_stage(s, ticket, "Cerrado", catalog=web.rt.catalog, settings=web.rt.settings)
        survey = s.scalars(select(Survey).where(Survey.ticket_id == ticket.id)).one()
        survey.sent_at = utcnow()
        return survey.token, ticket.number


def stored(web: WebApp, token: str) -> Survey:
    with web.rt.sessions() as s:
        return s.scalars(select(Survey).where(Survey.token == token)).one()


def test_the_page_shows_the_ticket_and_preselects_the_score_without_recording(web: WebApp) -> None:
    token, number = survey_for(web)
    for _ in range(3):  # a mail scanner opening every link
        page = web.http.get(f"/encuesta/{token}", params={"score": 4})
        assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<html lang=\"es\">" in page.text and str(number) in page.text
    assert 'value="4" required checked' in page.text and 'value="5" required>' in page.text
    assert "¿Cómo te atendimos?" in page.text and "<textarea" in page.text
    assert "http" not in page.text.split("<footer>")[0].split("<body>")[1]  # no external assets or links
    assert page.headers["referrer-policy"] == "no-referrer"
    assert stored(web, token).answered_at is None


def test_a_post_records_once_and_a_second_post_says_it_was_already_recorded(web: WebApp) -> None:
    token, number = survey_for(web)
    first = web.http.post(f"/encuesta/{token}", data={"score": "2", "comment": "Tardaron <mucho> & más"})
    assert first.status_code == 200 and "Registramos tu calificación de <strong>2 de 5</strong>" in first.text
    second = web.http.post(f"/encuesta/{token}", data={"score": "5", "comment": "cambio de opinión"})
    assert second.status_code == 200 and "Ya registramos tu respuesta" in second.text
    survey = stored(web, token)
    assert (survey.score, survey.comment, survey.channel) == (2, "Tardaron <mucho> & más", "web")
    again = web.http.get(f"/encuesta/{token}")
    assert "Ya registramos tu respuesta" in again.text and "2 de 5" in again.text


def test_a_post_without_a_score_shows_the_form_again(web: WebApp) -> None:
    token, _ = survey_for(web)
    page = web.http.post(f"/encuesta/{token}", data={"comment": "sin calificación"})
    assert page.status_code == 400 and "Elige una calificación" in page.text
    assert stored(web, token).answered_at is None


def test_unknown_and_expired_surveys_get_a_friendly_spanish_page(web: WebApp) -> None:
    unknown = web.http.get("/encuesta/no-existe")
    assert unknown.status_code == 404 and "No encontramos esta encuesta" in unknown.text
    assert web.http.post("/encuesta/no-existe", data={"score": "5"}).status_code == 404
    token, _ = survey_for(web)
    with web.rt.transaction() as s:
        s.scalars(select(Survey).where(Survey.token == token)).one().expires_at = utcnow() - timedelta(days=1)
    for response in (web.http.get(f"/encuesta/{token}"), web.http.post(f"/encuesta/{token}", data={"score": "5"})):
        assert response.status_code == 410 and "ya no está disponible" in response.text
    assert stored(web, token).answered_at is None


def test_ticket_data_on_the_page_is_escaped(web: WebApp) -> None:
    token, _ = survey_for(web, subject="<script>alert(1)</script>")
    page = web.http.get(f"/encuesta/{token}")
    assert "<script>" not in page.text
    with web.rt.sessions() as s:
        assert s.scalars(select(Ticket)).one().subject == "<script>alert(1)</script>"
