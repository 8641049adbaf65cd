"""The durable job queue: side effects leave a request or a job through here, never lost, and
never doubled as long as handlers keep the contract below.

Enqueue in the transaction that causes the work (the transactional outbox)::

    async with services.db.transaction() as session:
        payment.status = "succeeded"
        await enqueue(session, kind="receipt.issue", payload={"payment_id": payment.id},
                      unique_key=f"receipt:{payment.id}")

A rollback drops the job, a commit keeps it, and nothing runs before the commit. Register a
handler by decorating it in a module that `azora_payments.jobs.kinds` imports::

    @job_kind("receipt.issue", max_attempts=10, timeout=60.0)
    async def issue_receipt(ctx: JobContext, payload: dict[str, Any]) -> None: ...

    @scheduled_job("jobs.cleanup", every=timedelta(hours=1))
    async def cleanup(ctx: JobContext, payload: dict[str, Any]) -> None: ...

The handler contract — delivery is AT LEAST ONCE:

- A handler may run twice, or be cut off part way and run again: its worker may die after the
  effect and before recording success, a lease may run out, a stop may release it. So a
  handler takes ids in its payload, reloads the rows in its own transaction(s) through
  `ctx.services.db.transaction()`, checks whether its effect already happened (a unique key,
  a status, an `emailed_at`), and passes a deterministic idempotency key to outside services
  (Stripe, the product's backend) built from its ids.
- Payloads are JSON with ids, never personal data such as e-mail addresses: they are stored,
  listed to operators and must stay out of logs.
- Raising fails the attempt: it is retried with exponential backoff (jittered, capped) until the
  kind's `max_attempts`, then the job is `dead` with its `last_error` kept, for
  `azora-payments jobs list|retry`. Exceeding the kind's `timeout` is a failure too.
- A scheduled kind has one row, claimed like any job, so one worker runs each slot; it is
  re-armed to the next slot when it finishes and never goes dead.
"""

from __future__ import annotations

from azora_payments.jobs.queue import enqueue
from azora_payments.jobs.registry import (
    DuplicateJobKind,
    Handler,
    JobContext,
    JobKind,
    UnknownJobKind,
    job_kind,
    scheduled_job,
)

__all__ = [
    "DuplicateJobKind",
    "Handler",
    "JobContext",
    "JobKind",
    "UnknownJobKind",
    "enqueue",
    "job_kind",
    "scheduled_job",
]
