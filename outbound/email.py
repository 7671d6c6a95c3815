"""Email out: an SMTP relay with one persistent connection per worker thread, or .eml files.

Why it is built this way:

* **One connection per thread, kept open.** A TCP and TLS handshake plus AUTH costs far
  more than a message; a worker thread keeps its own ``smtplib.SMTP`` (smtplib objects are
  not thread-safe) and reuses it for every send. A connection idle for a while is checked
  with ``NOOP`` first, and a reused connection found dead is replaced once, at once: a
  relay closing idle connections must not cost a retry delay.
* **One TLS context** for the process, made once (loading the CA store is slow).
* **STARTTLS whenever offered** on ``smtp://``; ``smtps://`` is TLS from the first byte.
  Credentials are never sent in clear text to anything but loopback.
* **Without a relay** (``helpdesk run``) each message is written to
  ``OUTBOX_DIR/<message-id>.eml``, atomically (a temporary file, then ``os.replace``), so
  a reader never sees half a file and a resend of the same row replaces the same file.

URL: ``smtp://user:pass@host:587`` or ``smtps://host:465``; ``?cafile=/path/ca.pem`` trusts
a private CA (a relay with a company certificate, the test relay).

Raises (from ``send``):
    TemporarySendError: 4xx answers, connection failures, a refused login.
    PermanentSendError: 5xx answers for the message or its recipient.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import smtplib
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from outbound.errors import PermanentSendError, TemporarySendError

#: Line endings and header encoding for the wire (CRLF, RFC 2047 words, 78 columns).
WIRE_POLICY = policy.SMTP


class PreEncoded(policy.Compat32):
    """``compat32`` for messages whose headers ``outbound.mime`` has already encoded.

    ``compat32`` wraps every string value in an ``email.header.Header`` and runs its
    folding algorithm: for the dozen plain headers of a notification, 0.3 ms of CPU, an
    eighth of the worker's whole send step. For a value of printable ASCII that fits on its line that algorithm
    returns the value unchanged, so it is written as it is; anything else (``Header``
    objects, non-ASCII, control characters, long values) still goes through it. The
    bytes are the same either way (``tests/test_wire_policy.py``).
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (isinstance(value, str) and value.isascii() and value.isprintable()
                and len(name) + 2 + len(value) <= (self.max_line_length or 0)):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)  # type: ignore[misc]


#: For messages whose headers are already encoded and folded (``outbound.compose``):
#: serializing them with an ``EmailPolicy`` would parse every header again.
ENCODED_WIRE_POLICY = PreEncoded(linesep="\r\n")


def wire_bytes(message: EmailMessage) -> bytes:
    """The message as sent: CRLF line endings, 7-bit headers."""
    encoded = not isinstance(message.policy, policy.EmailPolicy)
    return message.as_bytes(policy=ENCODED_WIRE_POLICY if encoded else WIRE_POLICY)
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
#: A connection unused for longer than this is checked with NOOP before it is trusted.
IDLE_CHECK_SECONDS = 2.0


