"""The IMAP door (imapclient): take new mail from a mailbox, keep it, then mark it.

- The cursor (UIDVALIDITY, last UID) lives in ``MailboxState`` and advances in the same
  transaction that keeps a batch of raw messages, so a restart or a crash neither skips
  nor repeats a message. A new UIDVALIDITY means the UIDs were renumbered: everything is
  read again (the pipeline dedupes by Message-ID) and the new validity is recorded.
- Messages are fetched with ``BODY.PEEK[]`` and marked ``\\Seen`` (or moved to the done
  folder) only after the commit: a message is never marked that was not kept.
- One poller per mailbox: a lease (``lease_owner``, ``lease_until``) taken and renewed by
  a conditional UPDATE. The keep transaction checks the owner too, so a poller that lost
  its lease while stalled cannot keep anything (nor move the cursor) behind the new owner.
- IDLE where offered (re-issued every ``idle_seconds``, well before the 29 minutes of
  RFC 2177), polling otherwise; lost connections are retried with capped exponential
  backoff, and a database that cannot commit stops the batch with nothing marked.

Errors::

    TemporaryFailure    the database cannot commit now: back off, nothing marked
    LeaseLost           another poller owns the mailbox now: drop the connection, wait
    IMAPClientError, OSError    the server went away: reconnect with backoff
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from inbound.keep import TemporaryFailure
from models.base import utcnow
from models.mailbox import MailboxState, ensure_row, release_lease, take_lease
from models.message import RawMessage

log = logging.getLogger("helpdesk.inbound.imap")
RESYNC_SECONDS = 10.0  # longest wait in IDLE before searching for new mail anyway

CONNECTION_ERRORS = (IMAPClientError, OSError)
SEEN = b"\\Seen"


class LeaseLost(Exception):
    """Another poller holds this mailbox's lease now."""


@dataclass(frozen=True)
class ImapTarget:
    """Where to log in, from ``IMAP_URL`` (user and password URL-decoded)."""

    secure: bool
    host: str
    port: int
    user: str
    password: str
    mailbox: str

    @classmethod
    def parse(cls, url: str) -> ImapTarget:
        """Raises: ValueError for a URL that is not imap:// or imaps:// with a user."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise ValueError("IMAP_URL must look like imaps://user:password@host:993/INBOX")
        secure = parts.scheme == "imaps"
        return cls(
            secure=secure, host=parts.hostname, port=parts.port or (993 if secure else 143),
            user=unquote(parts.username), password=unquote(parts.password or ""),
            mailbox=unquote(parts.path.lstrip("/")) or "INBOX",
        )

    @property
    def key(self) -> str:
        """The mailbox's row in ``mailbox_state``: ``user@host/mailbox``."""
        return f"{self.user}@{self.host}/{self.mailbox}"


