"""Moving a ticket through its pipeline: validation, history, reopen, notifications and
the satisfaction survey, all in the caller's transaction."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy.orm import Session

from config.pipelines import Catalog, Stage
from config.settings import Settings
from models.base import utcnow
from models.notify import audience_contacts, enqueue
from models.survey import Survey
from models.ticket import StageHistory, Ticket


class SameStage(ValueError):
    """The ticket is already in that stage."""


def move_stage(
    session: Session,
    ticket: Ticket,
    stage_name: str,
    *,
    catalog: Catalog,
    settings: Settings,
    by: str | None = None,
    note: str | None = None,
) -> StageHistory:
    """Move ``ticket`` to ``stage_name`` and plan what the new stage calls for.

    Raises:
        UnknownStage: the pipeline has no such stage (the message lists the valid ones).
        SameStage: the ticket is already there (nothing to record, nobody to tell).
    """
    pipeline = catalog.get_pipeline(ticket.pipeline)
    target = pipeline.stage(stage_name)
    if target.name == ticket.stage:
        raise SameStage(f"ticket {ticket.number} is already in stage {target.name!r}")
    try:
        current: Stage | None = pipeline.stage(ticket.stage)
    except LookupError:
        current = None  # the catalog lost the old stage: the move is still allowed
    reopen = current is not None and current.terminal and not target.terminal
    now = utcnow()
    entry = StageHistory(
        ticket_id=ticket.id, from_stage=ticket.stage, to_stage=target.name, by=by, at=now,
        note=note, reopen=reopen,
    )
    session.add(entry)
    ticket.stage = target.name
    ticket.state = target.state
    ticket.updated_at = now
    if target.closed:
        ticket.closed_at = now
    elif reopen or ticket.closed_at is not None:
        ticket.closed_at = None
    session.flush()
    payload = {
        "pipeline": pipeline.id, "stage": target.name, "note": note,
        "previous_stage": entry.from_stage, "reopened": reopen,
    }
    if target.notify:
        for role, contact in audience_contacts(session, ticket, target.audience):
            enqueue(session, ticket=ticket, contact=contact, template="stage", payload=payload, audience=role)
    if target.survey and ticket.requester is not None:
        create_survey(session, ticket, entry, settings)
    return entry


def create_survey(session: Session, ticket: Ticket, entry: StageHistory, settings: Settings) -> Survey:
    """One survey for this closure, sent after the configured delay."""
    now = utcnow()
    survey = Survey(
        ticket_id=ticket.id,
        history_id=entry.id,
        contact_id=ticket.requester_id,
        pipeline=ticket.pipeline,
        token=secrets.token_urlsafe(24),
        created_at=now,
        expires_at=now + timedelta(days=settings.survey_ttl_days),
    )
    session.add(survey)
    session.flush()
    enqueue(
        session,
        ticket=ticket,
        contact=ticket.requester,
        template="survey",
        payload={"survey_id": survey.id, "pipeline": ticket.pipeline, "stage": ticket.stage},
        not_before=now + timedelta(seconds=settings.survey_delay_seconds),
    )
    return survey
