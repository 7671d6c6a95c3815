"""``helpdesk web``: the web app under uvicorn on HELPDESK_HTTP_LISTEN.

Behind a proxy or TLS terminator, set HELPDESK_PUBLIC_URL to the URL Twilio calls: the
webhook signatures are checked against it, not against the address uvicorn listens on.

The kept WhatsApp messages are threaded by a niced child process (``helpdesk web-pump``,
``--processors``), not by a thread of the web process: threading takes several times the
CPU of keeping, and in this process it would hold the GIL while the door answers.
"""

from __future__ import annotations

import os
import signal
import threading

import click

from config.settings import host_port
from worker.cli import CommandError, cli, runtime

#: How much lower than the door the threading child runs (``nice`` increment): under a
#: burst the door's answers come first, threading follows as CPU allows.
PUMP_NICE = 10


@cli.command("web")
@click.option("--listen", help="host:port (default: HELPDESK_HTTP_LISTEN).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--processors", default=1, show_default=True, type=click.IntRange(0, 8),
              help="Child processes that thread kept WhatsApp messages (0: a thread of this process). "
                   "More than 1 may thread one sender's messages out of arrival order.")
@click.pass_context
def web(ctx: click.Context, listen: str | None, log_level: str, processors: int) -> None:
    """Serve the Twilio webhooks, the survey page and /healthz."""
    import uvicorn

    from worker.children import Children, helpdesk_command
    from worker.logs import setup_logging
    from worker.relay import OutboundService
    from worker.web import Service, create_app

    setup_logging()
    rt = runtime(ctx)
    try:
        host, port = host_port(listen or rt.settings.http_listen)
    except ValueError as exc:
        raise CommandError(f"not a host:port: {listen or rt.settings.http_listen}") from exc
    if not rt.settings.twilio_auth_token:
        click.echo("helpdesk: warning: HELPDESK_TWILIO_AUTH_TOKEN is not set; webhooks will be refused (403)",
                   err=True)
    # Publish only: acknowledgements planned here go to the queue right after their commit;
    # `helpdesk worker` consumes and sweeps (and sends them anyway if Redis is down now).
    services: list[Service] = [OutboundService.redis(rt, consume=False, sweep=False)]
    if processors:
        argv = helpdesk_command("web-pump", "--parent-pid", str(os.getpid()), "--nice", str(PUMP_NICE))
        services.append(Children(argv, processors))
    app = create_app(rt, pump=processors == 0, services=services)
    # Twilio signs PUBLIC_URL, so proxy headers are not needed for the signature
    # check; they are trusted only from loopback, for the access log.
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=True,
                forwarded_allow_ips="127.0.0.1", server_header=False)


@cli.command("web-pump", hidden=True)
@click.option("--parent-pid", type=int, help="Exit when this process is gone (the web process).")
@click.option("--nice", "niceness", default=0, show_default=True, type=click.IntRange(0, 19),
              help="Lower this process's CPU priority by this much.")
@click.option("--idle-poll", default=0.2, show_default=True, help="Longest pause between looks when idle.")
@click.pass_context
def web_pump(ctx: click.Context, parent_pid: int | None, niceness: int, idle_poll: float) -> None:
    """Thread kept WhatsApp messages and fetch their media (``helpdesk web``'s child)."""
    from worker.inbound_pump import run_child
    from worker.logs import setup_logging

    setup_logging()
    if niceness:
        os.nice(niceness)
    rt = runtime(ctx, publish=True)  # acknowledgements go to the broker after each commit
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_child(rt, stop, parent_pid=parent_pid or os.getppid(), idle_poll=idle_poll)
