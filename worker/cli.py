"""The ``helpdesk`` command: operators' and processes' single entry point.

Errors are one clear line on stderr and a non-zero exit, never a traceback
(``HELPDESK_DEBUG=1`` shows it). Only this module exits the process.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from config.pipelines import PipelineError, UnknownPipeline, UnknownStage
from config.settings import Settings
from models.contact import get_or_create_by_email, get_or_create_by_phone
from models.outbox import Outbox
from models.phones import InvalidPhone, normalize_phone
from models.stages import SameStage, move_stage
from models.ticket import Ticket
from models.tickets import NewMessage, add_message, find_by_number, open_ticket
from worker.runtime import Runtime
from worker.views import outbox_view, ticket_detail, ticket_summary

EX_TEMPFAIL = 75


class CommandError(click.ClickException):
    """A failure the operator can act on; printed as one line."""

    def show(self, file: Any = None) -> None:
        click.echo(f"helpdesk: {self.format_message()}", err=True)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=None, default=str))


def runtime(ctx: click.Context, *, publish: bool = False) -> Runtime:
    """The process's runtime, built on first use and closed with the command.

    ``publish``: the command writes outbox rows; hand their ids to the broker right after
    the commit (if Redis is down the worker's sweeper sends them anyway).
    """
    root = ctx.find_root()
    obj = root.ensure_object(dict)
    if "runtime" not in obj:
        try:
            rt = Runtime.build()
        except PipelineError as exc:
            raise CommandError(str(exc)) from exc
        obj["runtime"] = rt
        root.call_on_close(rt.close)
    rt = obj["runtime"]
    if publish and "publisher" not in obj:
        from worker.relay import OutboundService

        obj["publisher"] = OutboundService.redis(rt, consume=False, sweep=False).start()
        root.call_on_close(lambda: obj["publisher"].stop(timeout=5))
    return rt


def ticket_or_fail(session: Any, number: int) -> Ticket:
    ticket = find_by_number(session, number)
    if ticket is None:
        raise CommandError(f"no ticket {number}")
    return ticket


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Email- and WhatsApp-driven helpdesk worker."""


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Run the migrations on HELPDESK_DATABASE_URL (SQLite or PostgreSQL)."""
    from models.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pipelines(ctx: click.Context, as_json: bool) -> None:
    """The pipelines and their stages, in order."""
    catalog = runtime(ctx).catalog
    if as_json:
        emit(catalog.as_json())
        return
    for pipeline in catalog.values():
        click.echo(f"{pipeline.id} ({pipeline.label})")
        for i, stage in enumerate(pipeline.stages, 1):
            flags = [f for f, on in (("notify", stage.notify), ("terminal", stage.terminal),
                                     ("survey", stage.survey)) if on]
            click.echo(f"  {i:2}. {stage.portal_status():40} {' '.join(flags)}")


@cli.command("open")
@click.option("--pipeline", "pipeline_id", required=True, help="Pipeline id (see `helpdesk pipelines`).")
@click.option("--subject", required=True)
@click.option("--text", required=True, help="What the customer asked for.")
@click.option("--email", help="Requester's e-mail address.")
@click.option("--phone", help="Requester's phone (E.164 or Mexican national form).")
@click.option("--name", default="", help="Requester's name.")
@click.option("--by", help="Staff member opening the ticket.")
@click.option("--ack", is_flag=True, help="Also send the requester the acknowledgement with the number.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def open_cmd(ctx: click.Context, pipeline_id: str, subject: str, text: str, email: str | None,
             phone: str | None, name: str, by: str | None, ack: bool, as_json: bool) -> None:
    """Open a ticket for a request taken by staff (a phone call, a walk-in).

    Staff tell the caller the number printed here; --ack also sends it in writing.
    """
    if not email and not phone:
        raise CommandError("give --email or --phone for the requester")
    rt = runtime(ctx, publish=True)
    try:
        rt.catalog.get_pipeline(pipeline_id)
        e164 = normalize_phone(phone) if phone else None
    except (UnknownPipeline, InvalidPhone) as exc:
        raise CommandError(str(exc.args[0])) from exc
    with rt.transaction() as session:
        if email:
            contact = get_or_create_by_email(session, email, name)
            if e164 and not contact.phone:
                contact.phone = e164
        else:
            contact = get_or_create_by_phone(session, e164, name)  # type: ignore[arg-type]
        ticket = open_ticket(
            session, catalog=rt.catalog, settings=rt.settings, pipeline_id=pipeline_id,
            requester=contact, subject=subject, acknowledge=ack,
            message=NewMessage(channel="note", text=text, subject=subject, sender=by or "staff",
                               threaded_by="new"),
        )
        number = ticket.number
    if as_json:
        emit({"number": number})
    else:
        click.echo(number)


@cli.command()
@click.option("--open", "only_open", is_flag=True, help="Only tickets in state Abierto.")
@click.option("--pipeline", "pipeline_id", help="Only this pipeline.")
@click.option("--limit", default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tickets(ctx: click.Context, only_open: bool, pipeline_id: str | None, limit: int, as_json: bool) -> None:
    """List tickets, newest first."""
    rt = runtime(ctx)
    with rt.transaction() as session:
        query = select(Ticket).order_by(Ticket.id.desc()).limit(limit)
        if only_open:
            query = query.where(Ticket.state == "Abierto")
        if pipeline_id:
            query = query.where(Ticket.pipeline == pipeline_id)
        rows = [ticket_summary(t) for t in session.scalars(query)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        who = (row["requester"] or {}).get("email") or (row["requester"] or {}).get("phone") or "-"
        flag = "!" if row["needs_attention"] else " "
        click.echo(f"{row['number']:>8} {flag} {row['portal_status']:38.38} {who:30.30} {row['subject']}")


@cli.command()
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, number: int, as_json: bool) -> None:
    """One ticket with its messages, history and notifications."""
    rt = runtime(ctx)
    with rt.transaction() as session:
        data = ticket_detail(session, ticket_or_fail(session, number))
    if as_json:
        emit(data)
        return
    req = data["requester"] or {}
    click.echo(f"#{data['number']} {data['subject']}")
    click.echo(f"  {data['pipeline']} · {data['portal_status']} · {req.get('name') or ''} "
               f"{req.get('email') or ''} {req.get('phone') or ''}")
    for m in data["messages"]:
        click.echo(f"  [{m['created_at']}] {m['direction']} {m['channel']} {m['sender']}: "
                   f"{(m['reply_text'] or m['text'] or '')[:200]}")
    for h in data["history"]:
        click.echo(f"  {h['at']} {h['from']} → {h['to']} by {h['by'] or '-'} {h['note'] or ''}")
    for n in data["notifications"]:
        click.echo(f"  notify #{n['id']} {n['channel']} {n['template']} {n['status']}")


@cli.command()
@click.argument("number", type=int)
@click.argument("stage")
@click.option("--note", help="Why; kept in the history and shown to the customer.")
@click.option("--by", help="Who moves it (staff e-mail).")
@click.pass_context
def stage(ctx: click.Context, number: int, stage: str, note: str | None, by: str | None) -> None:
    """Move a ticket to STAGE of its pipeline (notifies when the stage says so)."""
    rt = runtime(ctx, publish=True)
    with rt.transaction() as session:
        ticket = ticket_or_fail(session, number)
        try:
            entry = move_stage(session, ticket, stage, catalog=rt.catalog, settings=rt.settings,
                               by=by, note=note)
        except (UnknownStage, SameStage) as exc:
            raise CommandError(str(exc.args[0])) from exc
        result = f"{number}: {entry.from_stage} → {entry.to_stage} ({ticket.portal_status})"
        if entry.reopen:
            result += " — reopened"
    click.echo(result)


@cli.command()
@click.argument("number", type=int)
@click.option("--text", required=True)
@click.option("--by", help="Staff member writing.")
@click.pass_context
def reply(ctx: click.Context, number: int, text: str, by: str | None) -> None:
    """Write to the ticket's requester on their channel."""
    from models.notify import enqueue

    rt = runtime(ctx, publish=True)
    with rt.transaction() as session:
        ticket = ticket_or_fail(session, number)
        if ticket.requester is None:
            raise CommandError(f"ticket {number} has no requester to write to")
        row = enqueue(session, ticket=ticket, contact=ticket.requester, template="reply",
                      payload={"text": text, "by": by, "pipeline": ticket.pipeline, "stage": ticket.stage})
        if row is None:
            raise CommandError(f"the requester of ticket {number} has neither e-mail nor WhatsApp")
        add_message(session, ticket, None, NewMessage(channel=row.channel, text=text, sender=by or "staff",
                                                      subject=ticket.subject, threaded_by="staff"),
                    direction="out").outbox_id = row.id
    click.echo(f"{number}: reply queued on {row.channel} (notification {row.id})")


@cli.command()
@click.option("--retry", "retry_id", type=int, help="Send a failed notification again.")
@click.option("--status", help="Only rows with this status.")
@click.option("--limit", default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def outbox(ctx: click.Context, retry_id: int | None, status: str | None, limit: int, as_json: bool) -> None:
    """Notifications and their delivery status."""
    rt = runtime(ctx, publish=True)
    if retry_id is not None:
        from models.outbox import retry as retry_row

        with rt.transaction() as session:
            try:
                retry_row(session, retry_id)
            except LookupError as exc:
                raise CommandError(str(exc.args[0])) from exc
        click.echo(f"notification {retry_id} queued again")
        return
    with rt.transaction() as session:
        query = select(Outbox, Ticket.number).outerjoin(Ticket, Ticket.id == Outbox.ticket_id)
        if status:
            query = query.where(Outbox.status == status)
        rows = [outbox_view(o, n) for o, n in session.execute(query.order_by(Outbox.id.desc()).limit(limit))]
    if as_json:
        emit(rows)
        return
    for r in rows:
        click.echo(f"{r['id']:>6} {r['ticket'] or '-':>8} {r['channel']:8} {r['template']:18} "
                   f"{r['status']:11} {r['attempts']} {r['last_error'] or ''}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run ``cli`` and turn every failure into one line."""
    from worker import commands  # noqa: F401  (registers the other commands)

    try:
        cli.main(args=argv, prog_name="helpdesk", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("helpdesk: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OperationalError as exc:
        _fail(f"database unavailable: {str(exc.orig).strip().splitlines()[0] if exc.orig else exc}",
              EX_TEMPFAIL)
    except SQLAlchemyError as exc:
        _fail(f"database error: {str(exc).splitlines()[0]}", 1)
    except (PipelineError, OSError) as exc:
        _fail(str(exc), 1)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        _fail(f"{type(exc).__name__}: {exc}", 1)
    sys.exit(0)


def _fail(message: str, code: int) -> None:
    if os.environ.get("HELPDESK_DEBUG"):
        import traceback

        traceback.print_exc()
    click.echo(f"helpdesk: {message}", err=True)
    sys.exit(code)
