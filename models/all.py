"""Imports every table so that ``Base.metadata`` is complete (migrations, create_all)."""

from models import contact, db, mailbox, message, outbox, survey, ticket  # noqa: F401
