"""``helpdesk run``: every process of the Procfile in one, on embedded defaults.

For a newcomer with nothing installed: SQLite under ./var, an in-process broker, and
notifications written as .eml files under ./var/outbox when no relay is set. The same
doors, pipeline and senders as production, only wired in one process.
"""

from __future__ import annotations

import threading

import click

from config.settings import host_port
from worker.cli import cli, runtime
from worker.cli_inbound import wait_for_signal
from worker.logs import setup_logging


@cli.command()
@click.option("--no-web", is_flag=True, help="Do not serve the web app (webhooks, survey page).")
@click.pass_context
def run(ctx: click.Context, no_web: bool) -> None:
    """Run SMTP, web, IMAP (when configured) and the worker in one process."""
    from inbound.process import Processor
    from inbound.runner import BackgroundProcessor
    from inbound.smtp import make_controller
    from models.migrate import upgrade
    from worker.relay import OutboundService

    setup_logging()
    rt = runtime(ctx)
    upgrade(rt.settings.database_url)  # embedded defaults: the schema is made on first run
    rt.extras["broker_mode"] = "embedded"
    outbound = OutboundService.embedded(rt, threads=4).start()
    background = BackgroundProcessor(Processor(rt.sessions, rt.settings, rt.catalog)).start()
    controller = make_controller(rt.settings, rt.sessions, background.submit)
    controller.start()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    where = rt.settings.outbound_smtp_url or f"{rt.settings.outbox_dir}/*.eml"
    click.echo(f"helpdesk run: SMTP on {controller.hostname}:{controller.port} for "
               f"{', '.join(rt.settings.inbox_map)}; notifications to {where}", err=True)
    server = None
    if not no_web:
        import uvicorn

        from worker.web import create_app

        host, port = host_port(rt.settings.http_listen)
        server = uvicorn.Server(uvicorn.Config(create_app(rt), host=host, port=port, log_level="warning"))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        threads.append(threading.Thread(target=server.run, name="web", daemon=True))
        click.echo(f"helpdesk run: web on http://{host}:{port} (survey pages, webhooks, /healthz)", err=True)
    if rt.settings.imap_url:
        from inbound.imap import ImapPoller

        poller = ImapPoller(rt.settings, rt.sessions, on_kept=background.submit)
        threads.append(threading.Thread(target=poller.run, args=(stop,), name="imap", daemon=True))
        click.echo(f"helpdesk run: polling {poller.key}", err=True)
    for thread in threads:
        thread.start()
    try:
        wait_for_signal()
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        for thread in threads:
            thread.join(10)
        controller.stop()
        background.stop()
        outbound.stop()