class ImapPoller:
    """Takes new mail from one mailbox into ``raw_messages``; see the module docstring.

    Parameters:
        settings: ``imap_url``, ``imap_poll_seconds``, ``imap_done_folder``, inboxes.
        sessions: the database's session factory.
        on_kept: called with each raw id after its batch is committed (e.g.
            ``BackgroundProcessor.submit``); its failures are logged, never raised.
        owner: the lease owner's name (default host:pid:random), unique per poller.
        batch_size, batch_bytes: the most messages and bytes fetched and kept at once.
        lease_seconds: how long a lease lasts without renewal; renewed every third.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        on_kept: Callable[[int], None] | None = None,
        owner: str | None = None,
        *,
        poll_seconds: float | None = None,
        idle_seconds: float = 25 * 60,
        lease_seconds: float = 60.0,
        batch_size: int = 200,
        batch_bytes: int = 64 * 1024 * 1024,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not settings.imap_url:
            raise ValueError("HELPDESK_IMAP_URL is not set")
        self.target = ImapTarget.parse(settings.imap_url)
        self.key = self.target.key
        self.sessions = sessions
        self.on_kept = on_kept
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.done_folder = settings.imap_done_folder
        inbox = self.target.user.lower()
        self.envelope_to = inbox if inbox in settings.inbox_map else None
        self.poll_seconds = settings.imap_poll_seconds if poll_seconds is None else poll_seconds
        self.idle_seconds = idle_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.kept = 0
        self._client: IMAPClient | None = None
        self._renew_at = 0.0  # monotonic time of the next lease renewal
        self._row_ready = False
        self._validity = 0
        self._unmarked: tuple[int, list[int]] | None = None  # kept, but the marking failed

    def poll_once(self) -> int:
        """Take what is new now, if this poller can hold the lease; returns how many.

        Raises:
            TemporaryFailure: the database cannot commit; nothing of the batch is marked.
            IMAPClientError, OSError: the server went away (the connection is dropped).
        """
        if not self._take_lease():
            return 0
        try:
            return self._sync(self._connected())
        except (*CONNECTION_ERRORS, LeaseLost):
            self._drop()
            raise

    def run(self, stop: threading.Event) -> None:
        """Poll (IDLE when offered) until ``stop`` is set, then log out and free the lease."""
        delay = self.backoff_initial
        try:
            while not stop.is_set():
                try:
                    if not self._take_lease():
                        self._drop()
                        stop.wait(min(self.lease.total_seconds() / 3, 5.0))
                        continue
                    client = self._connected()
                    self._sync(client)
                    delay = self.backoff_initial
                    self._wait_for_mail(client, stop)
                except LeaseLost:
                    log.warning("%s: lease taken over by another poller", self.key)
                    self._drop()
                except (TemporaryFailure, *CONNECTION_ERRORS) as exc:
                    log.warning("%s: %s: %s; retrying in %.1fs", self.key, type(exc).__name__, exc, delay)
                    if not isinstance(exc, TemporaryFailure):  # the database's: keep the connection
                        self._drop()
                    stop.wait(delay)
                    delay = min(delay * 2, self.backoff_max)
        finally:
            self.close()

    def close(self) -> None:
        """Log out and release the lease so that another poller takes over at once."""
        if self._client is not None:
            with contextlib.suppress(Exception):  # the server may be gone already
                self._client.logout()
            self._drop()
        try:
            with self._transaction() as session:
                release_lease(session, self.key, self.owner)
        except TemporaryFailure as exc:  # it simply expires
            log.warning("%s: could not release the lease: %s", self.key, exc)

    def __enter__(self) -> ImapPoller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Session]:
        try:
            with self.sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
            raise TemporaryFailure(f"database unavailable: {reason}") from exc

    def _take_lease(self) -> bool:
        """Take or renew the lease (compare-and-set); True when this poller holds it."""
        if not self._row_ready:
            with self._transaction() as session:
                ensure_row(session, self.key)
            self._row_ready = True
        with self._transaction() as session:
            held = take_lease(session, self.key, self.owner, self.lease)
        if held:
            self._renew_at = time.monotonic() + self.lease.total_seconds() / 3
        return held

    def _renew_if_due(self) -> None:
        if time.monotonic() >= self._renew_at and not self._take_lease():
            raise LeaseLost(self.key)

    def _connected(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        t = self.target
        client = IMAPClient(t.host, t.port, ssl=t.secure, ssl_context=self.ssl_context, timeout=self.timeout)
        try:
            if not t.secure and b"STARTTLS" in client.capabilities():
                client.starttls(self.ssl_context)
            client.login(t.user, t.password)
            if self.done_folder and not client.folder_exists(self.done_folder):
                client.create_folder(self.done_folder)
            self._validity = int(client.select_folder(t.mailbox)[b"UIDVALIDITY"])
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        self._client = client
        log.info("%s: connected (%s)", self.key, "IDLE" if client.has_capability("IDLE") else "polling")
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    def _sync(self, client: IMAPClient) -> int:
        """Keep every message after the cursor, batch by batch; returns how many.

        It loops until a search finds nothing new and no ``EXISTS`` came with it: mail
        the server announced during our FETCH, STORE or SEARCH is not announced again
        when IDLE starts, so leaving it for IDLE would leave it until the next delivery.
        """
        validity = self._validity  # fixed while the mailbox is selected (RFC 3501 2.3.1.1)
        last_uid = self._cursor(validity)
        if self._unmarked is not None:  # kept before the connection dropped: mark them now
            if self._unmarked[0] == validity:
                self._mark(client, self._unmarked[1])
            self._unmarked = None
        announced = client._imap.untagged_responses  # what imapclient's commands left unread
        total = 0
        while True:
            announced.clear()
            client.noop()  # a selected mailbox shows other connections' mail only after a sync
            new = sorted(uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)
            if not new and "EXISTS" not in announced:
                return total
            if new:
                total += self._take_all(client, validity, last_uid, new)
                last_uid = new[-1]

    def _take_all(self, client: IMAPClient, validity: int, last_uid: int, new: list[int]) -> int:
        """Keep ``new`` in batches bounded by count and by bytes."""
        sizes = client.fetch(new, [b"RFC822.SIZE"])
        total = 0
        batch: list[int] = []
        batch_bytes = 0
        for uid in new:
            size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
            if batch and (len(batch) >= self.batch_size or batch_bytes + size > self.batch_bytes):
                total += self._take(client, validity, last_uid, batch)
                last_uid, batch, batch_bytes = batch[-1], [], 0
            batch.append(uid)
            batch_bytes += size
        return total + self._take(client, validity, last_uid, batch)

    def _cursor(self, validity: int) -> int:
        """The last UID kept, after starting over when the UIDVALIDITY changed."""
        with self._transaction() as session:
            state = session.scalar(select(MailboxState).where(MailboxState.mailbox == self.key))
            if state is None or state.lease_owner != self.owner:
                raise LeaseLost(self.key)
            if state.uidvalidity != validity:
                if state.uidvalidity is not None:
                    log.warning("%s: UIDVALIDITY %s → %s: reading the mailbox again",
                                self.key, state.uidvalidity, validity)
                state.uidvalidity, state.last_uid = validity, 0
                state.version += 1
            return int(state.last_uid)

    def _take(self, client: IMAPClient, validity: int, last_uid: int, uids: list[int]) -> int:
        """Fetch, keep and advance the cursor in one transaction, then mark the batch."""
        fetched = client.fetch(uids, [b"BODY.PEEK[]"])
        rows = [
            {"source": "imap", "data": bytes(fetched[uid][b"BODY[]"]), "envelope_from": None,
             "envelope_to": self.envelope_to, "status": "pending", "attempts": 0, "received_at": utcnow()}
            for uid in uids if uid in fetched and fetched[uid].get(b"BODY[]") is not None
        ]
        with self._transaction() as session:
            moved = session.execute(
                update(MailboxState)
                .where(MailboxState.mailbox == self.key, MailboxState.lease_owner == self.owner,
                       MailboxState.uidvalidity == validity, MailboxState.last_uid == last_uid)
                .values(last_uid=uids[-1], lease_until=utcnow() + self.lease,
                        version=MailboxState.version + 1)
            ).rowcount
            if moved != 1:  # rolled back: a poller that lost its lease keeps nothing
                raise LeaseLost(self.key)
            ids = list(session.scalars(
                insert(RawMessage).returning(RawMessage.id, sort_by_parameter_order=True), rows
            )) if rows else []
        self.kept += len(ids)
        for raw_id in ids:
            if self.on_kept is not None:
                try:
                    self.on_kept(raw_id)
                except Exception:  # kept already: the pending sweep processes it
                    log.exception("could not schedule processing of raw %s", raw_id)
        self._unmarked = (validity, uids)
        self._mark(client, uids)
        self._unmarked = None
        log.info("%s: kept %d message(s), UIDs %s..%s", self.key, len(ids), uids[0], uids[-1])
        return len(ids)

    def _mark(self, client: IMAPClient, uids: list[int]) -> None:
        """After the commit: move to the done folder, or flag \\Seen."""
        if not self.done_folder:
            client.add_flags(uids, [SEEN], silent=True)
        elif client.has_capability("MOVE"):
            client.move(uids, self.done_folder)
        else:
            client.copy(uids, self.done_folder)
            client.add_flags(uids, [b"\\Deleted"], silent=True)
            client.expunge(uids)

    def _wait_for_mail(self, client: IMAPClient, stop: threading.Event) -> None:
        """Return when new mail may be there, renewing the lease meanwhile.

        With IDLE: on any response, or an early wake-up without one (how imapclient shows
        a closed connection: the poll that follows finds out), or after ``idle_seconds``.
        """
        step = 0.5
        if not client.has_capability("IDLE"):
            deadline = time.monotonic() + self.poll_seconds
            while not stop.is_set() and time.monotonic() < deadline:
                stop.wait(min(step, max(deadline - time.monotonic(), 0)))
                self._renew_if_due()
            return
        client.idle()
        try:
            # Never trust IDLE alone: a notice lost between our last SEARCH and IDLE would
            # leave mail waiting until the next one; a short re-sync bounds that delay.
            deadline = time.monotonic() + min(self.idle_seconds, RESYNC_SECONDS)
            while not stop.is_set() and time.monotonic() < deadline:
                if _buffered(client):
                    return
                started = time.monotonic()
                responses = client.idle_check(timeout=step)
                self._renew_if_due()
                if responses or time.monotonic() - started < step * 0.8:
                    return
        finally:
            client.idle_done()


def _buffered(client: IMAPClient) -> bool:
    """Whether server lines already sit in imaplib's read buffer, unseen by ``idle_check``.

    ``idle_check`` polls only the socket: an ``EXISTS`` that came in one packet with IDLE's
    ``+ idling`` (mail delivered just before the IDLE) would wait for the next packet.
    """
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(client._imap.file.peek(1))  # imaplib's buffered reader of the socket
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(timeout)
