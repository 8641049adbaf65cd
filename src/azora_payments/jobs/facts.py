"""Recording what already happened outside the database (an e-mail the SMTP server accepted).

Such a record is a fact, not work to redo: if it is lost, the job runs again and does it again
(a second e-mail). So it is retried for as long as the process lives, however long the database
is away, and it finishes even if the job's own time limit, a lost lease or a shutdown cancels
the handler waiting for it. Handlers check the record before acting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import Receipt, Refund
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit
from azora_payments.logs import log_fields

logger = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)
# One warning for the first failure, then one per this many attempts (~1 a minute).
LOG_EVERY = 30

# Running records, kept referenced so that a cancelled waiter does not let them be collected.
_pending: set[asyncio.Task[None]] = set()


async def record_fact(
    db: Database, write: Callable[[AsyncSession], Awaitable[None]], *, what: str, **fields: object
) -> None:
    """Commit `write` in a transaction, retrying until it is committed; the caller may be
    cancelled meanwhile, the record goes on."""
    task = asyncio.create_task(_until_written(db, write, what=what, fields=fields))
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    await asyncio.shield(task)


async def record_emailed(
    db: Database,
    kind: Literal["receipt", "refund"],
    row_id: str,
    get: Callable[[AsyncSession, str], Awaitable[Receipt | Refund | None]],
    *,
    payment_id: str,
    delivery: object,
    details: dict[str, object],
) -> None:
    """The fact that the SMTP server accepted the e-mail about a receipt or a refund: the row's
    `emailed_at` (its job checks it before sending) and the audit record `receipt.emailed` or
    `refund.emailed`, in one transaction, retried like every fact."""
    key = f"{kind}_id"

    async def write(session: AsyncSession) -> None:
        row = await get(session, row_id)
        assert row is not None
        row.emailed_at = utcnow()
        audit.record(
            session,
            actor=audit.SYSTEM,
            action=f"{kind}.emailed",
            payment_id=payment_id,
            details={key: row_id, "delivery": str(delivery), **details},
        )

    await record_fact(db, write, what=f"a {kind} was e-mailed", **{key: row_id})


async def _until_written(
    db: Database,
    write: Callable[[AsyncSession], Awaitable[None]],
    *,
    what: str,
    fields: dict[str, object],
) -> None:
    attempt = 0
    while True:
        try:
            async with db.transaction() as session:
                await write(session)
        except Exception:
            if attempt % LOG_EVERY == 0:
                logger.warning(
                    f"could not record that {what}: trying again",
                    exc_info=True,
                    extra=log_fields(attempt=attempt + 1, **fields),
                )
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1
            continue
        if attempt:
            logger.info(f"recorded that {what}", extra=log_fields(attempts=attempt + 1, **fields))
        return


async def wait_for_pending() -> None:
    """For a process about to exit (and for tests): let the running records finish."""
    if _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)
