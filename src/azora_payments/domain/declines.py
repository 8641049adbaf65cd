"""Card-testing defence: what a decline is told as, and how many declines stop new attempts.

A card tester sends many cards through one account to learn which are live and which are
flagged. Two answers to that (API.md, Payments):

- The reasons that would teach them something (`stolen_card`, `fraudulent`, …) are told to the
  customer and the product as `generic_decline`; the real one is kept for operators
  (`payments.stripe_decline_code`, the audit log).
- Every decline Stripe reports (in its answer or by webhook) is recorded once, in the
  transaction that learns it, against the user, the card's fingerprint and the client address.
  A new attempt is refused with `429` before Stripe is called once any of the three reached its
  `RATE_LIMIT_DECLINES_*`.

The counts are kept in Redis (a `limits` moving window) when there is one. They never fail
open: when Redis does not answer, the database's record of declines is counted instead. The
declines recorded meanwhile never reached Redis, so a process that saw Redis fail keeps
counting in the database for one window, and once Redis answers again it leaves a mark there
(`_DATABASE_MARK`, expiring with that window) that sends every other process to the database
too, those that never saw the outage included.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from sqlalchemy.ext.asyncio import AsyncSession

from azora_payments.config import Settings
from azora_payments.db.models import Payment
from azora_payments.db.repositories import declines as declines_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.errors import RateLimited
from azora_payments.ratelimit import close_storage, drop_connections, redis_storage
from azora_payments.stripe_gateway import DEFAULT_CARD_MESSAGE, PaymentError

logger = logging.getLogger(__name__)

GENERIC_DECLINE = "generic_decline"

# Stripe's decline codes whose very name tells a card tester something about the card: that it
# is flagged (lost, stolen, fraud, blocked by the issuer or the network) or that it is real and
# live but stopped by its holder or replaced. Stripe's own advice for the first seven is "don't
# report more detailed information to your customer: present as generic_decline".
MASKED_DECLINE_CODES = frozenset(
    {
        "fraudulent",
        "lost_card",
        "merchant_blacklist",
        "pickup_card",
        "restricted_card",
        "security_violation",
        "stolen_card",
        "invalid_account",
        "new_account_information_available",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "stop_payment_order",
    }
)

# Stripe's error codes for a card that was tried and refused: what the limits count. (Stripe's
# refusals of the request itself, failed 3-D Secure and outages are not declines.)
DECLINE_ERROR_CODES = frozenset(
    {
        "card_declined",
        "expired_card",
        "incorrect_cvc",
        "invalid_cvc",
        "incorrect_number",
        "invalid_number",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "incorrect_zip",
        "insufficient_funds",
        "card_velocity_exceeded",
        "processing_error",
    }
)


def public_failure(error: PaymentError) -> PaymentError:
    """The failure as the customer and the product are told it."""
    if error.decline_code in MASKED_DECLINE_CODES:
        return PaymentError("card_declined", GENERIC_DECLINE, DEFAULT_CARD_MESSAGE)
    return PaymentError(error.code, error.decline_code, error.message)


def is_decline(error: PaymentError) -> bool:
    return error.decline_code is not None or error.code in DECLINE_ERROR_CODES


# ------------------------------------------------------------------ recording


@dataclass(frozen=True, slots=True)
class Decline:
    """What one decline counts against (any of the three may be unknown)."""

    user_id: str
    card_fingerprint: str | None
    client_ip: str | None

    def counted_against(self) -> list[tuple[str, str]]:
        found = [("user", self.user_id), ("card", self.card_fingerprint), ("ip", self.client_ip)]
        return [(name, value) for name, value in found if value]


# Declines recorded in this task (in transactions that may yet commit): the boundary that
# commits them counts them in Redis afterwards (see `collecting`).
_recorded: ContextVar[list[Decline] | None] = ContextVar("azora_declines", default=None)


@contextmanager
def collecting() -> Iterator[list[Decline]]:
    """Collect the declines recorded within; count them (`DeclineLimits.count`) once the
    transaction that recorded them committed."""
    found: list[Decline] = []
    token = _recorded.set(found)
    try:
        yield found
    finally:
        _recorded.reset(token)


async def record(session: AsyncSession, payment: Payment, error: PaymentError) -> bool:
    """Record one decline of `payment` in the caller's transaction, once per failed charge;
    True when it was new. Not a decline (a refusal, failed authentication): nothing."""
    if not is_decline(error):
        return False
    decline = Decline(
        user_id=payment.user_id,
        # A card tried again in Stripe.js is another card than the payment's first.
        card_fingerprint=error.card_fingerprint or payment.card_fingerprint,
        client_ip=payment.client_ip,
    )
    source = f"charge:{error.charge}" if error.charge else f"payment:{payment.id}"
    # The API's own decline passes here twice (its intent snapshot, then its error answer).
    seen: set[str] = session.info.setdefault("azora_declines_recorded", set())
    if source in seen:
        return False
    seen.add(source)
    inserted = await declines_repo.insert_if_absent(
        session,
        {
            "source": source,
            "at": utcnow(),
            "user_id": decline.user_id,
            "card_fingerprint": decline.card_fingerprint,
            "client_ip": decline.client_ip,
            "payment_id": payment.id,
            "stripe_decline_code": error.decline_code,
        },
    )
    bucket = _recorded.get()
    if inserted and bucket is not None:
        bucket.append(decline)
    return inserted


# ------------------------------------------------------------------ limiting

_NAMESPACE = "azora-declines"
# Set in Redis while declines recorded during an outage are still in their window.
_DATABASE_MARK = "azora-declines/count-in-database"
# How often a process counting in the database tries to leave the mark in Redis, once trying
# has been slow (a refused connection costs nothing; a Redis that hangs, a timeout).
_MARK_RETRY_SECONDS = 5.0
_SLOW_FAILURE_SECONDS = 0.1


class DeclineLimits:
    def __init__(self, *, db: Database, settings: Settings) -> None:
        self.db = db
        self.items: dict[str, RateLimitItem] = {
            "user": parse(settings.rate_limit_declines_user),
            "card": parse(settings.rate_limit_declines_card),
            "ip": parse(settings.rate_limit_declines_ip),
        }
        self._storage: Storage | None = (
            redis_storage(settings.redis_url) if settings.redis_url else None
        )
        self._limiter = MovingWindowRateLimiter(self._storage) if self._storage else None
        self._longest = max(item.get_expiry() for item in self.items.values())
        self._database_until = 0.0
        self._marked = True  # nothing to mark until Redis has failed
        self._next_mark = 0.0

    async def close(self) -> None:
        if self._storage is not None:
            await close_storage(self._storage)

    async def check(
        self, *, user_id: str | None = None, card: str | None = None, ip: str | None = None
    ) -> None:
        """`RateLimited` if any of the given keys has had as many declines as its limit, the
        first of user, ip, card that has (the order they were looked at when the card was
        only known after the first two)."""
        keys = [(n, v) for n, v in (("user", user_id), ("ip", ip), ("card", card)) if v]
        if not keys:
            return
        if self._limiter is not None and self._storage is not None:
            if time.monotonic() < self._database_until:
                await self._leave_mark(self._storage)
            else:
                try:
                    if not await self._storage.get(_DATABASE_MARK):
                        await self._check_redis(self._limiter, keys)
                        return
                except RateLimited:
                    raise
                except Exception:
                    self._redis_failed("checking")
        await self._check_database(keys)

    async def count(self, declines: list[Decline]) -> None:
        """Count committed declines in Redis (the database has them already)."""
        if self._limiter is None or not declines:
            return
        try:
            for decline in declines:
                for name, value in decline.counted_against():
                    await self._limiter.hit(self.items[name], _NAMESPACE, name, value)
        except Exception:
            self._redis_failed("counting")

    def _redis_failed(self, doing: str) -> None:
        # Declines recorded while Redis is away are only in the database: count there until
        # they have aged out of every window, and tell the other processes once Redis is back.
        self._database_until = time.monotonic() + self._longest
        self._marked = False
        logger.warning("redis unavailable while %s declines: counting in the database", doing)

    async def _leave_mark(self, storage: Storage) -> None:
        """Once Redis answers again, send every process to the database until our window
        ends. Tried on each check while Redis refuses at once; after a slow failure (a Redis
        that hangs costs a timeout) at most every few seconds."""
        started = time.monotonic()
        if self._marked or started < self._next_mark:
            return
        remaining = max(1, math.ceil(self._database_until - started))
        try:
            await storage.incr(_DATABASE_MARK, remaining)
        except Exception:
            # After a restart of Redis the pooled connections are dead: drop them, try once more.
            await drop_connections(storage)
            try:
                await storage.incr(_DATABASE_MARK, remaining)
            except Exception:
                if time.monotonic() - started > _SLOW_FAILURE_SECONDS:
                    self._next_mark = time.monotonic() + _MARK_RETRY_SECONDS
                return
        self._marked = True
        logger.info("redis answers again: every process counts declines in the database a while")

    async def _check_redis(
        self, limiter: MovingWindowRateLimiter, keys: list[tuple[str, str]]
    ) -> None:
        for name, value in keys:
            item = self.items[name]
            if not await limiter.test(item, _NAMESPACE, name, value):
                stats = await limiter.get_window_stats(item, _NAMESPACE, name, value)
                raise _limited(name, math.ceil(stats.reset_time - time.time()))

    async def _check_database(self, keys: list[tuple[str, str]]) -> None:
        now = utcnow()
        windows = {name: timedelta(seconds=self.items[name].get_expiry()) for name, _ in keys}
        looks = [
            declines_repo.Look(
                by=name, value=value, since=now - windows[name], n=self.items[name].amount
            )
            for name, value in keys
        ]
        async with self.db.read() as session:
            found = await declines_repo.nth_newest_of_each(session, looks)
        for (name, _), at in zip(keys, found, strict=True):
            if at is not None:
                window = windows[name]
                raise _limited(name, math.ceil((at + window - now).total_seconds()))

    async def purge(self) -> int:
        """Forget declines older than every window."""
        cutoff = utcnow() - timedelta(seconds=self._longest)
        async with self.db.transaction() as session:
            return await declines_repo.delete_older_than(session, cutoff)


def _limited(name: str, retry_after: int) -> RateLimited:
    logger.warning("payment attempts refused: too many declines", extra={"limit": name})
    return RateLimited(
        retry_after,
        "Too many declined payments. Please wait before trying again.",
    )