class EmailSender(Protocol):
    """Where composed mail goes: a relay or a directory."""

    def send(self, message: EmailMessage, *, sender: str, recipients: list[str]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RelayConfig:
    """``OUTBOUND_SMTP_URL`` taken apart."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None
    cafile: str | None

    @classmethod
    def from_url(cls, url: str) -> RelayConfig:
        """Parse ``smtp://`` / ``smtps://`` URLs.

        Raises:
            ValueError: another scheme or no host; the message says which.
        """
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"OUTBOUND_SMTP_URL must start with smtp:// or smtps://, not {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("OUTBOUND_SMTP_URL has no host")
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            implicit_tls=parts.scheme == "smtps",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            cafile=query["cafile"][-1] if "cafile" in query else None,
        )

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class _Disconnected(Exception):
    """The relay closed the connection under us (internal: ``send`` decides what it means)."""


class _Connection:
    """One thread's SMTP connection and when it last did something."""

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.used_at = time.monotonic()
        self.sends = 0


class SmtpRelay:
    """Sends through the configured relay; see the module docstring.

    Parameters:
        url: ``OUTBOUND_SMTP_URL``.
        timeout: seconds for connecting and for each SMTP command.
        ssl_context: the context for STARTTLS/TLS; default: the system's CAs (plus
            ``cafile`` from the URL). Made once and shared by every connection.
        local_hostname: the name we give in EHLO; default: the machine's FQDN.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.config = RelayConfig.from_url(url)
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=self.config.cafile)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Connection] = set()
        self.connections_made = 0

    # -- public ---------------------------------------------------------------------------

    def send(self, message: EmailMessage, *, sender: str, recipients: list[str]) -> None:
        """Hand ``message`` to the relay for ``recipients`` (envelope from ``sender``).

        Raises:
            TemporarySendError / PermanentSendError: see the module docstring.
        """
        data = wire_bytes(message)
        conn = self._current()
        if conn is None:
            conn = self._connect()
        elif time.monotonic() - conn.used_at > IDLE_CHECK_SECONDS and not self._alive(conn):
            self._drop(conn)
            conn = self._connect()
        try:
            self._transact(conn, sender, recipients, data)
        except _Disconnected as exc:
            # A reused connection the relay had closed: try a fresh one once, now. A fresh
            # connection failing is a real outage: retry later, with backoff.
            if conn.sends == 0:
                raise TemporarySendError(f"relay connection lost: {exc}") from exc
            conn = self._connect()
            try:
                self._transact(conn, sender, recipients, data)
            except _Disconnected as again:
                raise TemporarySendError(f"relay connection lost: {again}") from again

    def close(self) -> None:
        """QUIT every connection this relay opened, from whichever thread."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            _quit(conn.smtp)
        self._local = threading.local()

    # -- internals ------------------------------------------------------------------------

    def _current(self) -> _Connection | None:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.smtp.sock is None:
            self._drop(conn)
            return None
        return conn

    def _connect(self) -> _Connection:
        cfg = self.config
        try:
            if cfg.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, local_hostname=self.local_hostname, timeout=self.timeout,
                    context=self.ssl_context,
                )
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, local_hostname=self.local_hostname, timeout=self.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporarySendError(f"cannot connect to the relay {cfg.host}:{cfg.port}: {exc}") from exc
        try:
            smtp.ehlo()
            if not cfg.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=self.ssl_context)
                smtp.ehlo()
            if cfg.username:
                if not (isinstance(smtp.sock, ssl.SSLSocket) or cfg.loopback):
                    raise TemporarySendError(
                        f"the relay {cfg.host} offers no TLS; refusing to send the password in clear text"
                    )
                smtp.login(cfg.username, cfg.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            _quit(smtp)
            raise TemporarySendError(
                f"the relay refused our login as {cfg.username}: {_reply_text(exc)}", code=exc.smtp_code
            ) from exc
        except (OSError, smtplib.SMTPException, TemporarySendError) as exc:
            _quit(smtp)
            if isinstance(exc, TemporarySendError):
                raise
            raise TemporarySendError(f"relay {cfg.host}:{cfg.port} set-up failed: {exc}") from exc
        conn = _Connection(smtp)
        with self._lock:
            self._open.add(conn)
            self.connections_made += 1
        self._local.conn = conn
        return conn

    def _alive(self, conn: _Connection) -> bool:
        try:
            return conn.smtp.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def _drop(self, conn: _Connection) -> None:
        with self._lock:
            self._open.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        _quit(conn.smtp)

    def _transact(self, conn: _Connection, sender: str, recipients: list[str], data: bytes) -> None:
        smtp = conn.smtp
        try:
            smtp.sendmail(sender, recipients, data)
        except smtplib.SMTPRecipientsRefused as exc:
            replies = list(exc.recipients.values())
            text = "; ".join(f"{code} {_decode(msg)}" for code, msg in replies)
            code = replies[0][0] if replies else None
            if all(c >= 500 for c, _ in replies):
                raise PermanentSendError(f"recipient refused: {text}", code=code) from exc
            raise TemporarySendError(f"recipient deferred: {text}", code=code) from exc
        except smtplib.SMTPResponseException as exc:
            if smtp.sock is None:  # 421 and friends close the connection
                self._drop(conn)
            text = _reply_text(exc)
            if 400 <= exc.smtp_code < 500:
                raise TemporarySendError(f"relay deferred the message: {text}", code=exc.smtp_code) from exc
            if exc.smtp_code >= 500:
                raise PermanentSendError(f"relay rejected the message: {text}", code=exc.smtp_code) from exc
            raise TemporarySendError(f"unexpected relay answer: {text}", code=exc.smtp_code) from exc
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            self._drop(conn)
            raise _Disconnected(str(exc) or type(exc).__name__) from exc
        except OSError as exc:  # timeouts, TLS errors: the connection is in an unknown state
            self._drop(conn)
            raise TemporarySendError(f"relay connection failed: {exc}") from exc
        conn.used_at = time.monotonic()
        conn.sends += 1


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reply_text(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_decode(exc.smtp_error)}"


def _quit(smtp: smtplib.SMTP) -> None:
    """QUIT politely, or just close: the connection is being thrown away either way."""
    try:
        if smtp.sock is not None:
            smtp.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        with contextlib.suppress(OSError):
            smtp.close()


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class EmlDirectory:
    """Writes each message as ``<directory>/<message-id>.eml`` (no relay configured).

    Parameters:
        directory: created on first use.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def send(self, message: EmailMessage, *, sender: str, recipients: list[str]) -> None:
        """Write the message atomically; a resend of the same Message-ID replaces its file.

        Raises:
            TemporarySendError: the directory cannot be written (full disk, permissions).
        """
        name = _UNSAFE.sub("_", str(message.get("Message-ID", "")).strip("<> ")) or f"mail-{time.time_ns()}"
        data = wire_bytes(message)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Not "*.eml" until complete: readers glob for .eml files.
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, self.directory / f"{name}.eml")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise TemporarySendError(f"cannot write to {self.directory}: {exc}") from exc

    def close(self) -> None:
        """Nothing is held open between messages."""


def email_sender(outbound_smtp_url: str | None, outbox_dir: Path | str) -> EmailSender:
    """The relay when a URL is set, else the .eml directory (``helpdesk run``)."""
    if outbound_smtp_url:
        return SmtpRelay(outbound_smtp_url)
    return EmlDirectory(outbox_dir)
