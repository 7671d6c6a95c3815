"""The SMTP door, spoken to with smtplib as a real client would, on SQLite and PostgreSQL."""

from __future__ import annotations

import smtplib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from inbound.process import Processor
from inbound.runner import BackgroundProcessor
from inbound.smtp import make_controller
from models.message import Message, RawMessage
from models.ticket import Ticket
from tests.mailbuilder import mail
from tests.support.ports import free_port, wait_until
from tests.support.tcp_proxy import TcpProxy
from worker.runtime import Runtime


@contextmanager
def door(rt: Runtime, process: bool = True) -> Iterator[tuple[str, int, BackgroundProcessor | None]]:
    background = BackgroundProcessor(Processor(rt.sessions, rt.settings, rt.catalog), 0.2).start() if process else None
    controller = make_controller(rt.settings, rt.sessions, background.submit if background else None,
                                 f"127.0.0.1:{free_port()}")
    controller.start()
    try:
        yield controller.hostname, controller.port, background
    finally:
        controller.stop()
        if background:
            background.stop()


def count(rt: Runtime, model) -> int:
    with rt.transaction() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_mail_is_kept_answered_and_threaded(rt: Runtime) -> None:
    with door(rt) as (host, port, _), smtplib.SMTP(host, port, timeout=10) as client:
        for i in range(5):
            client.sendmail("ana@cliente.mx", ["soporte@jhleasing.mx"], mail(subject=f"Solicitud {i}"))
        wait_until(lambda: count(rt, Ticket) == 5, message="5 tickets")
    with rt.transaction() as s:
        assert {r.status for r in s.scalars(select(RawMessage))} == {"done"}
        assert {r.source for r in s.scalars(select(RawMessage))} == {"smtp"}


def test_unknown_recipients_are_refused_and_the_server_never_relays(rt: Runtime) -> None:
    with door(rt, process=False) as (host, port, _), smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo()
        client.mail("ana@cliente.mx")
        code, text = client.rcpt("alguien@gmail.com")
        assert code == 550 and b"5.1.1" in text
        client.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("ana@cliente.mx", ["otro@jhleasing.mx"], mail())
    assert count(rt, RawMessage) == 0


