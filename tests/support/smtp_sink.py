"""An SMTP server that records what it is sent: the far end of our outbound relay in tests.

``SmtpSink`` is an aiosmtpd ``Controller`` on 127.0.0.1 and a free port. It keeps every
accepted message (envelope and raw bytes, plus the parse with ``policy.default``), counts
TCP connections (so a test can tell that a sender reuses one persistent connection) and
can be told to fail, the way real relays do: a temporary ``451`` for the next n messages,
or a permanent ``550`` for everything. Optionally it offers STARTTLS with a self-signed
certificate made at test time, and AUTH LOGIN/PLAIN with one user and password.

Example::

    with SmtpSink() as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], raw)
        [mail] = sink.wait_for_mail(1)
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .ports import LOOPBACK

FaultStage = Literal["rcpt", "data"]


def _drop_login_data_deprecation(record: logging.LogRecord) -> bool:
    """aiosmtpd 1.4 logs this on every successful AUTH (its own code sets the attribute);
    it is noise about aiosmtpd's internals, not about the code under test."""
    return not record.getMessage().startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_drop_login_data_deprecation)


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted (answered 250 to DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message: EmailMessage
    peer: tuple[str, int]
    #: Login name used with AUTH on that connection, or None when not authenticated.
    login: str | None
    #: Whether the connection had switched to TLS (STARTTLS) before the message.
    tls: bool
    #: Sequence number of the TCP connection that carried it (1 = first since start).
    connection: int


@dataclass
class _Fault:
    remaining: int | None  # None: forever (reject_all)
    code: int
    text: str
    stage: FaultStage


def make_self_signed_cert(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """Create a throwaway certificate and key for ``localhost`` and ``127.0.0.1``.

    Made with the ``openssl`` command (the ``cryptography`` package is not a dependency of
    this project). The subjectAltName carries both the name and the IP, so a client with
    ``check_hostname`` on accepts it whichever it connects to.

    Returns:
        (certificate path, private key path), PEM files inside ``directory``.

    Raises:
        RuntimeError: when ``openssl`` is missing or fails.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", f"/CN={common_name}",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class _SinkHandler:
    """aiosmtpd handler hooks: apply faults and AUTH policy, then record the message."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        if self._sink.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        fault = self._sink._take_fault("rcpt")
        if fault is not None:
            return fault
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self._sink._take_fault("data")
        if fault is not None:
            return fault
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # pragma: no cover - only with decode_data=True
            raw = raw.encode("utf-8", "surrogateescape")
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        auth_data = session.auth_data
        login = auth_data.login if isinstance(auth_data, LoginPassword) else None
        self._sink._record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=raw,
                message=parsed,
                peer=tuple(session.peer) if session.peer else ("", 0),  # type: ignore[arg-type]
                login=login.decode() if isinstance(login, bytes) else login,
                tls=session.ssl is not None,
                connection=getattr(server, "connection_number", 0),
            )
        )
        return "250 2.0.0 OK: queued"


class _SinkController(Controller):
    """A Controller on a pre-bound socket whose factory numbers the connections."""

    def __init__(self, sink: SmtpSink, listener: socket.socket, **kwargs: Any) -> None:
        super().__init__(_SinkHandler(sink), **kwargs)
        self._sink = sink
        self._listener = listener

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        # Serve on the socket already bound by SmtpSink.start (asyncio then owns it).
        return self.loop.create_server(
            self._factory_invoker, sock=self._listener, ssl=self.ssl_context
        )

    def factory(self) -> SMTP:
        smtp = super().factory()
        smtp.connection_number = self._sink._count_connection()  # type: ignore[attr-defined]
        return smtp


@dataclass
class _State:
    messages: list[ReceivedMail] = field(default_factory=list)
    connections: int = 0
    faults: list[_Fault] = field(default_factory=list)


