"""Registers the commands that live beside their rooms (inbound, outbound, web, run).

Each module adds its commands to ``worker.cli.cli`` when imported.
"""

from __future__ import annotations

import importlib

COMMAND_MODULES = (
    "worker.cli_inbound", "worker.cli_imap", "worker.cli_outbound", "worker.cli_web", "worker.cli_run",
)

for _name in COMMAND_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a room not built yet
        if exc.name != _name:
            raise
