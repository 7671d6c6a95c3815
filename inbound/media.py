"""Fetching WhatsApp media after the message is committed, and retrying until it is stored.

Why after the commit and not in the webhook: Twilio wants its answer within seconds and a
photo may take longer to download; the message (with the media URL) is already safe in
the database, so a slow or failed download loses nothing. Each attachment row keeps its
``source_url`` until the bytes are stored as a ``Blob`` (once per sha256, however often
the same photo is sent); the message text says the file is pending meanwhile.

``fetch_pending_media`` is safe to run from several processes at once (the web process's
background thread and ``helpdesk worker``): an attachment is claimed with one conditional
UPDATE of its ``fetch_after`` before it is downloaded.

Errors (none escape ``fetch_pending_media``; each is recorded on the attachment)::

    MediaError          the download failed (HTTP status, network, too large): retried
                        with backoff up to ``RetryPolicy.max_attempts``, then left alone
                        with ``fetch_error`` set and the URL kept for an operator
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from models.base import utcnow
from models.message import Attachment, Blob, Message

log = logging.getLogger("helpdesk.media")

PENDING_MARK = "pendiente de descarga"


class MediaError(Exception):
    """The media could not be downloaded now; the message says why."""


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed download is tried again: ``first_delay`` doubling up to ``max_delay``."""

    first_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)
    max_attempts: int = 12
    claim: timedelta = timedelta(minutes=5)

    def delay(self, attempts: int) -> timedelta:
        return min(self.first_delay * (2 ** max(attempts - 1, 0)), self.max_delay)


@dataclass
class FetchReport:
    stored: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def pending_line(filename: str) -> str:
    """The line a message carries while its file has not been downloaded."""
    return f"[Adjunto: {filename} — {PENDING_MARK}]"


def stored_line(filename: str) -> str:
    return f"[Adjunto: {filename}]"


def download(url: str, settings: Settings, client: httpx.Client) -> bytes:
    """The bytes at ``url``, fetched with the account's credentials (HTTP basic auth).

    Twilio answers media URLs with a redirect to its CDN; httpx drops the credentials on
    a redirect to another host, so they never leave for a third party.

    Raises:
        MediaError: any HTTP error status, a network failure or a file above the limit.
    """
    auth = None
    if settings.twilio_account_sid and settings.twilio_auth_token:
        auth = httpx.BasicAuth(settings.twilio_account_sid, settings.twilio_auth_token)
    limit = settings.max_message_bytes
    try:
        with client.stream("GET", url, auth=auth) as response:
            if response.status_code >= 400:
                raise MediaError(f"HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise MediaError(f"larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise MediaError(f"{type(exc).__name__}: {exc}") from exc


def store_blob(session: Session, data: bytes) -> str:
    """The sha256 of ``data``, stored once: a concurrent insert of the same bytes wins."""
    digest = hashlib.sha256(data).hexdigest()
    if session.get(Blob, digest) is not None:
        return digest
    try:
        with session.begin_nested():
            session.add(Blob(sha256=digest, size=len(data), data=data))
            session.flush()
    except IntegrityError:
        if session.get(Blob, digest) is None:
            raise
    return digest


def _due(policy: RetryPolicy, now: datetime, limit: int) -> select:  # type: ignore[type-arg]
    return (
        select(Attachment.id)
        .where(
            Attachment.source_url.is_not(None),
            Attachment.sha256.is_(None),
            Attachment.fetch_attempts < policy.max_attempts,
            or_(Attachment.fetch_after.is_(None), Attachment.fetch_after <= now),
        )
        .order_by(Attachment.id)
        .limit(limit)
    )


def _claim(sessions: sessionmaker[Session], attachment_id: int, policy: RetryPolicy, now: datetime) -> bool:
    """Take the attachment for ``policy.claim``; False when another process has it."""
    with sessions.begin() as session:
        result = session.execute(
            update(Attachment)
            .where(
                Attachment.id == attachment_id,
                Attachment.sha256.is_(None),
                or_(Attachment.fetch_after.is_(None), Attachment.fetch_after <= now),
            )
            .values(fetch_after=now + policy.claim)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def _record_success(sessions: sessionmaker[Session], attachment_id: int, data: bytes) -> None:
    with sessions.begin() as session:
        attachment = session.get(Attachment, attachment_id)
        if attachment is None or attachment.sha256 is not None:
            return
        attachment.sha256 = store_blob(session, data)
        attachment.size = len(data)
        attachment.source_url = None
        attachment.fetch_error = None
        attachment.fetch_after = None
        message = session.get(Message, attachment.message_id)
        if message is not None:
            message.text = message.text.replace(
                pending_line(attachment.filename), stored_line(attachment.filename)
            )


def _record_failure(sessions: sessionmaker[Session], attachment_id: int, error: str,
                    policy: RetryPolicy, now: datetime) -> None:
    with sessions.begin() as session:
        attachment = session.get(Attachment, attachment_id)
        if attachment is None or attachment.sha256 is not None:
            return
        attachment.fetch_attempts = (attachment.fetch_attempts or 0) + 1
        attachment.fetch_error = error[:500]
        attachment.fetch_after = now + policy.delay(attachment.fetch_attempts)


def fetch_pending_media(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    policy: RetryPolicy | None = None,
    limit: int = 50,
    now: datetime | None = None,
) -> FetchReport:
    """Download every attachment whose bytes are still missing and due for a try.

    Call it right after a WhatsApp message is committed and then periodically (the web
    process's background thread does both; ``helpdesk worker`` may too). Never raises for
    a failed download: the failure is recorded on the row and retried later.
    """
    policy = policy or RetryPolicy()
    now = now or utcnow()
    report = FetchReport()
    with sessions() as session:
        due = list(session.scalars(_due(policy, now, limit)))
    if not due:
        return report
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True) as client:
        for attachment_id in due:
            if not _claim(sessions, attachment_id, policy, now):
                continue
            with sessions() as session:
                url = session.scalar(select(Attachment.source_url).where(Attachment.id == attachment_id))
            if not url:
                continue
            try:
                data = download(url, settings, client)
            except MediaError as exc:
                log.warning("attachment %s: download failed (%s); will retry", attachment_id, exc)
                _record_failure(sessions, attachment_id, str(exc), policy, utcnow())
                report.failed.append(attachment_id)
                continue
            _record_success(sessions, attachment_id, data)
            report.stored.append(attachment_id)
    return report
