"""Settings: one class, read from ``HELPDESK_*`` environment variables and a ``.env`` file.

Every field documents itself because the README's settings table and operators' ``.env``
files are built from it. Secrets (``SECRET_KEY``, ``TWILIO_AUTH_TOKEN``) come only from the
environment. Nothing here connects anywhere: the composition root (``worker.runtime``)
turns settings into engines, brokers and senders.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PIPELINES_FILE = PACKAGE_DIR / "pipelines.yaml"


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can set. Defaults run the worker with nothing installed."""

    model_config = SettingsConfigDict(
        env_prefix="HELPDESK_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        "sqlite:///./var/helpdesk.db",
        description="SQLAlchemy URL of the database (SQLite or PostgreSQL).",
    )
    database_timeout_seconds: float = Field(
        30.0, description="How long to wait for a database lock or connection before answering 'retry later'."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL of the Dramatiq broker."
    )
    smtp_listen: str = Field("127.0.0.1:2525", description="host:port of `helpdesk smtp`.")
    http_listen: str = Field("127.0.0.1:8000", description="host:port of `helpdesk web`.")
    inbox_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["soporte@localhost"],
        description="Comma list of `address` or `address=pipeline`: the only recipients "
        "the SMTP server accepts; mail to an address opens tickets in its pipeline.",
    )
    default_pipeline: str = Field(
        "mantenimiento", description="Pipeline for new tickets when the address names none."
    )
    staff_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of mail domains whose senders are staff (forwards, replies).",
    )
    ticket_prefix: str = Field("JHL", description="Prefix of the subject tag `[PREFIX#N]`.")
    ticket_start: int = Field(
        10000, description="First sequence value of ticket numbers (before the check digit)."
    )
    outbound_smtp_url: str | None = Field(
        None,
        description="smtp://user:pass@host:587 (STARTTLS when offered) or smtps://host:465; "
        "unset: notifications are written as .eml files under OUTBOX_DIR.",
    )
    outbox_dir: Path = Field(Path("./var/outbox"), description="Where .eml files go without a relay.")
    imap_url: str | None = Field(
        None, description="imaps://user:pass@host:993/INBOX (or imap:// for plain/STARTTLS)."
    )
    imap_poll_seconds: float = Field(
        60.0, description="Seconds between IMAP polls when the server offers no IDLE."
    )
    imap_done_folder: str | None = Field(
        None, description="Folder to move IMAP mail to once kept; unset: it is marked \\Seen."
    )
    twilio_account_sid: str | None = Field(None, description="Twilio Account SID.")
    twilio_auth_token: str | None = Field(
        None, description="Twilio auth token (signs webhooks; secret)."
    )
    twilio_whatsapp_from: str | None = Field(
        None, description="Our WhatsApp sender, E.164 (e.g. +5215512345678)."
    )
    twilio_api_base: str | None = Field(
        None, description="Base URL of the Twilio API (set only to point at a test server)."
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="URL at which Twilio and customers reach `helpdesk web` (behind a proxy too).",
    )
    secret_key: str = Field(
        "dev-insecure-change-me", description="Signs survey tokens and Message-IDs (secret)."
    )
    locale: str = Field("es_MX", description="Locale of customer-facing text.")
    timezone: str = Field("America/Mexico_City", description="Time zone of dates shown.")
    pipelines_file: Path = Field(
        DEFAULT_PIPELINES_FILE, description="YAML catalog of pipelines and stages."
    )
    company_name: str = Field("JHLeasing", description="Name signed on notifications.")
    max_message_bytes: int = Field(
        25 * 1024 * 1024, description="Largest message the SMTP server accepts (552 above)."
    )
    smtp_tls_cert: Path | None = Field(None, description="Certificate for SMTP STARTTLS.")
    smtp_tls_key: Path | None = Field(None, description="Private key for SMTP STARTTLS.")
    ack_limit_per_hour: int = Field(
        5, description="Most acknowledgements one sender gets per hour."
    )
    followup_days: int = Field(
        14, description="Days after closing in which a message reopens the conversation."
    )
    subject_window_hours: int = Field(
        72, description="Same sender and subject within this window joins the open ticket."
    )
    survey_delay_seconds: int = Field(
        600, description="Delay between closing a ticket and sending its survey."
    )
    survey_ttl_days: int = Field(30, description="Days a survey link stays valid.")
    send_claim_seconds: int = Field(
        120, description="A send claimed longer ago than this is taken as abandoned."
    )
    sweep_interval_seconds: float = Field(
        5.0, description="How often the worker re-enqueues notifications still pending."
    )
    max_send_attempts: int = Field(8, description="Attempts before a notification fails.")
    send_backoff_seconds: float = Field(
        30.0, description="First retry delay of a temporary send failure; doubles each attempt."
    )
    send_backoff_max_seconds: float = Field(3600.0, description="Longest retry delay.")
    redis_namespace: str = Field(
        "helpdesk", description="Prefix of the worker's Redis keys (two installations, one Redis)."
    )

    @field_validator("inbox_addresses", "staff_domains", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("ticket_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.isalnum():
            raise ValueError("TICKET_PREFIX must be letters and digits")
        return value.upper()

    @cached_property
    def inbox_map(self) -> dict[str, str]:
        """Inbox address (lower case) → pipeline id."""
        result: dict[str, str] = {}
        for item in self.inbox_addresses:
            address, _, pipeline = item.partition("=")
            result[address.strip().lower()] = pipeline.strip() or self.default_pipeline
        return result

    @property
    def primary_inbox(self) -> str:
        """The address notifications are sent from when a ticket has no inbox of its own."""
        return next(iter(self.inbox_map))

    def is_staff(self, email: str | None) -> bool:
        if not email or "@" not in email:
            return False
        domain = email.rsplit("@", 1)[1].lower()
        return any(domain == d.lower() or domain.endswith("." + d.lower()) for d in self.staff_domains)


def host_port(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:25`` too) as used by the *_LISTEN settings."""
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