class SmtpSink:
    """A recording SMTP server on loopback; see the module docstring.

    Parameters:
        tls: offer STARTTLS with a certificate generated at start (``cert_path``).
        auth: ``(user, password)`` to offer AUTH PLAIN/LOGIN; other credentials get 535.
        require_auth: answer ``530`` to MAIL FROM before a successful AUTH.
        hostname: the name in the banner and EHLO answer (set so that aiosmtpd does not
            look up the FQDN, which can be slow without DNS).

    AUTH is offered only after STARTTLS when ``tls`` is on, as real relays do; without
    ``tls`` it is offered in clear text, acceptable on loopback.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        auth: tuple[str, str] | None = None,
        require_auth: bool = False,
        hostname: str = "sink.localhost",
        host: str = LOOPBACK,
    ) -> None:
        if require_auth and auth is None:
            raise ValueError("require_auth needs auth=(user, password)")
        self.host = host
        self.port = 0
        self.tls = tls
        self.auth = auth
        self.require_auth = require_auth
        self.hostname = hostname
        self.cert_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._controller: _SinkController | None = None
        self._lock = threading.Condition()
        self._state = _State()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SmtpSink:
        """Start listening on a port chosen by the kernel (``port`` tells which)."""
        if self._controller is not None:
            raise RuntimeError("SmtpSink already started")
        kwargs: dict[str, Any] = {"server_hostname": self.hostname, "ready_timeout": 10.0}
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="helpdesk-smtp-sink-")
            cert, key = make_self_signed_cert(Path(self._tmp.name))
            self.cert_path = cert
            server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_ctx.load_cert_chain(cert, key)
            kwargs["tls_context"] = server_ctx
        if self.auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_require_tls"] = self.tls
        # Bind here, on port 0, and hand the socket to asyncio: no window in which another
        # process could take a port picked in advance.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((self.host, 0))
            listener.listen(64)
            self.port = int(listener.getsockname()[1])
            controller = _SinkController(self, listener, hostname=self.host, port=self.port,
                                         **kwargs)
        except BaseException:
            listener.close()
            raise
        try:
            controller.start()
        except BaseException:
            listener.close()
            raise
        self._controller = controller
        # Controller.start() opens one connection itself to check that the server
        # answers; it is not the code under test, so it is not counted.
        with self._lock:
            self._state.connections = 0
        return self

    def stop(self) -> None:
        """Stop the server (open client connections are cut) and remove the certificate."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what was received ---------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMail]:
        """A copy of the messages accepted so far, in arrival order."""
        with self._lock:
            return list(self._state.messages)

    @property
    def connections(self) -> int:
        """TCP connections accepted since start (or the last ``reset``)."""
        with self._lock:
            return self._state.connections

    def wait_for_mail(self, n: int = 1, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``n`` messages were accepted; return all of them.

        Raises:
            AssertionError: when fewer than ``n`` arrived within ``timeout`` seconds; the
                message says how many did, to tell "slow" from "never sent".
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._state.messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [
                        (m.mail_from, m.rcpt_tos, m.message.get("Subject"))
                        for m in self._state.messages
                    ]
                    raise AssertionError(
                        f"expected {n} mail(s) within {timeout:.1f}s, got {len(got)}: {got}"
                    )
                self._lock.wait(remaining)
            return list(self._state.messages)

    # -- faults --------------------------------------------------------------------------

    def fail_next(
        self, n: int = 1, code: int = 451, text: str = "4.3.0 try later",
        at: FaultStage = "data",
    ) -> None:
        """Answer the next ``n`` messages with ``code text`` (at DATA by default).

        With ``at="rcpt"`` the fault is given to the next ``n`` RCPT TO commands instead,
        which is how a relay refuses one recipient.
        """
        with self._lock:
            self._state.faults.append(_Fault(n, code, text, at))

    def reject_all(
        self, code: int = 550, text: str = "5.7.1 message rejected", at: FaultStage = "data"
    ) -> None:
        """Refuse every message (or every recipient, ``at="rcpt"``) until ``reset``."""
        with self._lock:
            self._state.faults.append(_Fault(None, code, text, at))

    def reset(self) -> None:
        """Forget received mail, connection count and faults; keep the server running."""
        with self._lock:
            self._state = _State()

    # -- internals, called from the server thread ----------------------------------------

    def _take_fault(self, stage: FaultStage) -> str | None:
        with self._lock:
            for fault in self._state.faults:
                if fault.stage != stage:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._state.faults.remove(fault)
                return f"{fault.code} {fault.text}"
        return None

    def _record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._state.messages.append(mail)
            self._lock.notify_all()

    def _count_connection(self) -> int:
        with self._lock:
            self._state.connections += 1
            return self._state.connections

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert self.auth is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.auth
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    # -- client side helpers -------------------------------------------------------------

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts only this sink's certificate (for ``starttls``)."""
        if self.cert_path is None:
            raise RuntimeError("SmtpSink was not started with tls=True")
        return ssl.create_default_context(cafile=str(self.cert_path))

    @property
    def url(self) -> str:
        """``smtp://[user:pass@]host:port`` for settings such as OUTBOUND_SMTP_URL.

        The scheme stays ``smtp``; a TLS sink is reached with STARTTLS on the same port.
        """
        auth = ""
        if self.auth is not None:
            auth = f"{quote(self.auth[0], safe='')}:{quote(self.auth[1], safe='')}@"
        return f"smtp://{auth}{self.host}:{self.port}"
