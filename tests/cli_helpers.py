"""Running the real ``helpdesk`` console script, as an operator or an MTA would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HELPDESK = str(Path(sys.executable).parent / "helpdesk")


def helpdesk(env: dict[str, str], *args: str, input: bytes | None = None, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [HELPDESK, *args], env=env, input=input.decode() if input is not None else None,
        capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helpdesk {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def helpdesk_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(helpdesk(env, *args, "--json").stdout)