def test_the_size_limit_is_advertised_and_enforced(make_settings) -> None:
    rt = Runtime.build(make_settings(max_message_bytes=20_000))
    try:
        with door(rt, process=False) as (host, port, _), smtplib.SMTP(host, port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("size") and client.esmtp_features["size"] == "20000"
            with pytest.raises(smtplib.SMTPResponseException) as err:
                client.sendmail("ana@cliente.mx", ["soporte@jhleasing.mx"], mail(body="x" * 40_000))
            assert err.value.smtp_code == 552
        assert count(rt, RawMessage) == 0
    finally:
        rt.close()


def test_mail_accepted_before_a_crash_is_threaded_after_restart(rt: Runtime) -> None:
    with door(rt, process=False) as (host, port, _), smtplib.SMTP(host, port, timeout=10) as client:
        client.sendmail("ana@cliente.mx", ["soporte@jhleasing.mx"], mail())
    assert count(rt, RawMessage) == 1 and count(rt, Ticket) == 0  # answered 250, not threaded
    with door(rt) as (_h, _p, _b):
        wait_until(lambda: count(rt, Ticket) == 1, message="threaded after restart")
    assert count(rt, Message) == 1


def _pg_proxy_settings(make_settings, database_url: str, proxy: TcpProxy):
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return make_settings(database_url=url.render_as_string(hide_password=False), database_timeout_seconds=1)


@contextmanager
def database_outage(make_settings, database_url: str) -> Iterator[tuple[Runtime, object, object]]:
    """A runtime whose database can be cut and restored: a TCP proxy for PostgreSQL, an
    exclusive lock held by another connection for SQLite."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
        rt = Runtime.build(_pg_proxy_settings(make_settings, database_url, proxy))
        try:
            yield rt, proxy.cut, proxy.restore
        finally:
            rt.close()
            proxy.stop()
    else:
        rt = Runtime.build(make_settings(database_timeout_seconds=0.5))
        holder = sqlite3.connect(url.database, timeout=1, isolation_level=None)

        def cut() -> None:
            holder.execute("BEGIN EXCLUSIVE")

        def restore() -> None:
            holder.execute("COMMIT")

        try:
            yield rt, cut, restore
        finally:
            rt.close()
            holder.close()


def test_with_the_database_down_the_door_answers_451_and_the_retry_is_stored_once(
    make_settings, database_url: str
) -> None:
    with database_outage(make_settings, database_url) as (rt, cut, restore):
        raw = mail()
        with door(rt) as (host, port, _):
            cut()
            with smtplib.SMTP(host, port, timeout=30) as client:
                with pytest.raises(smtplib.SMTPDataError) as err:
                    client.sendmail("ana@cliente.mx", ["soporte@jhleasing.mx"], raw)
                assert err.value.smtp_code == 451
                restore()
                client.rset()
                client.sendmail("ana@cliente.mx", ["soporte@jhleasing.mx"], raw)
                client.sendmail("ana@cliente.mx", ["soporte@jhleasing.mx"], raw)  # a second retry
            wait_until(lambda: count(rt, Ticket) == 1, timeout=20, message="stored once")
        assert count(rt, Message) == 1 and count(rt, Ticket) == 1


def test_starttls_is_offered_when_a_certificate_is_configured(make_settings, tmp_path) -> None:
    import ssl

    from tests.support.smtp_sink import make_self_signed_cert

    cert, key = make_self_signed_cert(tmp_path, "localhost")
    rt = Runtime.build(make_settings(smtp_tls_cert=cert, smtp_tls_key=key))
    try:
        with door(rt) as (host, port, _), smtplib.SMTP(host, port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            client.starttls(context=context)
            client.ehlo()
            client.sendmail("ana@cliente.mx", ["soporte@jhleasing.mx"], mail())
            wait_until(lambda: count(rt, Ticket) == 1, message="threaded over TLS")
    finally:
        rt.close()


def test_the_whole_corpus_over_smtp_is_kept_and_each_mail_is_threaded_or_quarantined(rt: Runtime) -> None:
    from pathlib import Path

    corpus = sorted((Path(__file__).parent / "mail").glob("*.eml"))
    assert len(corpus) >= 40
    with door(rt) as (host, port, _), smtplib.SMTP(host, port, timeout=30) as client:
        for i, path in enumerate(corpus):
            # The corpus files share one Message-ID; give each its own so none is a duplicate.
            data = path.read_bytes().replace(b"CAF=abc123@mail.gmail.com", f"corpus{i}@mail.gmail.com".encode())
            client.sendmail("x@cliente.mx", ["soporte@jhleasing.mx"], data)
        wait_until(
            lambda: count(rt, RawMessage) == len(corpus)
            and all(r.status in ("done", "quarantined") for r in _raws(rt)),
            timeout=30, message="every mail processed",
        )
    outcomes = [r.outcome or r.error or "" for r in _raws(rt)]
    assert any("opened ticket" in o for o in outcomes)
    assert any(o.startswith("loop dropped") for o in outcomes)
    assert any("bounce" in o for o in outcomes)
    assert any("auto-reply" in o for o in outcomes)


def _raws(rt: Runtime) -> list[RawMessage]:
    with rt.transaction() as s:
        return list(s.scalars(select(RawMessage).order_by(RawMessage.id)))


def test_the_doors_threading_children_do_not_outlive_a_sigkilled_door(cli_env) -> None:
    import os
    import signal
    import subprocess

    from tests.cli_helpers import HELPDESK
    from tests.support.ports import port_is_open

    def children_of(pid: int) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = _stat(int(entry))
                except OSError:
                    continue
                if int(stat[1]) == pid:
                    found.append(int(entry))
        return found

    port = free_port()
    door_proc = subprocess.Popen([HELPDESK, "smtp", "--listen", f"127.0.0.1:{port}", "--processors", "2"],
                                 env=cli_env, stderr=subprocess.DEVNULL)
    kids: list[int] = []
    try:
        wait_until(lambda: port_is_open("127.0.0.1", port), timeout=30, message="door up")
        kids = wait_until(lambda: len(children_of(door_proc.pid)) == 2 and children_of(door_proc.pid),
                          timeout=30, message="two threading children")
        door_proc.send_signal(signal.SIGKILL)
        door_proc.wait(10)
        wait_until(lambda: not any(_alive(k) for k in kids), timeout=20,
                   message="children gone after the door died")
    finally:
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if door_proc.poll() is None:
            door_proc.kill()
            door_proc.wait()


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    from pathlib import Path

    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def test_the_group_keeper_commits_every_message_and_answers_each_sender_its_own_id(rt: Runtime) -> None:
    from inbound.keep import GroupKeeper

    keeper = GroupKeeper(rt.sessions, max_group=8).start()
    try:
        futures = [keeper.keep(source="smtp", data=mail(subject=f"Grupo {i}")) for i in range(50)]
        ids = [f.result(timeout=30) for f in futures]
    finally:
        keeper.stop()
    assert len(set(ids)) == 50
    with rt.transaction() as s:
        kept = {r.id: r.data for r in s.scalars(select(RawMessage))}
    assert set(kept) == set(ids)
    assert all(f"Grupo {i}".encode() in kept[raw_id] for i, raw_id in enumerate(ids))


def test_a_sender_that_hangs_up_before_its_commit_is_not_kept_and_the_keeper_goes_on(rt: Runtime) -> None:
    from inbound.keep import GroupKeeper

    keeper = GroupKeeper(rt.sessions, max_group=8)  # not started: the queue fills first
    futures = [keeper.keep(source="smtp", data=mail(subject=f"Colgado {i}")) for i in range(6)]
    assert futures[1].cancel() and futures[4].cancel()  # as aiosmtpd does when a client hangs up
    keeper.start()
    try:
        ids = [f.result(timeout=30) for i, f in enumerate(futures) if i not in (1, 4)]
        later = keeper.keep(source="smtp", data=mail(subject="Después")).result(timeout=30)
    finally:
        keeper.stop()
    with rt.transaction() as s:
        kept = {r.id: r.data for r in s.scalars(select(RawMessage))}
    assert set(kept) == {*ids, later}
    assert not any(b"Colgado 1" in d or b"Colgado 4" in d for d in kept.values())
