"""The job kinds a process knows: a name, its handler, and how it is retried, timed and scheduled.

Kinds register themselves at import with `@job_kind` or `@scheduled_job`; the worker imports
`azora_payments.jobs.kinds` (and any `--import` modules) so that every kind is known.
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from azora_payments.services import Services

DEFAULT_MODULES = ("azora_payments.jobs.kinds",)
MODULES_ENV = "AZORA_JOB_MODULES"

DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_TIMEOUT = 60.0
DEFAULT_BACKOFF_BASE = 5.0
DEFAULT_BACKOFF_CAP = 3600.0
# Each delay is drawn from [1 - JITTER, 1] of its exponential value: jobs that failed together
# spread out, and the next delay is still always longer than the previous one.
BACKOFF_JITTER = 0.25


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler is given besides its payload: the process services and which run this is."""

    services: Services
    job_id: int
    kind: str
    attempt: int
    max_attempts: int
    scheduled_for: datetime
    worker_id: str

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


Handler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]
AfterCommit = Callable[[], Awaitable[None]]
# Runs several jobs of one kind in the worker's transaction, which also records them done; what
# it returns runs once that transaction committed. Any error rolls the whole batch back, and
# each job then runs alone through `handler`, with its own failure and retry.
BatchHandler = Callable[["Services", "AsyncSession", list[dict[str, Any]]], Awaitable[AfterCommit]]


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    handler: Handler
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    every: timedelta | None = None
    batch: BatchHandler | None = None

    @property
    def is_scheduled(self) -> bool:
        return self.every is not None

    @property
    def schedule_key(self) -> str:
        """The fixed `unique_key` of a scheduled kind's one row."""
        return f"schedule:{self.name}"

    def retry_delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt`: exponential, capped, jittered."""
        exponent = min(attempt - 1, 62)
        delay = min(self.backoff_cap, self.backoff_base * 2.0**exponent)
        draw = (rng or random).random()
        return delay * (1.0 - BACKOFF_JITTER * draw)

    def slot_start(self, now: datetime) -> datetime:
        """The start of the interval `now` falls in; slots are aligned on the Unix epoch."""
        assert self.every is not None
        step = self.every.total_seconds()
        return datetime.fromtimestamp(math.floor(now.timestamp() / step) * step, UTC)

    def next_slot(self, now: datetime) -> datetime:
        assert self.every is not None
        return self.slot_start(now) + self.every


class UnknownJobKind(LookupError):
    """`enqueue` or the worker met a kind that no imported module registered."""


class DuplicateJobKind(ValueError):
    """Two handlers were registered under one name."""


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    existing = _KINDS.get(kind.name)
    if existing is not None and existing.handler is not kind.handler:
        raise DuplicateJobKind(f"job kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def _validate(name: str, max_attempts: int, timeout: float, base: float, cap: float) -> None:
    if not name or len(name) > 64:
        raise ValueError("a job kind name is 1 to 64 characters")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if timeout <= 0 or base < 0 or cap < base:
        raise ValueError("timeout must be positive and 0 <= backoff_base <= backoff_cap")


def job_kind(
    name: str,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT,
    backoff_base: float = DEFAULT_BACKOFF_BASE,
    backoff_cap: float = DEFAULT_BACKOFF_CAP,
) -> Callable[[Handler], Handler]:
    """Register `async def handler(ctx, payload)` as the kind `name`; returns it unchanged."""
    _validate(name, max_attempts, timeout, backoff_base, backoff_cap)

    def decorate(handler: Handler) -> Handler:
        register(JobKind(name, handler, max_attempts, timeout, backoff_base, backoff_cap))
        return handler

    return decorate


def scheduled_job(
    name: str,
    *,
    every: timedelta,
    max_attempts: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
    backoff_base: float = DEFAULT_BACKOFF_BASE,
    backoff_cap: float = DEFAULT_BACKOFF_CAP,
) -> Callable[[Handler], Handler]:
    """Register a kind that runs once per `every` across all workers (its payload is `{}`).

    A failed run is retried with backoff like any job; after `max_attempts` the slot is given
    up and the kind waits for its next slot instead of going dead.
    """
    _validate(name, max_attempts, timeout, backoff_base, backoff_cap)
    if every.total_seconds() <= 0:
        raise ValueError("every must be positive")

    def decorate(handler: Handler) -> Handler:
        register(JobKind(name, handler, max_attempts, timeout, backoff_base, backoff_cap, every))
        return handler

    return decorate


def batch_handler(name: str) -> Callable[[BatchHandler], BatchHandler]:
    """Give the kind `name` (registered already) a way to run many of its jobs in one
    transaction (`BatchHandler`): for short jobs whose cost is mostly their transactions."""

    def decorate(handler: BatchHandler) -> BatchHandler:
        kind = get_kind(name)
        if kind.is_scheduled:
            raise ValueError("a scheduled kind runs one job at a time")
        _KINDS[name] = replace(kind, batch=handler)
        return handler

    return decorate


def get_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownJobKind(f"unknown job kind {name!r}: is its module imported?") from None


def find_kind(name: str) -> JobKind | None:
    return _KINDS.get(name)


def registered_kinds() -> dict[str, JobKind]:
    return dict(_KINDS)


def import_kind_modules(extra: Iterable[str] = ()) -> list[str]:
    """Import the default kind modules, those named in AZORA_JOB_MODULES, and `extra`."""
    import os

    names = list(DEFAULT_MODULES)
    names += [part.strip() for part in os.environ.get(MODULES_ENV, "").split(",") if part.strip()]
    names += list(extra)
    seen: list[str] = []
    for name in names:
        if name not in seen:
            importlib.import_module(name)
            seen.append(name)
    return seen


def unregister(name: str) -> None:
    """For tests that register a kind of their own."""
    _KINDS.pop(name, None)
