"""A real Dovecot IMAP server for tests, started unprivileged on a free loopback port.

Why a real server: the IMAP poller's hard parts (UIDVALIDITY, IDLE, reconnects, flags)
are exactly what a fake gets wrong. Each ``Dovecot`` gets its own temporary directory
holding the config (no system config is read: ``-c``), the passwd-file with the users,
the maildirs, the runtime sockets (``base_dir``) and the log. Nothing is installed or
changed outside that directory, and the Debian ``dovecot`` service need not run.

Written for Dovecot 2.3 (Debian 12 ships 2.3.19; 2.4 renamed many settings, so
``start`` refuses another major version with a clear message).

Running as root (CI containers): Dovecot refuses to run its login processes as root and
refuses uid 0 for mail users, so the instance uses the system users the Debian package
creates: ``dovenull`` for logins, ``dovecot`` for internal services and as the owner of
the mail. Running as any other user: everything runs as that user.

Example::

    with Dovecot({"inbox@jhleasing.mx": "secret"}) as server:
        uid = server.append("inbox@jhleasing.mx", "INBOX", raw)
        server.restart()  # same port, same mail: the client must reconnect
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from imapclient import IMAPClient

from .ports import LOOPBACK, free_port

DOVECOT_BINARY = "/usr/sbin/dovecot"
INSTALL_HINT = (
    "Dovecot is needed for the IMAP tests and is not installed. Run .ci/run, which "
    "installs it (apt-get install -y dovecot-imapd), or install that package yourself."
)


class DovecotMissing(RuntimeError):
    """The dovecot binary is not installed (the fixture turns this into a test failure)."""


class DovecotStartError(RuntimeError):
    """Dovecot did not come up; the message carries its log."""


def _identities() -> tuple[str, str, str, int, int]:
    """Return (internal user, its group, login user, mail uid, mail gid) for this process."""
    if os.geteuid() != 0:
        user = getpass.getuser()
        group = grp.getgrgid(os.getegid()).gr_name
        return user, group, user, os.geteuid(), os.getegid()
    try:
        internal = pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError as error:
        raise DovecotStartError(
            "running as root needs the system users 'dovecot' and 'dovenull', which the "
            "dovecot-core package creates"
        ) from error
    group = grp.getgrgid(internal.pw_gid).gr_name
    return "dovecot", group, "dovenull", internal.pw_uid, internal.pw_gid


class Dovecot:
    """One Dovecot instance; see the module docstring.

    Parameters:
        users: login -> password, written to a passwd-file (plain text: it is a test).
        host: the address to listen on (loopback).
        binary: the dovecot executable.
        start_timeout: seconds to wait for the greeting after starting.

    Attributes:
        host, port: where IMAP listens (plain text, no TLS; ``ssl = no``).
        root: the temporary directory holding everything of this instance.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        host: str = LOOPBACK,
        binary: str = DOVECOT_BINARY,
        start_timeout: float = 15.0,
    ) -> None:
        self.users = dict(users or {"inbox@jhleasing.mx": "secret"})
        for user, password in self.users.items():
            if any(c in user + password for c in ":\n") or not user:
                raise ValueError("users and passwords may not contain ':' or newlines")
        self.host = host
        self.port = 0
        self.binary = binary
        self.start_timeout = start_timeout
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._console: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Dovecot:
        """Start the server; the first start picks the port, later ones keep it.

        Raises:
            DovecotMissing: the binary is not installed.
            DovecotStartError: it exited or did not greet within ``start_timeout``.
        """
        if self._process is not None:
            raise RuntimeError("Dovecot already running")
        self._check_binary()
        first_start = self.root is None
        if first_start:
            self.root = Path(tempfile.mkdtemp(prefix="helpdesk-dovecot-"))
            # Login processes (another user when we are root) reach sockets under root/.
            self.root.chmod(0o755)
        attempts = 5 if first_start else 1
        for attempt in range(attempts):
            if first_start:
                self.port = free_port(self.host)
            self._write_files()
            try:
                self._spawn()
                return self
            except DovecotStartError as error:
                port_taken = "Address already in use" in str(error)
                if not (port_taken and attempt + 1 < attempts):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait for it to exit; the mail stays for ``restart``.

        The master exits on SIGTERM but, as observed with 2.3.19, an ``imap`` process
        serving a logged-in client can outlive it and keep answering. A real shutdown
        cuts clients off, and reconnect tests depend on that, so whatever is left in the
        instance's process group (it was started in a session of its own) is killed too.
        """
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same port with the same mail (tests reconnects)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the temporary directory with all mail.

        The data is thrown away, so there is nothing to shut down gracefully: killing
        the process group at once saves the second a graceful master stop takes.
        """
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- addresses ---------------------------------------------------------------------

    def url(self, user: str | None = None, mailbox: str = "INBOX") -> str:
        """``imap://user:password@host:port/MAILBOX`` (user and password URL-quoted)."""
        user = user or next(iter(self.users))
        password = self.users[user]
        return (
            f"imap://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(mailbox, safe='')}"
        )

    def log(self) -> str:
        """Dovecot's log so far (for failure messages)."""
        parts = []
        for name in ("console.log", "dovecot.log"):
            path = self.root / name if self.root else None
            if path is not None and path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # -- IMAP helpers --------------------------------------------------------------------

    @contextmanager
    def client(self, user: str | None = None, timeout: float = 10.0) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient, logged out (or at least closed) on exit."""
        user = user or next(iter(self.users))
        imap = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        try:
            imap.login(user, self.users[user])
            yield imap
        finally:
            try:
                imap.logout()
            except Exception:  # already closed: the server was stopped, say
                imap.shutdown()

    def create_mailbox(self, user: str, mailbox: str) -> None:
        """Create ``mailbox`` for ``user`` unless it exists."""
        with self.client(user) as imap:
            if not imap.folder_exists(mailbox):
                imap.create_folder(mailbox)

    def append(
        self, user: str, mailbox: str, raw: bytes, flags: Iterable[str | bytes] = ()
    ) -> int:
        """Store ``raw`` in ``mailbox`` as a delivery would; return its UID (UIDPLUS)."""
        with self.client(user) as imap:
            response = imap.append(mailbox, raw, flags=tuple(flags))
        match = re.search(rb"APPENDUID \d+ (\d+)", response)
        if match is None:
            raise AssertionError(f"no APPENDUID in APPEND response {response!r}")
        return int(match.group(1))

    def list_uids(self, user: str, mailbox: str = "INBOX") -> list[int]:
        """All UIDs in ``mailbox``, ascending (read-only: no flag changes)."""
        with self.client(user) as imap:
            imap.select_folder(mailbox, readonly=True)
            return sorted(int(uid) for uid in imap.search("ALL"))

    def fetch_flags(
        self, user: str, mailbox: str = "INBOX", uids: Iterable[int] | None = None
    ) -> dict[int, tuple[str, ...]]:
        """UID -> flags as text (e.g. ``("\\\\Seen",)``), for all or the given UIDs."""
        with self.client(user) as imap:
            imap.select_folder(mailbox, readonly=True)
            wanted = list(uids) if uids is not None else imap.search("ALL")
            if not wanted:
                return {}
            fetched = imap.get_flags(wanted)
        return {
            int(uid): tuple(f.decode() if isinstance(f, bytes) else f for f in flags)
            for uid, flags in fetched.items()
        }

    def uidvalidity(self, user: str, mailbox: str = "INBOX") -> int:
        """The mailbox's UIDVALIDITY (it must survive ``restart``)."""
        with self.client(user) as imap:
            status = imap.folder_status(mailbox, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    # -- internals -----------------------------------------------------------------------

    def _check_binary(self) -> None:
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise DovecotMissing(f"{self.binary} not found. {INSTALL_HINT}")
        version = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        if not version.startswith("2.3."):
            raise DovecotStartError(
                f"tests/support/dovecot.py writes a Dovecot 2.3 config; found {version!r}"
            )

    def _write_files(self) -> None:
        assert self.root is not None
        internal_user, internal_group, login_user, mail_uid, mail_gid = _identities()
        run_dir, state_dir, mail_dir = (self.root / d for d in ("run", "state", "mail"))
        for directory in (run_dir, state_dir, mail_dir):
            directory.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(mail_dir, mail_uid, mail_gid)
        passwd = self.root / "passwd"
        lines = []
        for user, password in self.users.items():
            lines.append(f"{user}:{{PLAIN}}{password}::::::\n")
        passwd.write_text("".join(lines))
        passwd.chmod(0o644)
        config = f"""\
# Written by tests/support/dovecot.py: a throwaway Dovecot {self.port} for tests.
instance_name = helpdesk-test-{self.port}
base_dir = {run_dir}
state_dir = {state_dir}
log_path = {self.root / "dovecot.log"}
protocols = imap
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {mail_uid}
last_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
last_valid_gid = {mail_gid}
mail_location = maildir:{mail_dir}/%u/Maildir
# Tests try wrong passwords on purpose; the default 2 s penalty only slows them.
auth_failure_delay = 0
# IDLE is told at once through inotify; the interval is only the fallback.
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
  default_fields = uid={mail_uid} gid={mail_gid} home={mail_dir}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""
        (self.root / "dovecot.conf").write_text(config)

    def _spawn(self) -> None:
        assert self.root is not None
        self._console = self.root / "console.log"
        with open(self._console, "ab") as console:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.root / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not it
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise DovecotStartError(f"dovecot exited at start:\n{self.log()}")
            if self._greets():
                return
            time.sleep(0.05)
        self.stop()
        raise DovecotStartError(
            f"dovecot did not greet on {self.host}:{self.port} within "
            f"{self.start_timeout}s:\n{self.log()}"
        )

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                return sock.recv(1024).startswith(b"* OK")
        except OSError:
            return False
