"""Logging set-up for the long-running processes (English, one line per event)."""

from __future__ import annotations

import logging
import os


def setup_logging() -> None:
    level = os.environ.get("HELPDESK_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
