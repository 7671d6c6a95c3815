"""Settings come from HELPDESK_* variables and a .env file, with documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings


def test_defaults_run_with_nothing_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("HELPDESK_"):
            monkeypatch.delenv(name)
    s = Settings()
    assert s.database_url == "sqlite:///./var/helpdesk.db"
    assert (s.smtp_listen, s.http_listen) == ("127.0.0.1:2525", "127.0.0.1:8000")
    assert (s.default_pipeline, s.locale, s.timezone) == ("mantenimiento", "es_MX", "America/Mexico_City")
    assert s.outbound_smtp_url is None and s.imap_url is None


def test_env_file_and_environment_are_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "HELPDESK_TICKET_PREFIX=abc\nHELPDESK_INBOX_ADDRESSES=a@x.mx, siniestros@x.mx=siniestros\n"
        "HELPDESK_STAFF_DOMAINS=x.mx\nHELPDESK_TIMEZONE=America/Tijuana\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HELPDESK_TIMEZONE", "America/Cancun")
    s = Settings()
    assert s.ticket_prefix == "ABC"
    assert s.inbox_map == {"a@x.mx": "mantenimiento", "siniestros@x.mx": "siniestros"}
    assert s.primary_inbox == "a@x.mx"
    assert s.is_staff("Ana@X.MX") and s.is_staff("b@mail.x.mx") and not s.is_staff("c@otrox.mx")
    assert s.timezone == "America/Cancun"


def test_a_bad_prefix_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPDESK_TICKET_PREFIX", "J#L")
    with pytest.raises(ValueError, match="TICKET_PREFIX"):
        Settings(_env_file=None)
