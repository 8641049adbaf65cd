"""Crash points for the tests that prove a request dying half-way loses and doubles nothing.

`AZORA_CRASH_AT=<name>` makes the process kill itself (SIGKILL: no clean-up, no commit) when it
reaches that point. Only honoured outside production.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    wanted = os.environ.get("AZORA_CRASH_AT")
    if wanted and wanted == name and os.environ.get("AZORA_ENV") in ("dev", "test"):
        os.kill(os.getpid(), signal.SIGKILL)
