"""Crash points for the tests that prove a request dying half-way loses and doubles nothing.

`AZORA_CRASH_AT=<name>` makes the process kill itself (SIGKILL: no clean-up, no commit) when it
reaches that point. Only honoured outside production. In-process tests use `crashing_at`: the
work stops there with `SimulatedCrash`, as if its process had died and its lock had expired
(whatever it held is given up; nothing after the point runs).

Points: `payment.before_stripe`, `payment.after_stripe` (the charge), `reconcile.key_taken`,
`reconcile.after_asking` (reconciliation giving up on a payment).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
from collections.abc import Iterator

_SIMULATED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "azora_simulated_crashes", default=frozenset()
)


class SimulatedCrash(BaseException):
    """The work was abandoned at a crash point (in-process tests only)."""


@contextlib.contextmanager
def crashing_at(*names: str) -> Iterator[None]:
    token = _SIMULATED.set(frozenset(names))
    try:
        yield
    finally:
        _SIMULATED.reset(token)


def crash_point(name: str) -> None:
    if name in _SIMULATED.get():
        raise SimulatedCrash(name)
    wanted = os.environ.get("AZORA_CRASH_AT")
    if wanted and wanted == name and os.environ.get("AZORA_ENV") in ("dev", "test"):
        os.kill(os.getpid(), signal.SIGKILL)
