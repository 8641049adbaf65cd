"""The worker: claims due jobs under a lease, runs their handlers with a time limit, and records
success, a retry with backoff, or death; it stops gracefully on SIGTERM/SIGINT.

Leases are short and renewed by a heartbeat, so the jobs of a worker that died are taken again
within a lease (30 s), however long their kind may run. A database outage stops every
heartbeat, so a lease that ran out during one proves nothing: a worker that has just seen the
database fail leaves others' expired leases alone until the database has answered it for two
heartbeats, time for their live owners to renew them (a worker just started waits as
long: it may have been started during the outage). Outcomes are written only by the owner
of the attempt (see `jobs_repo._update_owned`), so a late one of a lost lease is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import signal
import socket
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments import metrics, telemetry
from azora_payments.db.repositories import jobs as jobs_repo
from azora_payments.db.repositories.jobs import ClaimedJob
from azora_payments.db.types import utcnow
from azora_payments.domain.statuses import JobStatus
from azora_payments.jobs import wakeup
from azora_payments.jobs.queue import refresh_gauges
from azora_payments.jobs.registry import JobContext, JobKind, registered_kinds
from azora_payments.logs import log_fields, scrub
from azora_payments.services import Services

logger = logging.getLogger("azora_payments.jobs.worker")

T = TypeVar("T")

MAX_ERROR_CHARS = 4000
# Writes that record an outcome are retried with these delays (the last one repeated) for up
# to `WorkerOptions.outcome_retry_seconds`; the heartbeat keeps the lease meanwhile. If the
# database stays away longer, the job runs again after its lease, which handlers survive.
OUTCOME_WRITE_DELAYS = (0.1, 0.5, 1.0, 2.0)


def _outcome_dropped(job: ClaimedJob, **fields: object) -> None:
    logger.warning(
        "job outcome dropped: its lease had expired and it was taken again",
        extra=log_fields(job_id=job.id, kind=job.kind, **fields),
    )


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 4
    poll_seconds: float = 0.5
    batch_size: int = 10
    # Jobs of a batched kind (`JobKind.batch`) claimed and run together. Measured with
    # `bench/apply_counts.py`: 10, 25 and 50 webhook events a batch cost 1.1, 0.5 and 0.25
    # statements each. A claim takes only what is due, so batches stay small at low load.
    kind_batch_size: int = 50
    # A claimed job is leased for this long and the lease renewed every `heartbeat_seconds`:
    # a dead worker's jobs are taken again within a lease.
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    # How long to keep trying to record an outcome while the database is away.
    outcome_retry_seconds: float = 60.0
    # On SIGTERM, how long the jobs in hand may take to finish before they are released.
    grace_seconds: float = 25.0
    recover_seconds: float = 1.0
    schedule_seconds: float = 60.0
    metrics_seconds: float = 5.0
    # On PostgreSQL without a pooler, wake at once when the webhook ingest notifies
    # (`jobs.wakeup`) rather than at the next poll; the poll stays, for what a notification misses.
    listen: bool = True
    # Run what is due, then exit.
    once: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.batch_size < 1 or self.kind_batch_size < 1:
            raise ValueError("concurrency, batch_size and kind_batch_size must be at least 1")
        if self.poll_seconds <= 0 or self.grace_seconds < 0 or self.outcome_retry_seconds < 0:
            raise ValueError("poll_seconds must be positive, grace and outcome retries at least 0")
        if not 0 < self.heartbeat_seconds < self.lease_seconds:
            raise ValueError("heartbeat_seconds must be positive and shorter than lease_seconds")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[:128]


class Worker:
    """Runs the registered kinds' jobs from the shared queue until `stop()` (or, with `once`,
    until nothing is due)."""

    def __init__(
        self,
        services: Services,
        *,
        options: WorkerOptions | None = None,
        kinds: Mapping[str, JobKind] | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.services = services
        self.options = options or WorkerOptions()
        self._kinds = dict(kinds) if kinds is not None else None
        self.worker_id = worker_id or default_worker_id()
        self._rng = rng or random.Random()
        # Each task runs one job, or a batch of one kind's jobs (`JobKind.batch`).
        self._inflight: dict[asyncio.Task[None], list[ClaimedJob]] = {}
        self._stop = asyncio.Event()
        # Set by a notification that jobs were committed; cleared before each claim, so that
        # one arriving during a claim that came back short is not lost.
        self._woken = asyncio.Event()
        self._force = asyncio.Event()
        self._seen_kinds: set[str] = set()
        self._done_pending: list[tuple[ClaimedJob, asyncio.Future[None]]] = []
        self._done_lock = asyncio.Lock()
        self.runs = 0
        self._refill = max(1, min(self.options.batch_size, self.options.concurrency) // 2)
        # loop time since which the database has answered this worker without a failure;
        # None until it first answers (after a failure, or at all).
        self._db_ok_since: float | None = None

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Stop claiming; the jobs in hand get the grace period. A second call releases them."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    @property
    def kinds(self) -> dict[str, JobKind]:
        return self._kinds if self._kinds is not None else registered_kinds()

    async def run(self) -> None:
        kinds = self.kinds
        lease = timedelta(seconds=self.options.lease_seconds)
        # Kinds that run in batches are claimed apart, a batch a slot; the others a job a slot.
        leases = {name: lease for name, kind in kinds.items() if kind.batch is None}
        batch_leases = {name: lease for name, kind in kinds.items() if kind.batch is not None}
        logger.info(
            "worker started",
            extra=log_fields(
                worker_id=self.worker_id,
                kinds=sorted(kinds),
                concurrency=self.options.concurrency,
            ),
        )
        loop = asyncio.get_running_loop()
        due = {"recover": 0.0, "schedule": 0.0, "metrics": 0.0}
        failures = 0
        heartbeat = asyncio.create_task(self._heartbeat())
        listening = self.options.listen and not self.options.once
        listening = listening and wakeup.can_listen(
            self.services.db, pooler=self.services.settings.database_pooler
        )
        listener = asyncio.create_task(self._listen()) if listening else None
        try:
            while not self._stop.is_set():
                now = loop.time()
                try:
                    if now >= due["schedule"]:
                        await self._arm_schedules(kinds)
                        self._database_answered()
                        due["schedule"] = now + self.options.schedule_seconds
                    if now >= due["recover"] and self._settled(now):
                        await self._recover(kinds)
                        due["recover"] = now + self.options.recover_seconds
                    if now >= due["metrics"]:
                        await self._refresh_gauges(kinds)
                        due["metrics"] = now + self.options.metrics_seconds
                    free = self.options.concurrency - len(self._inflight)
                    self._woken.clear()
                    asked_batch = self.options.kind_batch_size if batch_leases and free > 0 else 0
                    batch = await self._claim(batch_leases, asked_batch) if asked_batch else []
                    if batch:
                        free -= 1
                    # Claim in batches: wait for a few slots to free rather than pay a claim
                    # for every finished job — unless nothing is running.
                    refill = free >= self._refill or not (self._inflight or batch)
                    asked = min(free, self.options.batch_size) if refill and leases else 0
                    claimed = await self._claim(leases, asked) if asked > 0 else []
                    failures = 0
                    self._database_answered()
                except Exception:
                    failures += 1
                    self._database_failed()
                    logger.exception(
                        "job queue unavailable", extra=log_fields(worker_id=self.worker_id)
                    )
                    await self._sleep(min(30.0, self.options.poll_seconds * 2**failures))
                    continue
                for group in _by_kind(batch):
                    self._start(self._run_batch(kinds[group[0].kind], group), group)
                for job in claimed:
                    self._start(self._run_job(kinds[job.kind], job), [job])
                if self.options.once and not claimed and not batch and not self._inflight:
                    break
                free_left = self.options.concurrency - len(self._inflight)
                full = (asked > 0 and len(claimed) == asked and free_left >= self._refill) or (
                    asked_batch > 0 and len(batch) == asked_batch and free_left > 0
                )
                if full:
                    continue  # a full claim: more may be due, and there is room for it
                # Drained: every claim made came back short (wait the poll interval); else the
                # slots are busy (wait for one to free).
                claims = [(asked, len(claimed)), (asked_batch, len(batch))]
                made = [(n, got) for n, got in claims if n > 0]
                drained = bool(made) and all(n > got for n, got in made)
                await self._wait(tasks=not drained or self.options.once)
        finally:
            try:
                await self._drain()
            finally:
                background = [heartbeat] if listener is None else [heartbeat, listener]
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            logger.info(
                "worker stopped", extra=log_fields(worker_id=self.worker_id, runs=self.runs)
            )

    # ------------------------------------------------------------------ leases

    def _database_answered(self) -> None:
        if self._db_ok_since is None:
            self._db_ok_since = asyncio.get_running_loop().time()

    def _database_failed(self) -> None:
        self._db_ok_since = None

    def _settled(self, now: float) -> bool:
        """Whether others' expired leases may be taken: not until the database has answered
        this worker for two heartbeats since it started or last failed (module docstring)."""
        since = self._db_ok_since
        return since is not None and now - since >= 2 * self.options.heartbeat_seconds

    async def _heartbeat(self) -> None:
        """Renew the leases of the jobs in hand; a job found taken by another is cancelled
        here (its outcome would be dropped anyway, and its work is someone else's now)."""
        delay = self.options.heartbeat_seconds
        while True:
            await asyncio.sleep(delay)
            held = {
                (job.id, job.attempts): task
                for task, jobs in self._inflight.items()
                for job in jobs
            }
            if not held:
                delay = self.options.heartbeat_seconds
                continue
            now = utcnow()
            try:
                async with self.services.db.transaction() as session:
                    kept = await jobs_repo.renew(
                        session,
                        claims=list(held),
                        worker_id=self.worker_id,
                        now=now,
                        until=now + timedelta(seconds=self.options.lease_seconds),
                    )
            except Exception:
                self._database_failed()
                logger.warning(
                    "could not renew job leases: trying again",
                    extra=log_fields(worker_id=self.worker_id, jobs=[i for i, _ in held]),
                )
                # Soon, so that the leases are renewed as soon as the database is back.
                delay = min(1.0, self.options.heartbeat_seconds)
                continue
            self._database_answered()
            delay = self.options.heartbeat_seconds
            # A batch is stopped only once all its jobs are lost: the others' work is still ours.
            lost = {task for (job_id, _), task in held.items() if job_id not in kept}
            for (job_id, attempt), task in held.items():
                if task in lost and not task.done():
                    if any(job.id in kept for job in self._inflight.get(task, [])):
                        continue
                    logger.warning(
                        "job lease lost: another worker took the job; stopping this attempt",
                        extra=log_fields(job_id=job_id, attempt=attempt),
                    )
                    task.cancel()

    async def _listen(self) -> None:
        """Hold a LISTEN connection while running, opened again after a loss; meanwhile the
        poll alone finds the jobs."""
        delay = 1.0
        while True:
            try:
                conn = await wakeup.listen(self.services.db, self._woken.set)
            except Exception:
                logger.warning(
                    "could not listen for new jobs: polling only, trying again",
                    exc_info=True,
                    extra=log_fields(worker_id=self.worker_id, retry_in_s=delay),
                )
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            delay = 1.0
            await _until_lost(conn)
            # What was notified while it was away is due now.
            self._woken.set()
            logger.warning(
                "lost the connection listening for new jobs: opening another",
                extra=log_fields(worker_id=self.worker_id),
            )

    def _start(self, work: Coroutine[Any, Any, None], jobs: list[ClaimedJob]) -> None:
        task = asyncio.create_task(work)
        self._inflight[task] = jobs
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    async def _wait(self, *, tasks: bool) -> None:
        """Until the poll interval passes, a stop is asked, jobs are notified, or (with `tasks`)
        a slot frees."""
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        woken: asyncio.Future[Any] = asyncio.ensure_future(self._woken.wait())
        waiting: set[asyncio.Future[Any]] = {stop, woken}
        if tasks:
            waiting.update(self._inflight)
        try:
            await asyncio.wait(
                waiting, timeout=self.options.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
            woken.cancel()

    async def _drain(self) -> None:
        """Let the jobs in hand finish within the grace period; release the others."""
        if not self._inflight:
            return
        logger.info(
            "worker stopping: waiting for jobs in hand",
            extra=log_fields(
                worker_id=self.worker_id,
                jobs=[j.id for jobs in self._inflight.values() for j in jobs],
            ),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.grace_seconds
        force: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
        try:
            while self._inflight and not force.done():
                left = deadline - loop.time()
                if left <= 0:
                    break
                waiting: set[asyncio.Future[Any]] = {force, *self._inflight}
                await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
        pending = {task for task in self._inflight if not task.done()}
        if not pending:
            return
        unfinished = {task: self._inflight[task] for task in pending if task in self._inflight}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for jobs in unfinished.values():
            for job in jobs:
                await self._release(job)

    async def _release(self, job: ClaimedJob) -> None:
        await self._write_outcome(
            job,
            "released",
            lambda s: jobs_repo.release(
                s, job_id=job.id, worker_id=self.worker_id, attempt=job.attempts, now=utcnow()
            ),
        )
        logger.warning(
            "job released unfinished: the grace period ran out",
            extra=log_fields(job_id=job.id, kind=job.kind, attempt=job.attempts),
        )

    # ------------------------------------------------------------------ queue work

    async def _claim(self, leases: Mapping[str, timedelta], limit: int) -> list[ClaimedJob]:
        async with self.services.db.transaction() as session:
            return await jobs_repo.claim(
                session, leases=leases, worker_id=self.worker_id, now=utcnow(), limit=limit
            )

    async def _recover(self, kinds: Mapping[str, JobKind]) -> None:
        scheduled = [name for name, kind in kinds.items() if kind.is_scheduled]
        async with self.services.db.transaction() as session:
            lost = await jobs_repo.recover_expired(session, now=utcnow(), scheduled_kinds=scheduled)
        for job in lost:
            metrics.JOB_RUNS.labels(job.kind, "lost").inc()
            if job.status == JobStatus.DEAD:
                metrics.JOB_RUNS.labels(job.kind, "dead").inc()
            logger.warning(
                "job lease expired: its worker was lost",
                extra=log_fields(job_id=job.id, kind=job.kind, status=job.status),
            )

    async def _arm_schedules(self, kinds: Mapping[str, JobKind]) -> None:
        now = utcnow()
        for kind in kinds.values():
            if not kind.is_scheduled:
                continue
            async with self.services.db.transaction() as session:
                await jobs_repo.ensure_scheduled(
                    session,
                    kind=kind.name,
                    unique_key=kind.schedule_key,
                    run_at=kind.slot_start(now),
                    max_attempts=kind.max_attempts,
                    now=now,
                    latest=kind.next_slot(now),
                )

    async def _refresh_gauges(self, kinds: Mapping[str, JobKind]) -> None:
        self._seen_kinds = await refresh_gauges(
            self.services.db, known=self._seen_kinds | set(kinds)
        )

    async def _run_job(self, kind: JobKind, job: ClaimedJob) -> None:
        ctx = JobContext(
            services=self.services,
            job_id=job.id,
            kind=job.kind,
            attempt=job.attempts,
            max_attempts=job.max_attempts,
            scheduled_for=job.run_at,
            worker_id=self.worker_id,
        )
        fields = {"job_id": job.id, "kind": job.kind, "attempt": job.attempts}
        loop = asyncio.get_running_loop()
        started = loop.time()
        error: BaseException | None = None
        timed_out = False
        try:
            with telemetry.job_span(job.kind, job.id, job.attempts, job.payload):
                async with asyncio.timeout(kind.timeout) as limit:
                    await kind.handler(ctx, job.payload)
        except TimeoutError as exc:
            error, timed_out = exc, limit.expired()
        except Exception as exc:
            error = exc
        self.runs += 1
        fields["duration_ms"] = round((loop.time() - started) * 1000, 1)
        if error is None:
            await self._succeeded(kind, job, fields)
        else:
            await self._failed(kind, job, error, timed_out=timed_out, fields=fields)

    async def _run_batch(self, kind: JobKind, jobs: list[ClaimedJob]) -> None:
        """Run a batch of `kind`'s jobs in one transaction that also records them done; if it
        fails, each job runs alone (`_run_job`), as if it had never been batched: the attempt
        claimed is the same, and so are its failure, retry and death."""
        assert kind.batch is not None
        if len(jobs) == 1:
            await self._run_job(kind, jobs[0])
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with telemetry.job_span(kind.name, jobs[0].id, jobs[0].attempts, {}):
                async with asyncio.timeout(kind.timeout):
                    async with self.services.db.transaction() as session:
                        after = await kind.batch(self.services, session, [j.payload for j in jobs])
                        owned = await jobs_repo.mark_done_many(
                            session,
                            claims=[(j.id, j.attempts) for j in jobs],
                            worker_id=self.worker_id,
                            now=utcnow(),
                        )
        except Exception:
            logger.info(
                "job batch failed: running its jobs one by one",
                exc_info=True,
                extra=log_fields(kind=kind.name, jobs=[j.id for j in jobs]),
            )
            for job in jobs:
                await self._run_job(kind, job)
            return
        self._database_answered()
        self.runs += len(jobs)
        duration = round((loop.time() - started) * 1000, 1)
        for job in jobs:
            metrics.JOB_RUNS.labels(job.kind, "succeeded").inc()
            if job.id not in owned:
                # Its work committed with the batch all the same; the handler is idempotent.
                _outcome_dropped(job)
        logger.debug(
            "job batch succeeded",
            extra=log_fields(kind=kind.name, jobs=[j.id for j in jobs], duration_ms=duration),
        )
        try:
            await after()
        except Exception:
            logger.exception(
                "job batch: its after-commit step failed", extra=log_fields(kind=kind.name)
            )

    async def _rearm_schedule(
        self, kind: JobKind, job: ClaimedJob, *, outcome: str, last_error: str | None
    ) -> None:
        """Put a scheduled kind's row back for its next slot, attempts reset."""
        now = utcnow()
        await self._reschedule(
            job,
            outcome,
            now=now,
            run_at=kind.next_slot(now),
            last_error=last_error,
            reset_attempts=True,
            finished=True,
        )

    async def _reschedule(
        self,
        job: ClaimedJob,
        outcome: str,
        *,
        now: datetime,
        run_at: datetime,
        last_error: str | None,
        reset_attempts: bool = False,
        finished: bool = False,
    ) -> None:
        await self._write_outcome(
            job,
            outcome,
            lambda s: jobs_repo.reschedule(
                s,
                job_id=job.id,
                worker_id=self.worker_id,
                attempt=job.attempts,
                now=now,
                run_at=run_at,
                last_error=last_error,
                reset_attempts=reset_attempts,
                finished=finished,
            ),
        )

    async def _succeeded(self, kind: JobKind, job: ClaimedJob, fields: dict[str, object]) -> None:
        if kind.is_scheduled and job.unique_key == kind.schedule_key:
            await self._rearm_schedule(kind, job, outcome="succeeded", last_error=None)
        else:
            await self._mark_done(job)
        logger.debug("job succeeded", extra=log_fields(**fields))

    async def _mark_done(self, job: ClaimedJob) -> None:
        """Record a success, in one statement with the other successes waiting to be recorded.

        The first waiter writes everything pending while later ones queue on the lock and
        find their own result written, or write the next batch: a group commit that saves a
        transaction per job when jobs are short.
        """
        metrics.JOB_RUNS.labels(job.kind, "succeeded").inc()
        done = asyncio.get_running_loop().create_future()
        self._done_pending.append((job, done))
        async with self._done_lock:
            if done.done():
                return
            batch, self._done_pending = self._done_pending, []
            try:
                owned = await self._with_retries(
                    lambda s: jobs_repo.mark_done_many(
                        s,
                        claims=[(j.id, j.attempts) for j, _ in batch],
                        worker_id=self.worker_id,
                        now=utcnow(),
                    )
                )
            except BaseException:
                # Cancelled mid-write: leave the batch to the next writer (or the lease).
                self._done_pending[:0] = batch
                raise
            for claimed, future in batch:
                if not future.done():
                    future.set_result(None)
                if owned is not None and claimed.id not in owned:
                    _outcome_dropped(claimed)

    async def _failed(
        self,
        kind: JobKind,
        job: ClaimedJob,
        error: BaseException,
        *,
        timed_out: bool,
        fields: dict[str, object],
    ) -> None:
        now = utcnow()
        text = describe_error(error, timed_out=timed_out, limit=kind.timeout)
        fields["error"] = text.splitlines()[0]
        scheduled = kind.is_scheduled and job.unique_key == kind.schedule_key
        if job.attempts < job.max_attempts:
            delay = kind.retry_delay(job.attempts, rng=self._rng)
            run_at = now + timedelta(seconds=delay)
            outcome = "timed_out" if timed_out else "failed"
            await self._reschedule(job, outcome, now=now, run_at=run_at, last_error=text)
            logger.warning(
                "job failed: will retry",
                exc_info=error,
                extra=log_fields(**fields, retry_in_s=round(delay, 3)),
            )
        elif scheduled:
            # A scheduled kind is never dead: it gives this slot up and waits for the next.
            await self._rearm_schedule(kind, job, outcome="gave_up", last_error=text)
            logger.error(
                "scheduled job failed its last attempt: waiting for its next slot",
                exc_info=error,
                extra=log_fields(**fields),
            )
        else:
            await self._write_outcome(
                job,
                "dead",
                lambda s: jobs_repo.mark_dead(
                    s,
                    job_id=job.id,
                    worker_id=self.worker_id,
                    attempt=job.attempts,
                    now=now,
                    last_error=text,
                ),
            )
            logger.error(
                "job is dead: attempts used up", exc_info=error, extra=log_fields(**fields)
            )

    async def _write_outcome(
        self,
        job: ClaimedJob,
        outcome: str,
        write: Callable[[AsyncSession], Awaitable[bool]],
    ) -> None:
        metrics.JOB_RUNS.labels(job.kind, outcome).inc()
        owned = await self._with_retries(write)
        if owned is False:
            _outcome_dropped(job, outcome=outcome)

    async def _with_retries(self, write: Callable[[AsyncSession], Awaitable[T]]) -> T | None:
        """Run `write` in a transaction, retrying for `outcome_retry_seconds`; None if the
        database stays away (the lease then runs out and the job runs again, which handlers
        are written for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.outcome_retry_seconds
        tries = 0
        while True:
            try:
                async with self.services.db.transaction() as session:
                    result = await write(session)
            except Exception:
                self._database_failed()
                delay = OUTCOME_WRITE_DELAYS[min(tries, len(OUTCOME_WRITE_DELAYS) - 1)]
                tries += 1
                if loop.time() + delay > deadline:
                    logger.exception(
                        "could not record a job's outcome: it will run again after its lease",
                        extra=log_fields(worker_id=self.worker_id),
                    )
                    return None
                await asyncio.sleep(delay)
                continue
            self._database_answered()
            return result


async def _until_lost(conn: asyncpg.Connection) -> None:
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    try:
        await lost.wait()
    finally:
        conn.terminate()


def _by_kind(jobs: Iterable[ClaimedJob]) -> list[list[ClaimedJob]]:
    """Claimed jobs grouped by kind, each group in claim order."""
    groups: dict[str, list[ClaimedJob]] = {}
    for job in jobs:
        groups.setdefault(job.kind, []).append(job)
    return list(groups.values())


def describe_error(error: BaseException, *, timed_out: bool, limit: float) -> str:
    """`last_error`: a one-line summary, then the traceback; scrubbed like a log line."""
    if timed_out:
        summary = f"timed out after {limit:g}s"
    else:
        summary = f"{type(error).__name__}: {error}".strip().rstrip(":")
    summary = summary.splitlines()[0] if summary else type(error).__name__
    trace = "".join(traceback.format_exception(error))
    return scrub(f"{summary}\n{trace}")[:MAX_ERROR_CHARS]


async def run_worker(
    services: Services,
    *,
    options: WorkerOptions,
    kinds: Mapping[str, JobKind] | None = None,
    install_signals: bool = True,
) -> Worker:
    """Run a worker in this event loop until SIGTERM/SIGINT (a second signal stops at once)."""
    worker = Worker(services, options=options, kinds=kinds)
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    return worker
