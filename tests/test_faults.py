"""Real faults, each bounded in time: nothing accepted is lost and nothing is sent twice.

Every fault here is real: a Redis server killed and started again empty, a worker or an
SMTP door killed with SIGKILL, a relay that refuses connections, two doors racing on the
same mail. No code under test is mocked or patched. Faults covered elsewhere, not
repeated here: the database down during SMTP delivery (``test_smtp_door``), ``helpdesk
ingest`` exiting 75 (``test_ingest_cli``), a relay answering 451 then 250 and a 550
failing without retry (``test_outbound_email``), Redis unreachable or its keys deleted
(``test_worker``).
"""

from __future__ import annotations

import asyncio
import signal
import smtplib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import func, select

from config.settings import Settings
from inbound.imap import ImapPoller
from inbound.process import Processor
from inbound.runner import BackgroundProcessor
from inbound.smtp import make_controller
from models.message import Message, RawMessage
from models.ticket import Ticket
from tests.cli_helpers import HELPDESK
from tests.mailbuilder import mail, message_id_of
from tests.outbound_helpers import build_runtime, move, open_email_ticket, outbox_rows, running, wait_status
from tests.support.dovecot import Dovecot
from tests.support.fixtures import INBOX_USER
from tests.support.ports import free_port, port_is_open, wait_until
from tests.support.smtp_sink import SmtpSink
from tests.support.tcp_proxy import TcpProxy
from worker.runtime import Runtime

pytestmark = pytest.mark.timeout(100)

INBOX = "soporte@jhleasing.mx"


# -- helpers: real servers and processes --------------------------------------------------


