"""``helpdesk run`` with nothing configured: a mail in, a ticket and its acknowledgement
out as an .eml file, all in one process (SQLite, in-process broker)."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

from tests.cli_helpers import HELPDESK, helpdesk_json
from tests.mailbuilder import mail
from tests.support.ports import free_port, port_is_open, wait_until


def test_run_on_embedded_defaults_answers_a_mail_with_an_eml_acknowledgement(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPDESK_")}
    smtp_port, http_port = free_port(), free_port()
    # Only the ports move (tests run in parallel); everything else is the embedded default.
    env.update(HELPDESK_SMTP_LISTEN=f"127.0.0.1:{smtp_port}", HELPDESK_HTTP_LISTEN=f"127.0.0.1:{http_port}")
    proc = subprocess.Popen([HELPDESK, "run"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_until(lambda: port_is_open("127.0.0.1", smtp_port), timeout=30, message="SMTP up")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail("ana@cliente.mx", ["soporte@localhost"],
                            mail(sender="Ana <ana@cliente.mx>", to="soporte@localhost", subject="Servicio"))
        outbox = tmp_path / "var" / "outbox"
        files = wait_until(lambda: sorted(outbox.glob("*.eml")), timeout=30, message="acknowledgement .eml")
        ack = message_from_bytes(files[0].read_bytes(), policy=policy.default)
        assert ack["To"].addresses[0].addr_spec == "ana@cliente.mx" and ack["Auto-Submitted"] == "auto-generated"
        wait_until(lambda: port_is_open("127.0.0.1", http_port), timeout=30, message="web up")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    [ticket] = helpdesk_json({**env, "HELPDESK_DATABASE_URL": f"sqlite:///{tmp_path}/var/helpdesk.db"}, "tickets")
    # (`tickets` only reads: it publishes nothing to Redis)
    assert f"[JHL#{ticket['number']}]" in str(ack["Subject"])
    assert (tmp_path / "var" / "helpdesk.db").exists()
