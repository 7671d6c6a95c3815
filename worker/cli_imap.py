"""The ``imap`` command: the IMAP door as a process of its own."""

from __future__ import annotations

import signal
import threading

import click

from worker.cli import CommandError, cli, runtime
from worker.cli_inbound import processor_for
from worker.logs import setup_logging


@cli.command()
@click.option("--owner", help="Name of this poller in the mailbox lease (default host:pid:random).")
@click.pass_context
def imap(ctx: click.Context, owner: str | None) -> None:
    """Take mail from HELPDESK_IMAP_URL (IDLE when offered), keep it and thread it.

    Several may run on one mailbox: one holds the lease and the others wait to take over.
    Stops on SIGINT or SIGTERM after the batch in hand, releasing the lease.
    """
    from inbound.imap import ImapPoller
    from inbound.runner import BackgroundProcessor

    setup_logging()
    rt = runtime(ctx, publish=True)  # acknowledgements go to the broker after each commit
    if not rt.settings.imap_url:
        raise CommandError("HELPDESK_IMAP_URL is not set")
    background = BackgroundProcessor(processor_for(ctx), sources=("imap",))
    try:
        poller = ImapPoller(rt.settings, rt.sessions, on_kept=background.submit, owner=owner)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    background.start()
    thread = threading.Thread(target=poller.run, args=(stop,), name="imap-poller", daemon=True)
    thread.start()
    click.echo(f"helpdesk imap on {poller.key} as {poller.owner}", err=True)
    while thread.is_alive():  # also ends when the poller dies of a bug, instead of hanging
        thread.join(1.0)
    background.stop()
    if not stop.is_set():
        raise CommandError("the IMAP poller stopped unexpectedly (see the log)")
