"""pytest fixtures for the real-part servers; ``tests/conftest.py`` imports them.

Each fixture is function-scoped: every test gets fresh servers with no mail, messages or
faults left over from another test, and everything is stopped (threads joined, sockets
closed, Dovecot's processes ended, temporary directories removed) when the test ends.

Nothing is skipped: a missing Dovecot fails the test with instructions, because a
skipped IMAP test looks like a passing one on CI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .dovecot import Dovecot, DovecotMissing
from .smtp_sink import SmtpSink
from .twilio_server import TwilioServer

#: The shared inbox the product polls over IMAP in tests.
INBOX_USER = "inbox@jhleasing.mx"
INBOX_PASSWORD = "secret"
#: Credentials of the authenticated, STARTTLS relay (``smtp_relay_tls``).
RELAY_USER = "relay@jhleasing.mx"
RELAY_PASSWORD = "relay-secret"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A plain SMTP sink (no TLS, no AUTH) on a free loopback port."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def smtp_relay_tls() -> Iterator[SmtpSink]:
    """An SMTP sink that offers STARTTLS and requires AUTH as RELAY_USER/RELAY_PASSWORD.

    Clients trust it with ``sink.client_ssl_context()`` (its certificate only).
    """
    with SmtpSink(tls=True, auth=(RELAY_USER, RELAY_PASSWORD), require_auth=True) as sink:
        yield sink


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A started Dovecot with the user INBOX_USER / INBOX_PASSWORD and an empty INBOX.

    ``dovecot.url()`` is the ``imap://inbox%40jhleasing.mx:secret@127.0.0.1:PORT/INBOX``
    URL for the product's IMAP_URL setting.
    """
    server = Dovecot({INBOX_USER: INBOX_PASSWORD})
    try:
        server.start()
    except DovecotMissing as error:
        server.close()
        pytest.fail(str(error), pytrace=False)
    except BaseException:
        server.close()
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_url(dovecot: Dovecot) -> str:
    """The IMAP_URL of the ``dovecot`` fixture's inbox."""
    return dovecot.url(INBOX_USER)


@pytest.fixture
def twilio_server() -> Iterator[TwilioServer]:
    """A local Twilio Messages API with random credentials (``account_sid``,
    ``auth_token``) at ``base_url``."""
    with TwilioServer() as server:
        yield server
