"""Inbound commands: ``smtp``, ``ingest``, ``parse`` and ``quarantine``."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import click
from sqlalchemy import select

from config.settings import Settings
from inbound.keep import TemporaryFailure, keep_raw
from inbound.process import Processor, requeue
from inbound.report import describe
from models.identity import is_own_message_id
from models.message import RawMessage
from worker.cli import EX_TEMPFAIL, CommandError, cli, emit, runtime
from worker.logs import setup_logging


def processor_for(ctx: click.Context) -> Processor:
    rt = runtime(ctx)
    return Processor(rt.sessions, rt.settings, rt.catalog)


MAIL_SOURCES = ("smtp", "pipe", "cli")


@cli.command()
@click.option("--listen", help="host:port (default HELPDESK_SMTP_LISTEN).")
@click.option("--processors", default=1, show_default=True, type=click.IntRange(0, 16),
              help="Child processes that thread the kept mail (0: a thread of this process).")
@click.pass_context
def smtp(ctx: click.Context, listen: str | None, processors: int) -> None:
    """Run the SMTP server for the inbox addresses."""
    from inbound.runner import BackgroundProcessor
    from inbound.smtp import make_controller
    from worker.children import Children, helpdesk_command

    setup_logging()
    rt = runtime(ctx, publish=True)  # acknowledgements go to the broker after each commit
    if rt.engine.dialect.name != "postgresql":
        # SQLite's keeper is a thread (inbound.keep.GroupKeeper): it and the event loop
        # hand the GIL back and forth for every message, and at Python's default 5 ms
        # switch interval a sender's 250 can wait for it longer than for the commit.
        # PostgreSQL's keeper runs on the event loop itself and needs none of this.
        sys.setswitchinterval(0.0005)
    # This door threads the mail that came by SMTP or an MTA pipe; IMAP and WhatsApp rows
    # are threaded by their own processes.
    children = background = None
    if processors:
        # Threading yields the CPU to the door: a sender waits for its 250, kept mail can
        # wait a moment to be threaded (nothing is lost, and an idle door leaves it all).
        argv = helpdesk_command("process", "--sources", ",".join(MAIL_SOURCES), "--parent-pid", str(os.getpid()),
                                "--nice", "10")
        children = Children(argv, processors).start()
    else:
        background = BackgroundProcessor(processor_for(ctx), sources=MAIL_SOURCES).start()
    controller = make_controller(rt.settings, rt.sessions, background.submit if background else None, listen)
    controller.start()
    click.echo(f"helpdesk smtp listening on {controller.hostname}:{controller.port} "
               f"for {', '.join(rt.settings.inbox_map)}", err=True)
    wait_for_signal()
    controller.stop()
    if background is not None:
        background.stop()
    if children is not None:
        children.stop()


@cli.command()
@click.option("--sources", default="smtp,pipe,cli", show_default=True,
              help="Comma list of the doors whose kept messages to thread.")
@click.option("--idle-poll", default=0.2, show_default=True, help="Longest pause between looks when idle.")
@click.option("--parent-pid", type=int, help="Exit when this process is gone (the door that started us).")
@click.option("--nice", "niceness", default=0, show_default=True, type=click.IntRange(0, 19),
              help="Lower this process's CPU priority by this much (the door's children use 10).")
@click.pass_context
def process(ctx: click.Context, sources: str, idle_poll: float, parent_pid: int | None, niceness: int) -> None:
    """Thread kept messages until stopped (the door's children run this)."""
    if niceness:
        os.nice(niceness)
    setup_logging()
    from inbound.runner import poll_until_stopped

    runtime(ctx, publish=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    poll_until_stopped(processor_for(ctx), stop, parent_pid=parent_pid or os.getppid(), idle_poll=idle_poll,
                       sources=tuple(s.strip() for s in sources.split(",") if s.strip()))


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--recipient", "-r", help="Envelope recipient (the MTA's $recipient).")
@click.option("--sender", "-f", help="Envelope sender (the MTA's $sender).")
@click.pass_context
def ingest(ctx: click.Context, files: tuple[Path, ...], recipient: str | None, sender: str | None) -> None:
    """Store raw RFC 5322 messages from FILES or stdin (an MTA pipe transport).

    Exits 0 once every message is kept, 75 (EX_TEMPFAIL) when one could not be kept now,
    so the MTA retries. Threading runs right after, on what was kept.
    """
    rt = runtime(ctx, publish=True)
    blobs: list[tuple[str, bytes]] = []
    if files:
        for path in files:
            try:
                blobs.append((str(path), path.read_bytes()))
            except OSError as exc:
                raise CommandError(f"{path}: {exc.strerror}") from exc
    else:
        blobs.append(("-", sys.stdin.buffer.read()))
    kept: list[int] = []
    for name, data in blobs:
        if not data.strip():
            raise CommandError(f"{name}: empty message")
        try:
            kept.append(keep_raw(rt.sessions, source="pipe", data=data, envelope_from=sender,
                                 envelope_to=recipient))
        except TemporaryFailure as exc:
            click.echo(f"helpdesk: {name}: {exc}", err=True)
            sys.exit(EX_TEMPFAIL)
    processor = Processor(rt.sessions, rt.settings, rt.catalog)
    for raw_id in kept:
        try:
            outcome = processor.process(raw_id)
        except Exception as exc:  # kept already: the next sweep processes it
            outcome = f"kept; processing deferred ({type(exc).__name__})"
        click.echo(f"{raw_id}: {outcome}")


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file (JSON Lines).")
def parse(files: tuple[Path, ...], as_json: bool) -> None:
    """Parse and classify raw messages without storing anything.

    For operators asking "why did this mail land there?": one line per file, in order.
    A file that cannot be read gets a line with an ``error``; the others are still parsed.
    """
    settings = Settings()
    sources: list[tuple[str, bytes | None, str | None]] = []
    if not files:
        sources.append(("-", sys.stdin.buffer.read(), None))
    for path in files:
        try:
            sources.append((str(path), path.read_bytes(), None))
        except OSError as exc:
            sources.append((str(path), None, f"cannot read file: {exc.strerror}"))
    own = set(settings.inbox_map)
    for name, data, error in sources:
        if data is None:
            report = {"file": name, "error": error}
        else:
            report = {"file": name, **describe(
                data, prefix=settings.ticket_prefix, own_addresses=own,
                is_own_message_id=lambda mid: is_own_message_id(mid, settings.secret_key),
            )}
        if as_json:
            click.echo(json.dumps(report, ensure_ascii=False, default=str))
        else:
            _print_report(report)


def _print_report(report: dict) -> None:  # type: ignore[type-arg]
    if report.get("error") and not report.get("subject"):
        click.echo(f"{report['file']}: error: {report['error']}")
        return
    sender = (report.get("from") or {}).get("email")
    click.echo(f"{report['file']}: {report['kind']} from {sender} — {report.get('subject')!r}")
    click.echo(f"  message-id {report.get('message_id')}  tickets {report.get('ticket_numbers')}")
    if report.get("forwarded"):
        click.echo(f"  forwards mail from {report['forwarded']['from']['email']}")
    if report.get("bounce"):
        click.echo(f"  bounce: {report['bounce']['recipients']}")
    for defect in report.get("defects") or []:
        click.echo(f"  defect: {defect}")


@cli.command()
@click.option("--retry", "retry_id", type=int, help="Process a quarantined message again.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def quarantine(ctx: click.Context, retry_id: int | None, as_json: bool) -> None:
    """Messages that could not be processed, with the reason."""
    rt = runtime(ctx)
    if retry_id is not None:
        try:
            requeue(rt.sessions, retry_id)
        except LookupError as exc:
            raise CommandError(str(exc.args[0])) from exc
        outcome = processor_for(ctx).process(retry_id)
        click.echo(f"{retry_id}: {outcome}")
        if outcome and outcome.startswith("quarantined"):
            sys.exit(1)
        return
    with rt.transaction() as session:
        rows = [
            {"id": r.id, "source": r.source, "received_at": r.received_at.isoformat(),
             "envelope_from": r.envelope_from, "size": len(r.data), "error": r.error, "attempts": r.attempts}
            for r in session.scalars(
                select(RawMessage).where(RawMessage.status == "quarantined").order_by(RawMessage.id)
            )
        ]
    if as_json:
        emit(rows)
        return
    if not rows:
        click.echo("quarantine is empty")
    for r in rows:
        click.echo(f"{r['id']:>6} {r['received_at'][:19]} {r['source']:8} {r['size']:>8} B  {r['error']}")
