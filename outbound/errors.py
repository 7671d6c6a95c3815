"""What can go wrong when a notification is sent, and what the send step does about it.

::

    SendError                 a send did not happen
     ├── TemporarySendError   try again later, with backoff (SMTP 4xx, a dropped
     │                        connection, Twilio 429/5xx, a relay refusing our login)
     └── PermanentSendError   this channel will not take it (SMTP 5xx, an invalid
                              number, no address, outside the WhatsApp window without
                              an approved template): try the contact's other channel
                              once, else the row is ``failed`` and
                              ``helpdesk outbox --retry ID`` sends it again

Senders raise only these; ``outbound.deliver`` turns them into the row's next state. A
failure that is ours rather than the recipient's (wrong relay password, Twilio
credentials) is temporary on purpose: the operator fixes the setting and the queued
notifications go out, instead of every one of them failing over to the other channel.
"""

from __future__ import annotations


class SendError(Exception):
    """A notification was not sent.

    Parameters:
        message: why, in one line; kept as the row's ``last_error``.
        code: the provider's code (SMTP reply code, Twilio error code), when there is one.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.code} {text}" if self.code is not None and not text.startswith(str(self.code)) else text


class TemporarySendError(SendError):
    """Try again later; the row goes back to ``pending`` with a backoff."""


class PermanentSendError(SendError):
    """This channel will not carry the notification; retrying the same way is useless."""
