"""`helpdesk imap` against a real Dovecot: keep, thread, mark; resume; IDLE; reconnect; lease.

Every DB test runs on SQLite and PostgreSQL. Mail is APPENDed by another connection, as a
delivery would; the poller is watched through the database and through Dovecot's flags.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlalchemy import select, text

from config.settings import Settings
from inbound.imap import ImapPoller, ImapTarget
from inbound.keep import TemporaryFailure
from inbound.process import Processor
from inbound.runner import BackgroundProcessor
from models.mailbox import MailboxState
from models.message import RawMessage
from models.ticket import Ticket
from tests.cli_helpers import HELPDESK
from tests.support.dovecot import Dovecot
from tests.support.fixtures import INBOX_USER
from tests.support.ports import wait_until
from worker.runtime import Runtime

INBOX = "inbox@jhleasing.mx"
SEEN = "\\Seen"


def mail(n: int, tag: str = "") -> bytes:
    """A customer's mail with its own sender and Message-ID."""
    msg = EmailMessage()
    msg["From"] = f"Cliente {n} <cliente{n}{tag}@example.com>"
    msg["To"] = INBOX
    msg["Subject"] = f"Falla en la unidad {n}{tag}"
    msg["Message-ID"] = f"<imap-{n}{tag}-{uuid.uuid4().hex[:12]}@example.com>"
    msg.set_content(f"Hola, la unidad {n} no enciende desde ayer.\n")
    return msg.as_bytes()


