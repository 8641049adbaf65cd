"""Waking idle workers when work arrives, on PostgreSQL: the webhook ingest `poke`s after it
records an event, and a worker `listen`s, so that it claims at once instead of at its next poll.

Polling stays what guarantees progress: a notification may be lost (no listener connected, a
pooler in between, a dropped connection) and then the job waits for the poll interval, as it did
before. The NOTIFY is sent apart from the ingest's own statement and at most once per `GAP` per
process: a NOTIFY in the recording transaction would take PostgreSQL's notification-queue lock
through that transaction's commit, serialising every ingest commit behind it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

import asyncpg

from azora_payments.db.session import Database

logger = logging.getLogger(__name__)

CHANNEL = "azora_jobs"
# The most notifications a process sends per second is 1 / GAP; a poke within the gap is
# carried by the next one, sent when the gap ends.
GAP = 0.02
_NOTIFY = "SELECT pg_notify($1, '')"


class _Notifier:
    def __init__(self) -> None:
        self._poked = False
        self._task: asyncio.Task[None] | None = None

    def poke(self, db: Database) -> None:
        self._poked = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send(db))

    async def _send(self, db: Database) -> None:
        while self._poked:
            self._poked = False
            try:
                async with db.driver_statement() as connection:
                    await connection.execute(_NOTIFY, CHANNEL)
            except Exception:
                # The poll picks the job up; a failing database shows elsewhere.
                logger.debug("could not notify the workers", exc_info=True)
            await asyncio.sleep(GAP)


_notifiers: weakref.WeakKeyDictionary[Database, _Notifier] = weakref.WeakKeyDictionary()


def poke(db: Database) -> None:
    """Tell the listening workers that a job was just committed (PostgreSQL; else nothing).
    Returns at once: the notification is sent by a task of its own."""
    if db.dialect != "postgresql":
        return
    notifier = _notifiers.get(db)
    if notifier is None:
        notifier = _notifiers[db] = _Notifier()
    notifier.poke(db)


def can_listen(db: Database, *, pooler: str) -> bool:
    """LISTEN needs a session of its own on the server: PostgreSQL, not through a pooler."""
    return db.dialect == "postgresql" and pooler == "none"


async def listen(db: Database, on_notify: Callable[[], None]) -> asyncpg.Connection:
    """A connection of its own, outside the pool, calling `on_notify` for each notification.
    The caller closes it; `is_closed()` tells when it was lost."""
    url = db.engine.url.set(drivername="postgresql")
    conn: asyncpg.Connection = await asyncpg.connect(url.render_as_string(hide_password=False))

    def received(*_: Any) -> None:
        on_notify()

    await conn.add_listener(CHANNEL, received)
    return conn
