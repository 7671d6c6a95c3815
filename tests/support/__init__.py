"""Real-part test infrastructure: servers the tests start on loopback, no mocks.

Modules:
    ports        -- free loopback ports and ``wait_until`` (wait for work, never sleep).
    smtp_sink    -- ``SmtpSink``: an aiosmtpd server recording mail, with faults, TLS, AUTH.
    dovecot      -- ``Dovecot``: a real, unprivileged Dovecot IMAP server with IDLE.
    twilio_server -- ``TwilioServer``: a local HTTP server shaped like Twilio's Messages API,
                    with faults, media and signed status callbacks.
    fixtures     -- pytest fixtures ``smtp_sink``, ``dovecot``, ``twilio_server``; the
                    lead's ``tests/conftest.py`` imports them.
"""
