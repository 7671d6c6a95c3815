"""Loopback ports and polling helpers shared by the real-part test servers.

Tests wait for work to finish (``wait_until``) instead of sleeping a fixed time: a fixed
sleep is either too short on a busy CI machine or wastes time everywhere else.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago.

    The kernel picks it (bind to port 0), so parallel test workers (pytest-xdist) do not
    collide on a fixed number. There is a small window before the caller binds it;
    servers that cannot be started on port 0 directly retry with another port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Tell whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    Parameters:
        predicate: called repeatedly; its first truthy result is returned.
        timeout: seconds before giving up.
        interval: seconds between polls (short: the work is usually already done).
        message: the assertion message, or a callable building it at failure time (so
            it can describe the state actually reached, e.g. the mail received so far).

    Raises:
        AssertionError: with ``message`` when ``timeout`` passes first, so a test failure
            reads as a failed expectation rather than an infrastructure error.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout:.1f}s)")
        time.sleep(interval)
