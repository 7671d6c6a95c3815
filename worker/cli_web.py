"""``helpdesk web``: the web app under uvicorn on HELPDESK_HTTP_LISTEN.

Behind a proxy or TLS terminator, set HELPDESK_PUBLIC_URL to the URL Twilio calls: the
webhook signatures are checked against it, not against the address uvicorn listens on.
"""

from __future__ import annotations

import click

from config.settings import host_port
from worker.cli import CommandError, cli, runtime


@cli.command("web")
@click.option("--listen", help="host:port (default: HELPDESK_HTTP_LISTEN).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.pass_context
def web(ctx: click.Context, listen: str | None, log_level: str) -> None:
    """Serve the Twilio webhooks, the survey page and /healthz."""
    import uvicorn

    from worker.logs import setup_logging
    from worker.relay import OutboundService
    from worker.web import create_app

    setup_logging()
    rt = runtime(ctx)
    try:
        host, port = host_port(listen or rt.settings.http_listen)
    except ValueError as exc:
        raise CommandError(f"not a host:port: {listen or rt.settings.http_listen}") from exc
    if not rt.settings.twilio_auth_token:
        click.echo("helpdesk: warning: HELPDESK_TWILIO_AUTH_TOKEN is not set; webhooks will be refused (403)",
                   err=True)
    app = create_app(rt)
    # Publish only: acknowledgements planned here go to the queue right after their commit;
    # `helpdesk worker` consumes and sweeps (and sends them anyway if Redis is down now).
    outbound = OutboundService.redis(rt, consume=False, sweep=False).start()
    try:
        # Twilio signs PUBLIC_URL, so proxy headers are not needed for the signature
        # check; they are trusted only from loopback, for the access log.
        uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=True,
                    forwarded_allow_ips="127.0.0.1", server_header=False)
    finally:
        outbound.stop()
