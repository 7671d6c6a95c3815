"""``helpdesk ingest``, ``parse`` and ``quarantine`` run as real processes (an MTA pipe,
an operator), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.cli_helpers import helpdesk, helpdesk_json
from tests.mailbuilder import mail
from tests.test_smtp_door import database_outage

CORPUS = Path(__file__).parent / "mail"


def test_ingest_from_stdin_stores_and_threads(cli_env) -> None:
    proc = helpdesk(cli_env, "ingest", input=mail(subject="Cambio de llantas"))
    assert "opened ticket" in proc.stdout
    [ticket] = helpdesk_json(cli_env, "tickets")
    assert ticket["portal_status"] == "Abierto-Abierto"
    shown = helpdesk_json(cli_env, "show", str(ticket["number"]))
    assert shown["messages"][0]["threaded_by"] == "new"


def test_ingest_of_files_and_the_same_file_twice_adds_nothing(cli_env, tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(mail())
    helpdesk(cli_env, "ingest", str(path))
    proc = helpdesk(cli_env, "ingest", str(path))
    assert "duplicate" in proc.stdout
    assert len(helpdesk_json(cli_env, "tickets")) == 1


def test_ingest_exits_75_when_the_database_cannot_take_the_mail(make_settings, database_url, cli_env) -> None:
    with database_outage(make_settings, database_url) as (rt, cut, restore):
        env = {**cli_env, "HELPDESK_DATABASE_URL": rt.settings.database_url, "HELPDESK_DATABASE_TIMEOUT_SECONDS": "1"}
        cut()
        try:
            proc = helpdesk(env, "ingest", input=mail(), check=False)
        finally:
            restore()
        assert proc.returncode == 75, proc.stderr
        assert "cannot store the message now" in proc.stderr and "Traceback" not in proc.stderr
        assert helpdesk(env, "ingest", input=mail()).returncode == 0
    assert make_url(database_url)  # the outage touched nothing of the real database


def test_parse_json_gives_one_line_per_file_in_order_even_for_unreadable_ones(cli_env, tmp_path: Path) -> None:
    files = [CORPUS / "gmail_es_reply.eml", tmp_path / "missing.eml", CORPUS / "dsn_permanent.eml"]
    proc = helpdesk(cli_env, "parse", *map(str, files), "--json")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    assert lines[0]["kind"] == "message" and lines[0]["reply_text"]
    assert "error" in lines[1]
    assert lines[2]["kind"] == "bounce" and lines[2]["bounce"]["recipients"][0]["permanent"] is True
    for key in ("from", "to", "cc", "subject", "date", "message_id", "in_reply_to", "references", "text",
                "reply_text", "attachments", "kind", "bounce", "forwarded", "ticket_numbers", "defects"):
        assert key in lines[0]


def test_parse_never_crashes_on_garbage(cli_env, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 10)
    proc = helpdesk(cli_env, "parse", str(junk), "--json")
    [line] = [json.loads(x) for x in proc.stdout.splitlines()]
    assert line["file"] == str(junk) and "error" in line


def test_quarantine_lists_the_reason_and_retry_processes_again(cli_env) -> None:
    helpdesk(cli_env, "ingest", input=b"Subject: sin remitente\r\n\r\nhola\r\n")
    [row] = helpdesk_json(cli_env, "quarantine")
    assert "no sender address" in row["error"]
    proc = helpdesk(cli_env, "quarantine", "--retry", str(row["id"]), check=False)
    assert proc.returncode == 1 and "quarantined" in proc.stdout
    proc = helpdesk(cli_env, "quarantine", "--retry", "999", check=False)
    assert proc.returncode == 1 and "no quarantined message 999" in proc.stderr
