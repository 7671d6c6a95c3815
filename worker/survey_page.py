"""The satisfaction survey's web page: find a survey by its token, show it, record once.

A GET only shows the page (mail scanners open every link in a message, so a visit must
never answer for the customer); the POST records score and comment with one conditional
UPDATE (``answered_at IS NULL``), so a double submit or a WhatsApp answer at the same
moment records once. Pages are Spanish, every value is escaped, the CSS is inline and
nothing is loaded from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import quote

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.base import utcnow
from models.survey import Survey
from models.ticket import Ticket

LABELS = {1: "Muy insatisfecho", 2: "Insatisfecho", 3: "Regular", 4: "Satisfecho", 5: "Muy satisfecho"}
MAX_COMMENT = 2000


@dataclass(frozen=True)
class SurveyState:
    """What the page needs to know about one survey, read in a short transaction."""

    token: str
    ticket_number: int
    score: int | None
    answered: bool
    expired: bool


def find_survey(session: Session, token: str, now: datetime | None = None) -> SurveyState | None:
    now = now or utcnow()
    row = session.execute(
        select(Survey, Ticket.number).join(Ticket, Ticket.id == Survey.ticket_id).where(Survey.token == token)
    ).first()
    if row is None:
        return None
    survey, number = row
    return SurveyState(token=survey.token, ticket_number=number, score=survey.score,
                       answered=survey.answered_at is not None, expired=survey.expires_at <= now)


def record_answer(session: Session, token: str, score: int, comment: str | None) -> bool:
    """Record a web answer; False when it was already answered or has expired."""
    now = utcnow()
    result = session.execute(
        update(Survey)
        .where(Survey.token == token, Survey.answered_at.is_(None), Survey.expires_at > now)
        .values(score=score, comment=(comment or "").strip()[:MAX_COMMENT] or None,
                answered_at=now, channel="web")
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


_STYLE = """
body{margin:0;background:#f3f4f6;font-family:Arial,Helvetica,sans-serif;color:#1f2937}
main{max-width:560px;margin:32px auto;background:#fff;border-radius:8px;padding:24px 28px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:22px;color:#0b3b60;margin:0 0 12px}
p{line-height:1.5}
fieldset{border:0;padding:0;margin:16px 0}
legend{font-weight:bold;margin-bottom:8px}
label.score{display:block;padding:8px 10px;margin:4px 0;border:1px solid #d1d5db;border-radius:6px}
textarea{width:100%;box-sizing:border-box;min-height:96px;font:inherit;padding:8px}
button{background:#0b3b60;color:#fff;border:0;border-radius:6px;padding:10px 20px;font-size:16px}
.error{color:#b91c1c;font-weight:bold}
footer{margin-top:20px;font-size:12px;color:#6b7280}
""".strip()


def page(title: str, body_html: str, company: str) -> str:
    """A whole HTML document; ``body_html`` must already be escaped."""
    return (
        '<!DOCTYPE html>\n<html lang="es">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{escape(title)} · {escape(company)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{escape(title)}</h1>\n{body_html}\n"
        f"<footer>{escape(company)}</footer>\n</main>\n</body>\n</html>\n"
    )


def form_page(state: SurveyState, company: str, preselect: int | None = None, error: str | None = None) -> str:
    options = []
    for score in (5, 4, 3, 2, 1):
        checked = " checked" if score == preselect else ""
        options.append(
            f'<label class="score"><input type="radio" name="score" value="{score}" required{checked}> '
            f"{score} — {escape(LABELS[score])}</label>"
        )
    body = (
        f"<p>Cerramos tu ticket <strong>{state.ticket_number}</strong>. "
        "¿Qué tan satisfecho quedaste con la atención que recibiste?</p>\n"
        + (f'<p class="error">{escape(error)}</p>\n' if error else "")
        + f'<form method="post" action="{escape(quote(state.token, safe=""))}">\n'
        "<fieldset>\n<legend>Tu calificación (del 1 al 5)</legend>\n"
        + "\n".join(options)
        + "\n</fieldset>\n"
        '<p><label for="comment">¿Quieres contarnos algo más? (opcional)</label></p>\n'
        f'<textarea id="comment" name="comment" maxlength="{MAX_COMMENT}"></textarea>\n'
        '<p><button type="submit">Enviar respuesta</button></p>\n</form>'
    )
    return page("¿Cómo te atendimos?", body, company)


def thanks_page(state: SurveyState, score: int, company: str) -> str:
    body = (
        f"<p>Registramos tu calificación de <strong>{score} de 5</strong> para el ticket "
        f"<strong>{state.ticket_number}</strong>.</p>\n"
        "<p>Tus comentarios nos ayudan a seguir mejorando nuestro servicio.</p>"
    )
    return page("¡Gracias por tu respuesta!", body, company)


def already_page(state: SurveyState, company: str) -> str:
    score = f" Tu calificación fue de <strong>{state.score} de 5</strong>." if state.score else ""
    body = (
        f"<p>Ya registramos tu respuesta a la encuesta del ticket <strong>{state.ticket_number}</strong>."
        f"{score} ¡Gracias!</p>"
    )
    return page("Ya registramos tu respuesta", body, company)


def expired_page(company: str) -> str:
    body = (
        "<p>El plazo para responder esta encuesta ya terminó. Si quieres contarnos algo sobre "
        "la atención que recibiste, responde a nuestro último mensaje y con gusto lo leeremos.</p>"
    )
    return page("Esta encuesta ya no está disponible", body, company)


def unknown_page(company: str) -> str:
    body = (
        "<p>No encontramos esta encuesta. Revisa que el enlace esté completo, tal como llegó "
        "en nuestro mensaje.</p>"
    )
    return page("No encontramos esta encuesta", body, company)