@contextmanager
def private_redis(port: int) -> Iterator[Callable[[], None]]:
    """A redis-server of this test's own on ``port`` that keeps nothing on disk.

    Yields ``restart``: SIGKILL the server, then start it again, empty, on the same port.
    The first half of a restart is ``kill`` alone; ``start`` is the second (see below).
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_until(lambda: port_is_open("127.0.0.1", port), timeout=10, message="redis-server did not start")

    def kill() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        wait_until(lambda: not port_is_open("127.0.0.1", port), timeout=10, message="redis-server still up")

    start()
    try:
        yield lambda: (kill(), start())  # type: ignore[func-returns-value]
    finally:
        kill()


def count(rt: Runtime, model: object, *where: object) -> int:
    with rt.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)))  # type: ignore[arg-type]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap ``proc`` if it still runs (every test ends with this, in finally)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(20)


def log_of(path: Path) -> Callable[[], str]:
    return lambda: path.read_text(errors="replace")[-3000:] if path.exists() else ""


class _HeldHandler:
    """An SMTP relay whose first DATA answer is held until released: a send in flight.

    Every DATA that arrives complete is recorded, answered or not: the worst case for
    duplicates (a relay that has queued the message before its 250 reached the client).
    """

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.message_ids: list[str] = []
        self._held = False

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        if not self._held:
            self._held = True
            self.arrived.set()
            deadline = time.monotonic() + 30
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self.message_ids.append(message_id_of(raw if isinstance(raw, bytes) else raw.encode()))
        return "250 2.0.0 OK"


# -- the broker ---------------------------------------------------------------------------


def test_redis_killed_mid_burst_and_restarted_empty_sends_every_notification_once(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    port = free_port()
    with private_redis(port) as restart:
        rt = build_runtime(make_settings, outbound_smtp_url=smtp_sink.url, redis_url=f"redis://127.0.0.1:{port}/0")
        try:
            with running(rt, redis_namespace, sweep_grace=0.3):
                killer = None
                for i in range(30):
                    number = open_email_ticket(rt, email=f"user{i}@customer.example", first_message_id=f"f{i}@x")
                    move(rt, number, "Cita agendada")
                    if i == 14:  # mid-burst: some sent, some queued, some in flight
                        killer = threading.Thread(target=restart, name="redis-restart")
                        killer.start()
                assert killer is not None
                killer.join(30)
                rows = outbox_rows(rt)
                assert len(rows) == 30
                for row in rows:
                    wait_status(rt, row.id, "sent", timeout=40)
                received = smtp_sink.wait_for_mail(30, timeout=10)
            ids = [m.message["Message-ID"].strip("<>") for m in smtp_sink.messages]
            assert len(received) == len(ids) == 30, "a notification was sent twice"
            assert sorted(ids) == sorted(r.provider_id for r in outbox_rows(rt))
        finally:
            rt.close()


# -- a worker dying mid-send -----------------------------------------------------------------


def test_a_worker_sigkilled_mid_send_leaves_a_claim_the_next_worker_takes_after_it_expires(
    make_settings: Callable[..., Settings], cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The sink holds the first DATA answer; the worker is killed while it waits for it.

    The first DATA did complete on the wire, so a relay may have queued the mail although
    the worker never learned it (RFC 1047's duplicate delivery): such a relay would hold two
    copies, but they carry one Message-ID (the row's), so the recipient's client shows one
    mail. The database records one send and one outbound message.
    """
    handler = _HeldHandler()
    relay = Controller(handler, hostname="127.0.0.1", port=free_port(), server_hostname="relay.localhost")
    relay.start()
    rt = Runtime.build(make_settings())
    env = {**cli_env, "HELPDESK_OUTBOUND_SMTP_URL": f"smtp://127.0.0.1:{relay.port}",
           "HELPDESK_SWEEP_INTERVAL_SECONDS": "0.2", "HELPDESK_LOG_LEVEL": "INFO"}
    logs = [tmp_path / "worker1.log", tmp_path / "worker2.log"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        open_email_ticket(rt, acknowledge=True)  # committed without a publisher: the sweeper finds it
        [row] = outbox_rows(rt, "ack")
        with open(logs[0], "wb") as err:
            procs.append(subprocess.Popen([HELPDESK, "worker", "--threads", "2"], env=env, stderr=err))
        assert handler.arrived.wait(30), log_of(logs[0])()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        handler.release.set()  # the dead worker's DATA now "completes" at the relay
        claimed = wait_status(rt, row.id, "sending")
        assert claimed.attempts == 1
        with open(logs[1], "wb") as err:
            procs.append(subprocess.Popen([HELPDESK, "worker", "--threads", "2"], stderr=err,
                                          env={**env, "HELPDESK_SEND_CLAIM_SECONDS": "2"}))
        sent = wait_status(rt, row.id, "sent", timeout=40)
        assert sent.attempts == 2 and sent.claim_token is None
        # Recorded before the 250 that made the row sent. aiosmtpd cancels the handler of a
        # connection that dropped, so this relay has one copy; one that queues before it
        # answers would have two, with the same Message-ID.
        assert set(handler.message_ids) == {sent.provider_id}, "one Message-ID however often it arrived"
        assert 1 <= len(handler.message_ids) <= 2
        assert count(rt, Message, Message.outbox_id == row.id) == 1
    finally:
        handler.release.set()
        for proc in procs:
            stop_process(proc)
        relay.stop()
        rt.close()


# -- the SMTP door dying after its 250 -------------------------------------------------------


def _burst(port: int, mails: list[bytes], connections: int = 4) -> int:
    """Send ``mails`` over ``connections`` smtplib clients; returns how many got a 250."""
    accepted = [0] * connections

    def client(k: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            for data in mails[k::connections]:
                smtp.sendmail("cliente@cliente.mx", [INBOX], data)
                accepted[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sum(accepted)


def test_helpdesk_smtp_sigkilled_after_its_250s_threads_every_accepted_mail_once_after_restart(
    rt: Runtime, cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    firsts = [f"burst{i}@cliente.mx" for i in range(100)]
    mails = [mail(sender=f"cliente{i}@cliente.mx", subject=f"Unidad {i} sin frenos", message_id=f"<{mid}>")
             for i, mid in enumerate(firsts)]
    mails += [mail(sender=f"cliente{i}@cliente.mx", subject=f"Re: Unidad {i} sin frenos",
                   message_id=f"<reply{i}@cliente.mx>", in_reply_to=mid, body="Sigue igual, gracias.")
              for i, mid in enumerate(firsts)]
    log = tmp_path / "smtp.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for attempt in range(2):
            with open(log, "ab") as err:
                procs.append(subprocess.Popen([HELPDESK, "smtp", "--listen", f"127.0.0.1:{port}"],
                                              env=cli_env, stderr=err))
            wait_until(lambda: port_is_open("127.0.0.1", port), timeout=30, message=log_of(log))
            if attempt == 0:
                accepted = _burst(port, mails)
                procs[0].send_signal(signal.SIGKILL)  # right after the last 250
                procs[0].wait(10)
                assert accepted == 200 == count(rt, RawMessage)
        wait_until(lambda: count(rt, RawMessage, RawMessage.status.in_(["pending", "processing"])) == 0,
                   timeout=60, message=log_of(log))
        assert count(rt, RawMessage, RawMessage.status == "done") == 200, log_of(log)()
        with rt.sessions() as session:
            ids = session.scalars(select(Message.external_id).where(Message.direction == "in")).all()
        assert len(ids) == len(set(ids)) == 200
        assert count(rt, Ticket) == 100  # every reply joined its request
    finally:
        for proc in procs:
            stop_process(proc)


# -- the outbound relay down -----------------------------------------------------------------


def test_a_relay_refusing_connections_for_a_while_gets_every_notification_once_when_back(
    make_settings: Callable[..., Settings], smtp_sink: SmtpSink, redis_namespace: str
) -> None:
    """Connection refused (a stopped relay) is temporary: rows wait with backoff and go
    out once the relay listens again on the same port (451/550 answers: test_outbound_email)."""
    proxy = TcpProxy("127.0.0.1", smtp_sink.port).start()
    rt = build_runtime(make_settings, outbound_smtp_url=f"smtp://127.0.0.1:{proxy.port}")
    try:
        proxy.cut()
        with running(rt, redis_namespace, sweep_grace=0.2):
            for i in range(5):
                move(rt, open_email_ticket(rt, email=f"u{i}@customer.example", first_message_id=f"r{i}@x"),
                     "Cita agendada")
            wait_until(lambda: all(r.attempts >= 2 for r in outbox_rows(rt)), timeout=20,
                       message=lambda: str([(r.status, r.attempts, r.last_error) for r in outbox_rows(rt)]))
            assert {r.status for r in outbox_rows(rt)} <= {"pending", "sending"} and not smtp_sink.messages
            proxy.restore()
            for row in outbox_rows(rt):
                wait_status(rt, row.id, "sent", timeout=20)
        ids = [m.message["Message-ID"] for m in smtp_sink.messages]
        assert len(ids) == len(set(ids)) == 5
    finally:
        rt.close()
        proxy.stop()


# -- two doors, one mail ---------------------------------------------------------------------


def test_fifty_mails_each_delivered_by_smtp_and_imap_at_once_are_fifty_messages_on_fifty_tickets(
    make_settings: Callable[..., Settings], dovecot: Dovecot, imap_url: str
) -> None:
    settings = make_settings(imap_url=imap_url, inbox_addresses=[INBOX, INBOX_USER])
    smtp_rt, imap_rt = Runtime.build(settings), Runtime.build(settings)  # two processes' pools
    smtp_bg = BackgroundProcessor(Processor(smtp_rt.sessions, settings, smtp_rt.catalog), 0.3).start()
    imap_bg = BackgroundProcessor(Processor(imap_rt.sessions, settings, imap_rt.catalog), 0.3).start()
    door = make_controller(settings, smtp_rt.sessions, smtp_bg.submit, f"127.0.0.1:{free_port()}")
    door.start()
    poller = ImapPoller(settings, imap_rt.sessions, on_kept=imap_bg.submit, owner="faults",
                        backoff_initial=0.1, backoff_max=0.5, poll_seconds=300.0)  # type: ignore[arg-type]
    stop = threading.Event()
    polling = threading.Thread(target=poller.run, args=(stop,), name="imap-poller")
    polling.start()
    mails = [mail(sender=f"Cliente {i} <c{i}@cliente.mx>", to=INBOX, subject=f"Unidad {i} no enciende",
                  message_id=f"<both{i}@cliente.mx>") for i in range(50)]

    def via_smtp(share: list[bytes]) -> None:
        with smtplib.SMTP(door.hostname, door.port, timeout=30) as client:
            for data in share:
                client.sendmail("cliente@cliente.mx", [INBOX], data)

    def via_imap(share: list[bytes]) -> None:
        with dovecot.client(INBOX_USER) as client:  # Dovecot allows 10 connections per user and IP
            for data in share:
                client.append("INBOX", data)

    try:
        threads = [threading.Thread(target=via_smtp, args=(mails[k::10],)) for k in range(10)]
        threads += [threading.Thread(target=via_imap, args=(mails[k::5],)) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        wait_until(lambda: count(smtp_rt, RawMessage) == 100, timeout=40,
                   message=lambda: f"{count(smtp_rt, RawMessage)} raw messages kept")
        wait_until(lambda: count(smtp_rt, RawMessage, RawMessage.status == "pending") == 0, timeout=40)
        assert count(smtp_rt, RawMessage, RawMessage.status == "done") == 100
        assert count(smtp_rt, Message) == 50
        assert count(smtp_rt, Ticket) == 50
    finally:
        stop.set()
        polling.join(15)
        door.stop()
        smtp_bg.stop()
        imap_bg.stop()
        smtp_rt.close()
        imap_rt.close()

