"""Idempotency keys that survive races, retries, crashes and several servers.

After Brandur Leach's "Implementing Stripe-like Idempotency Keys in Postgres": the key row in the
database is the source of truth and records a recovery point; work runs in atomic phases, each
committing its progress with the next recovery point; a request holds the key with a lock that
expires (`IDEMPOTENCY_LOCK_SECONDS`), so a request that died is finished, not repeated, by the
next attempt with the same key. Redis, when configured, only keeps finished answers close at
hand: the service is correct, only slower, without it.

A key's answer is stored as `api/` rendered it (`api/answers.py`, installed as the renderer
where the services are built): flows end with an outcome, never with a status code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.db.models import IdempotencyKey
from azora_payments.db.repositories import idempotency as keys_repo
from azora_payments.db.repositories.upsert import insert_ignore_returning
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.errors import (
    AzoraError,
    IdempotencyKeyReused,
    IdempotencyRequestInProgress,
    StripeRejected,
)

if TYPE_CHECKING:
    from azora_payments.domain.flow_outcomes import Outcome, Renderer

logger = logging.getLogger(__name__)

STARTED = "started"
FINISHED = "finished"
# How long a duplicate waits for the first request to finish before answering 409.
WAIT_FOR_FIRST_SECONDS = 10.0
_POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Stored:
    """A finished answer: its status and its exact JSON text, replayed byte for byte."""

    status: int
    body: str

    @classmethod
    def of(cls, status: int, body: dict[str, Any]) -> Stored:
        return cls(status, json.dumps(body, separators=(",", ":"), ensure_ascii=False))

    @property
    def ok(self) -> bool:
        """Whether the answer is a success (not a problem)."""
        return self.status < 300


class _Rendering:
    renderer: Renderer | None = None


def install_renderer(renderer: Renderer) -> None:
    """Set how outcomes become stored answers (`api.answers.install` does, once per process)."""
    _Rendering.renderer = renderer


def render(outcome: Outcome) -> Stored:
    """The answer stored and sent for `outcome`, as `api/` renders it."""
    renderer = _Rendering.renderer
    if renderer is None:
        raise RuntimeError("no answer renderer installed: build the services (services.py)")
    return renderer(outcome)


@dataclass(slots=True)
class Held:
    """A key this request holds: where the work got to, and the lock that proves we hold it."""

    key_id: int
    recovery_point: str
    lock: datetime
    payment_id: str | None
    refund_id: str | None
    # When the key was first used: it is forgotten IDEMPOTENCY_KEY_TTL_HOURS later.
    created_at: datetime | None = None


class PhaseLock:
    """One phase of the work under a held key, inside the phase's transaction: the phase's
    changes commit with the key's move (`advance`) or its final answer (`finish`), or not at
    all. Both raise `IdempotencyRequestInProgress` when a newer attempt took the key over, which
    rolls the phase back: that attempt does the work, this one must not."""

    def __init__(self, keys: IdempotencyKeys, session: AsyncSession, held: Held) -> None:
        self._keys = keys
        self.session = session
        self.held = held

    async def advance(
        self, recovery_point: str, *, payment_id: str | None = None, refund_id: str | None = None
    ) -> None:
        if not await self._keys.advance(
            self.session,
            self.held,
            recovery_point=recovery_point,
            payment_id=payment_id,
            refund_id=refund_id,
        ):
            raise _lock_lost()

    async def finish(self, outcome: Outcome) -> Stored:
        """Store the outcome's answer as the key's final one; that answer."""
        stored = render(outcome)
        if not await self._keys.store(self.session, self.held, stored):
            raise _lock_lost()
        return stored


def _lock_lost() -> IdempotencyRequestInProgress:
    return IdempotencyRequestInProgress(headers={"Retry-After": "1"})


class KeyBusy(Exception):
    """The key is held by a request still in flight: whoever wanted it must not race it."""


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


class IdempotencyKeys:
    def __init__(
        self,
        *,
        db: Database,
        redis: aioredis.Redis | None,
        lock_seconds: int,
        ttl_hours: int,
        wait_seconds: float = WAIT_FOR_FIRST_SECONDS,
    ) -> None:
        self.db = db
        self.redis = redis
        self.lock_seconds = lock_seconds
        self.ttl_hours = ttl_hours
        self.wait_seconds = wait_seconds

    async def begin(
        self, *, user_id: str, key: str, method: str, path: str, fingerprint: str
    ) -> Held | Stored:
        """Take the key, or return the answer it already has. A duplicate of a request still
        in flight waits a little for its answer, then gets 409 with Retry-After."""
        cached = await self._cached(user_id, key, fingerprint)
        if cached is not None:
            return cached
        deadline = time.monotonic() + self.wait_seconds
        while True:
            outcome = await self._try_begin(
                user_id=user_id, key=key, method=method, path=path, fingerprint=fingerprint
            )
            if outcome is not None:
                return outcome
            # Watch the holder with plain reads; take the key again only once it looks free.
            while True:
                if time.monotonic() >= deadline:
                    raise IdempotencyRequestInProgress(
                        "Retry after the first request has finished.",
                        headers={"Retry-After": "1"},
                        retryable=True,
                    )
                await asyncio.sleep(_POLL_SECONDS)
                if await self._looks_free(user_id=user_id, key=key):
                    break

    async def _looks_free(self, *, user_id: str, key: str) -> bool:
        async with self.db.read() as session:
            row = await keys_repo.get(session, user_id=user_id, key=key)
        return row is None or row.locked_at is None or self._expired(row.locked_at)

    def _forgotten(self, created_at: datetime) -> bool:
        return utcnow() - created_at >= timedelta(hours=self.ttl_hours)

    def _expired(self, locked_at: datetime) -> bool:
        return utcnow() - locked_at >= timedelta(seconds=self.lock_seconds)

    async def _try_begin(
        self, *, user_id: str, key: str, method: str, path: str, fingerprint: str
    ) -> Held | Stored | None:
        now = utcnow()
        # A new key is inserted already locked by us: nothing else can have seen it. That one
        # statement commits by itself (on PostgreSQL without BEGIN and COMMIT); only a key
        # that exists is read again, locked, in a transaction.
        async with self.db.single_statement() as session:
            inserted = await insert_ignore_returning(
                session,
                IdempotencyKey,
                {
                    "user_id": user_id,
                    "key": key,
                    "request_method": method,
                    "request_path": path,
                    "request_hash": fingerprint,
                    "recovery_point": STARTED,
                    "locked_at": now,
                    "created_at": now,
                    "last_run_at": now,
                },
                "id",
            )
        if inserted is not None:
            return Held(
                key_id=int(inserted),
                recovery_point=STARTED,
                lock=now,
                payment_id=None,
                refund_id=None,
                created_at=now,
            )
        async with self.db.transaction() as session:
            row = await keys_repo.get(session, user_id=user_id, key=key, for_update=True)
            if row is None:
                return None  # purged since the insert met it: the caller takes it afresh
            if self._forgotten(row.created_at):
                # Older than the TTL: forgotten (API.md), whether or not the purge has removed it
                # yet. The row is taken over as a new key, so no stale answer is ever replayed.
                _start_afresh(row, method=method, path=path, fingerprint=fingerprint, now=now)
                return Held(
                    key_id=row.id,
                    recovery_point=STARTED,
                    lock=now,
                    payment_id=None,
                    refund_id=None,
                    created_at=now,
                )
            if (
                row.request_hash != fingerprint
                or row.request_method != method
                or row.request_path != path
            ):
                raise IdempotencyKeyReused()
            if row.recovery_point == FINISHED and row.response_status is not None:
                return Stored(row.response_status, row.response_body or "{}")
            if row.locked_at is not None and not self._expired(row.locked_at):
                return None
            if row.locked_at is not None:
                logger.warning("idempotency key %s: lock expired, resuming", row.id)
            return _hold(row, now)

    async def take_over(
        self, *, payment_id: str | None = None, refund_id: str | None = None
    ) -> Held | Stored | None:
        """Take the key of the request that made this payment (or refund), as a retry would,
        so that reconciliation can finish that request without racing one: `Held` (ours now),
        `Stored` (it already has its answer), None (no key any more). `KeyBusy` while a live
        request holds it."""
        now = utcnow()
        async with self.db.transaction() as session:
            row = await keys_repo.of_work(session, payment_id=payment_id, refund_id=refund_id)
            if row is None:
                return None
            if row.recovery_point == FINISHED and row.response_status is not None:
                return Stored(row.response_status, row.response_body or "{}")
            if row.locked_at is not None and not self._expired(row.locked_at):
                raise KeyBusy(f"idempotency key {row.id} is held")
            return _hold(row, now)

    async def _owned(self, session: Any, held: Held) -> IdempotencyKey | None:
        row = await keys_repo.get_by_id(session, held.key_id)
        if row is None or row.locked_at != held.lock:
            self._lost(held)
            return None
        return row

    async def _update_owned(self, session: Any, held: Held, values: dict[str, Any]) -> bool:
        """`values` written to the key in the caller's transaction, if we still hold it."""
        if await keys_repo.update_if_locked(
            session, key_id=held.key_id, lock=held.lock, values=values
        ):
            return True
        self._lost(held)
        return False

    @staticmethod
    def _lost(held: Held) -> None:
        logger.warning("idempotency key %s: lock lost to a newer attempt", held.key_id)

    async def advance(
        self,
        session: Any,
        held: Held,
        *,
        recovery_point: str,
        payment_id: str | None = None,
        refund_id: str | None = None,
    ) -> bool:
        """Record progress in the caller's transaction; False if another attempt took over."""
        values: dict[str, Any] = {"recovery_point": recovery_point}
        if payment_id is not None:
            values["payment_id"] = payment_id
        if refund_id is not None:
            values["refund_id"] = refund_id
        if not await self._update_owned(session, held, values):
            return False
        if payment_id is not None:
            held.payment_id = payment_id
        if refund_id is not None:
            held.refund_id = refund_id
        held.recovery_point = recovery_point
        return True

    async def finish(self, session: Any, held: Held, outcome: Outcome) -> bool:
        """Store the outcome's answer in the caller's transaction; False if we lost the key."""
        return await self.store(session, held, render(outcome))

    async def store(self, session: Any, held: Held, answer: Stored) -> bool:
        """Store a rendered final answer in the caller's transaction; False if we lost the key."""
        return await self._update_owned(
            session,
            held,
            {
                "recovery_point": FINISHED,
                "response_status": answer.status,
                "response_body": answer.body,
                "locked_at": None,
            },
        )

    async def release(self, held: Held) -> None:
        """Give the key up unfinished (e.g. Stripe unreachable): the next attempt continues."""
        async with self.db.transaction() as session:
            await self._update_owned(session, held, {"locked_at": None})

    async def forget(self, held: Held) -> None:
        """Drop a key whose request failed before anything started (not stored, per the API)."""
        async with self.db.transaction() as session:
            row = await self._owned(session, held)
            if row is not None and row.payment_id is None and row.refund_id is None:
                await keys_repo.delete_by_id(session, held.key_id)
            elif row is not None:
                row.locked_at = None

    @asynccontextmanager
    async def phase(self, held: Held) -> AsyncIterator[PhaseLock]:
        """Open one phase's transaction under `held`; end it with `advance` or `finish`."""
        async with self.db.transaction() as session:
            yield PhaseLock(self, session, held)

    @asynccontextmanager
    async def working(self, held: Held) -> AsyncIterator[None]:
        """Around the work done under a held key: if it fails, the key is given up, forgotten
        when nothing was started (not stored, per the API), else released unfinished so that
        the next attempt continues where this one stopped."""
        try:
            yield
        except (AzoraError, StripeRejected):
            # Refused before anything started (ours or Stripe's refusal): nothing to resume.
            if held.payment_id is None and held.refund_id is None:
                await self.forget(held)
            else:
                await self.release(held)
            raise
        except BaseException:
            await self.release(held)
            raise

    async def remember(
        self,
        *,
        user_id: str,
        key: str,
        fingerprint: str,
        answer: Stored,
        created_at: datetime | None = None,
    ) -> None:
        """Keep a committed answer in Redis for fast replays (best effort). `created_at` is when
        the key was first used: the cached answer is forgotten when the key is."""
        if self.redis is None:
            return
        created_at = created_at or utcnow()
        ttl = int(self.ttl_hours * 3600 - (utcnow() - created_at).total_seconds())
        if ttl <= 0:
            return
        value = json.dumps(
            {
                "hash": fingerprint,
                "status": answer.status,
                "body": answer.body,
                "created": created_at.timestamp(),
            }
        )
        try:
            await self.redis.set(_redis_key(user_id, key), value, ex=ttl)
        except Exception:
            logger.warning("redis unavailable: idempotent answer not cached")

    async def _cached(self, user_id: str, key: str, fingerprint: str) -> Stored | None:
        if self.redis is None:
            return None
        try:
            raw = await self.redis.get(_redis_key(user_id, key))
        except Exception:
            logger.warning("redis unavailable: idempotency falls back to the database")
            return None
        if raw is None:
            return None
        cached = json.loads(raw)
        created = cached.get("created")
        if created is not None and self._forgotten(datetime.fromtimestamp(float(created), UTC)):
            return None
        if cached["hash"] != fingerprint:
            raise IdempotencyKeyReused()
        return Stored(int(cached["status"]), str(cached["body"]))

    async def purge_expired(self) -> int:
        cutoff = utcnow() - timedelta(hours=self.ttl_hours)
        async with self.db.transaction() as session:
            return await keys_repo.delete_older_than(session, cutoff)


def _start_afresh(
    row: IdempotencyKey, *, method: str, path: str, fingerprint: str, now: datetime
) -> None:
    """Turn a forgotten key's row into a new key held by this request."""
    row.request_method = method
    row.request_path = path
    row.request_hash = fingerprint
    row.recovery_point = STARTED
    row.response_status = None
    row.response_body = None
    row.payment_id = None
    row.refund_id = None
    row.locked_at = now
    row.created_at = now
    row.last_run_at = now


def _hold(row: IdempotencyKey, now: datetime) -> Held:
    """Lock a key row (in the caller's transaction) for this attempt."""
    row.locked_at = now
    row.last_run_at = now
    return Held(
        key_id=row.id,
        recovery_point=row.recovery_point,
        lock=now,
        payment_id=row.payment_id,
        refund_id=row.refund_id,
        created_at=row.created_at,
    )


def _redis_key(user_id: str, key: str) -> str:
    digest = hashlib.sha256(f"{user_id}\0{key}".encode()).hexdigest()
    return f"azora:idem:{digest}"