def message_ids(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        blobs = session.scalars(select(RawMessage.data).where(RawMessage.source == "imap")).all()
    return [str(BytesParser(policy=default_policy).parsebytes(b)["Message-ID"]) for b in blobs]


def raw_count(rt: Runtime) -> int:
    return len(message_ids(rt))


def tickets(rt: Runtime) -> list[Ticket]:
    with rt.sessions() as session:
        return list(session.scalars(select(Ticket)))


def state(rt: Runtime, poller: ImapPoller) -> MailboxState | None:
    with rt.sessions() as session:
        return session.get(MailboxState, poller.key)


@pytest.fixture
def imap_settings(make_settings: Callable[..., Settings], imap_url: str) -> Callable[..., Settings]:
    def factory(**overrides: object) -> Settings:
        values: dict[str, object] = {"imap_url": imap_url, "inbox_addresses": [INBOX]}
        values.update(overrides)
        return make_settings(**values)

    return factory


@pytest.fixture
def imap_rt(imap_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    runtime = Runtime.build(imap_settings())
    yield runtime
    runtime.close()


@pytest.fixture
def background(imap_rt: Runtime) -> Iterator[BackgroundProcessor]:
    """Threads what the poller hands it; the sweep is slow, so only ``submit`` counts."""
    processor = BackgroundProcessor(Processor(imap_rt.sessions, imap_rt.settings, imap_rt.catalog), 600)
    yield processor.start()
    processor.stop()


def make_poller(rt: Runtime, owner: str, on_kept: Callable[[int], None] | None = None,
                **options: object) -> ImapPoller:
    options = {"backoff_initial": 0.1, "backoff_max": 0.5, "poll_seconds": 300.0, **options}
    return ImapPoller(rt.settings, rt.sessions, on_kept=on_kept, owner=owner, **options)  # type: ignore[arg-type]


@contextmanager
def running(poller: ImapPoller) -> Iterator[threading.Event]:
    """``poller.run`` in a thread, stopped and joined on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), name=f"poller-{poller.owner}")
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the poller did not stop"


def test_three_appended_mails_are_kept_threaded_and_marked_seen_only_after(
    imap_rt: Runtime, dovecot: Dovecot, background: BackgroundProcessor
) -> None:
    uids = [dovecot.append(INBOX_USER, "INBOX", mail(n)) for n in range(3)]
    seen_at_handover: list[tuple[int, bool, bool]] = []

    def on_kept(raw_id: int) -> None:  # runs between the commit and the marking
        with imap_rt.sessions() as session:
            committed = session.get(RawMessage, raw_id) is not None
        flags = dovecot.fetch_flags(INBOX_USER, "INBOX", uids)
        seen_at_handover.append((raw_id, committed, any(SEEN in f for f in flags.values())))
        background.submit(raw_id)

    with make_poller(imap_rt, "a", on_kept) as poller:
        assert poller.poll_once() == 3
    assert [(committed, seen) for _, committed, seen in seen_at_handover] == [(True, False)] * 3
    assert all(SEEN in flags for flags in dovecot.fetch_flags(INBOX_USER, "INBOX", uids).values())
    with imap_rt.sessions() as session:
        rows = session.scalars(select(RawMessage)).all()
    assert {(r.source, r.envelope_to) for r in rows} == {("imap", INBOX)}
    wait_until(lambda: len(tickets(imap_rt)) == 3, message=lambda: f"tickets: {tickets(imap_rt)}")
    assert {t.subject for t in tickets(imap_rt)} == {f"Falla en la unidad {n}" for n in range(3)}


def test_a_new_poller_resumes_where_the_last_stopped_without_repeating_or_skipping(
    imap_rt: Runtime, dovecot: Dovecot
) -> None:
    for n in range(3):
        dovecot.append(INBOX_USER, "INBOX", mail(n))
    with make_poller(imap_rt, "first") as first:
        assert first.poll_once() == 3
    with make_poller(imap_rt, "second") as second:
        assert second.poll_once() == 0
        for n in range(3, 5):
            dovecot.append(INBOX_USER, "INBOX", mail(n))
        assert second.poll_once() == 2
        assert second.poll_once() == 0
    ids = message_ids(imap_rt)
    assert len(ids) == 5 and len(set(ids)) == 5
    saved = state(imap_rt, second)
    assert saved is not None
    assert (saved.uidvalidity, saved.last_uid) == (dovecot.uidvalidity(INBOX_USER), 5)
    assert saved.lease_owner is None  # released on close


def test_a_new_uidvalidity_reads_the_mailbox_again(
    imap_settings: Callable[..., Settings], dovecot: Dovecot
) -> None:
    dovecot.create_mailbox(INBOX_USER, "Soporte")
    rt = Runtime.build(imap_settings(imap_url=dovecot.url(INBOX_USER, "Soporte")))
    try:
        first = [mail(n) for n in range(2)]
        for raw in first:
            dovecot.append(INBOX_USER, "Soporte", raw)
        old_validity = dovecot.uidvalidity(INBOX_USER, "Soporte")
        with make_poller(rt, "a") as poller:
            assert poller.poll_once() == 2
        with dovecot.client(INBOX_USER) as imap:  # the mailbox is rebuilt: UIDs start over
            imap.delete_folder("Soporte")
            imap.create_folder("Soporte")
        for raw in [*first, mail(2)]:
            dovecot.append(INBOX_USER, "Soporte", raw)
        new_validity = dovecot.uidvalidity(INBOX_USER, "Soporte")
        assert new_validity != old_validity
        with make_poller(rt, "a") as poller:
            assert poller.poll_once() == 3  # the first two again: the pipeline dedupes them
            saved = state(rt, poller)
        assert saved is not None and (saved.uidvalidity, saved.last_uid) == (new_validity, 3)
        assert raw_count(rt) == 5
    finally:
        rt.close()


def test_a_running_poller_takes_new_mail_at_once_through_idle(
    imap_rt: Runtime, dovecot: Dovecot, background: BackgroundProcessor
) -> None:
    poller = make_poller(imap_rt, "idle", background.submit)  # polls only every 5 minutes
    with running(poller):
        dovecot.append(INBOX_USER, "INBOX", mail(1))
        wait_until(lambda: raw_count(imap_rt) == 1, timeout=10)
        dovecot.append(INBOX_USER, "INBOX", mail(2))
        wait_until(lambda: raw_count(imap_rt) == 2, timeout=5, message="IDLE did not wake the poller")
        wait_until(lambda: len(tickets(imap_rt)) == 2, timeout=10)


def test_the_poller_reconnects_after_a_dovecot_restart_and_continues(
    imap_rt: Runtime, dovecot: Dovecot
) -> None:
    poller = make_poller(imap_rt, "r")
    with running(poller):
        dovecot.append(INBOX_USER, "INBOX", mail(1))
        wait_until(lambda: raw_count(imap_rt) == 1, timeout=10)
        dovecot.stop()
        dovecot.start()
        dovecot.append(INBOX_USER, "INBOX", mail(2))
        wait_until(lambda: raw_count(imap_rt) == 2, timeout=15, message="no reconnect")
        dovecot.restart()
        dovecot.append(INBOX_USER, "INBOX", mail(3))
        wait_until(lambda: raw_count(imap_rt) == 3, timeout=15, message="no second reconnect")
    assert len(set(message_ids(imap_rt))) == 3
    assert all(SEEN in f for f in dovecot.fetch_flags(INBOX_USER).values())


def test_two_pollers_share_one_lease_and_the_second_takes_over_when_the_first_stops(
    imap_rt: Runtime, dovecot: Dovecot
) -> None:
    pollers = {name: make_poller(imap_rt, name, lease_seconds=3.0) for name in ("a", "b")}
    with running(pollers["a"]) as stop_a, running(pollers["b"]) as stop_b:
        holder = wait_until(lambda: (s := state(imap_rt, pollers["a"])) and s.lease_owner, timeout=10)
        for n in range(3):
            dovecot.append(INBOX_USER, "INBOX", mail(n))
        wait_until(lambda: raw_count(imap_rt) == 3, timeout=10)
        assert state(imap_rt, pollers["a"]).lease_owner == holder  # type: ignore[union-attr]
        other = "b" if holder == "a" else "a"
        assert pollers[other].kept == 0 and pollers[holder].kept == 3
        (stop_a if holder == "a" else stop_b).set()
        wait_until(lambda: state(imap_rt, pollers["a"]).lease_owner == other, timeout=10)  # type: ignore[union-attr]
        for n in range(3, 5):
            dovecot.append(INBOX_USER, "INBOX", mail(n))
        wait_until(lambda: raw_count(imap_rt) == 5, timeout=10)
    ids = message_ids(imap_rt)
    assert len(ids) == 5 and len(set(ids)) == 5
    assert (pollers[holder].kept, pollers[other].kept) == (3, 2)


def test_a_holder_that_stops_renewing_loses_the_lease_and_cannot_keep_after(
    imap_rt: Runtime, dovecot: Dovecot
) -> None:
    with make_poller(imap_rt, "stalled", lease_seconds=1.0) as stalled:
        assert stalled.poll_once() == 0  # holds the lease, then never renews it
        waiting = make_poller(imap_rt, "waiting", lease_seconds=1.0)
        with running(waiting):
            dovecot.append(INBOX_USER, "INBOX", mail(1))
            wait_until(lambda: raw_count(imap_rt) == 1, timeout=10)
            dovecot.append(INBOX_USER, "INBOX", mail(2))
            wait_until(lambda: raw_count(imap_rt) == 2, timeout=10)
            assert stalled.poll_once() == 0
            assert state(imap_rt, stalled).lease_owner == "waiting"  # type: ignore[union-attr]
        assert waiting.kept == 2 and stalled.kept == 0
    assert raw_count(imap_rt) == 2


def test_a_database_failure_marks_nothing_and_the_mail_is_taken_later(
    imap_rt: Runtime, dovecot: Dovecot
) -> None:
    with make_poller(imap_rt, "a") as poller:
        assert poller.poll_once() == 0  # the lease and the cursor exist
        uid = dovecot.append(INBOX_USER, "INBOX", mail(1))
        with imap_rt.engine.begin() as conn:
            conn.execute(text("ALTER TABLE raw_messages RENAME TO raw_messages_away"))
        try:
            with pytest.raises(TemporaryFailure):
                poller.poll_once()
            assert SEEN not in dovecot.fetch_flags(INBOX_USER, "INBOX", [uid])[uid]
        finally:
            with imap_rt.engine.begin() as conn:
                conn.execute(text("ALTER TABLE raw_messages_away RENAME TO raw_messages"))
        assert poller.poll_once() == 1
    assert SEEN in dovecot.fetch_flags(INBOX_USER, "INBOX", [uid])[uid]
    assert raw_count(imap_rt) == 1


def test_kept_mail_is_moved_to_the_done_folder_when_one_is_set(
    imap_settings: Callable[..., Settings], dovecot: Dovecot
) -> None:
    rt = Runtime.build(imap_settings(imap_done_folder="Procesados"))
    try:
        for n in range(2):
            dovecot.append(INBOX_USER, "INBOX", mail(n))
        with make_poller(rt, "a") as poller:
            assert poller.poll_once() == 2
        assert dovecot.list_uids(INBOX_USER, "INBOX") == []
        assert len(dovecot.list_uids(INBOX_USER, "Procesados")) == 2
        assert raw_count(rt) == 2
    finally:
        rt.close()


def test_helpdesk_imap_takes_and_threads_mail_and_stops_on_sigterm(
    cli_env: dict[str, str], imap_url: str, dovecot: Dovecot, imap_rt: Runtime, tmp_path: Path
) -> None:
    env = {**cli_env, "HELPDESK_IMAP_URL": imap_url, "HELPDESK_INBOX_ADDRESSES": INBOX}
    for n in range(2):
        dovecot.append(INBOX_USER, "INBOX", mail(n))
    log = tmp_path / "imap.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([HELPDESK, "imap", "--owner", "cli"], env=env, stderr=stderr)
    try:
        wait_until(lambda: len(tickets(imap_rt)) == 2, timeout=20, message=lambda: log.read_text())
        dovecot.append(INBOX_USER, "INBOX", mail(2))
        wait_until(lambda: len(tickets(imap_rt)) == 3, timeout=10, message=lambda: log.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0, log.read_text()
    with imap_rt.sessions() as session:
        saved = session.scalars(select(MailboxState)).one()
    assert (saved.mailbox, saved.lease_owner) == (f"{INBOX_USER}@127.0.0.1/INBOX", None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("imaps://inbox%40jhleasing.mx:p%40ss%2Fw%3A@mail.example.com/INBOX",
         ImapTarget(True, "mail.example.com", 993, INBOX, "p@ss/w:", "INBOX")),
        ("imap://soporte:secret@127.0.0.1:1143", ImapTarget(False, "127.0.0.1", 1143, "soporte", "secret", "INBOX")),
        ("imap://soporte:s@host/Entrada%20clientes",
         ImapTarget(False, "host", 143, "soporte", "s", "Entrada clientes")),
    ],
)
def test_imap_urls_give_login_and_mailbox_url_decoded(url: str, expected: ImapTarget) -> None:
    assert ImapTarget.parse(url) == expected


@pytest.mark.parametrize("url", ["http://u:p@host/INBOX", "imaps://host/INBOX", "imap:///INBOX"])
def test_an_imap_url_without_scheme_host_or_user_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="IMAP_URL"):
        ImapTarget.parse(url)
