"""Console sessions: an operator's token is checked once, then a random session id in a cookie
stands for it, until CONSOLE_SESSION_HOURS or the token's own expiry, whichever comes first.

Only a SHA-256 of the id is stored, so a copy of the table signs nobody in. The CSRF token of a
session is an HMAC of a fixed label keyed by the session id: bound to the session, unknown to a
page that cannot read the HttpOnly cookie, and nothing more to store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from azora_payments.auth import OPERATOR_ROLE, User
from azora_payments.db.models import ConsoleSession, ConsoleSignInLink
from azora_payments.db.repositories import console as console_repo
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.domain import audit

CHANNEL = "console"
LINK_SECONDS = 60
_CSRF_LABEL = b"azora-console-csrf"


@dataclass(frozen=True, slots=True)
class OpenedSession:
    secret: str  # the cookie's value, never stored
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ConsoleOperator:
    id: str
    email: str | None
    name: str | None
    expires_at: datetime

    @property
    def user(self) -> User:
        return User(id=self.id, email=self.email, name=self.name, roles=(OPERATOR_ROLE,))

    @property
    def label(self) -> str:
        return self.name or self.email or self.id


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(secret: str) -> str:
    return hmac.new(secret.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_matches(secret: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(csrf_token(secret), given)


def session_actor(
    operator: ConsoleOperator, *, request_id: str | None, client_ip: str | None
) -> audit.Actor:
    return audit.Actor(operator.id, request_id=request_id, client_ip=client_ip, channel=CHANNEL)


async def open_session(
    *,
    db: Database,
    operator: User,
    token_expires_at: datetime | None,
    hours: float,
    request_id: str | None = None,
    client_ip: str | None = None,
) -> OpenedSession:
    now = utcnow()
    expires_at = now + timedelta(hours=hours)
    if token_expires_at is not None:
        expires_at = min(expires_at, token_expires_at)
    secret = secrets.token_urlsafe(32)
    async with db.transaction() as session:
        await console_repo.delete_expired(session, now=now)
        console_repo.add(
            session,
            ConsoleSession(
                id_hash=_digest(secret),
                operator_id=operator.id,
                operator_email=operator.email,
                operator_name=operator.name,
                created_at=now,
                expires_at=expires_at,
            ),
        )
        audit.record(
            session,
            actor=audit.Actor(
                operator.id, request_id=request_id, client_ip=client_ip, channel=CHANNEL
            ),
            action="console.signed_in",
            details={"expires_at": expires_at.isoformat().replace("+00:00", "Z")},
        )
    return OpenedSession(secret=secret, expires_at=expires_at)


async def find_session(*, db: Database, secret: str) -> ConsoleOperator | None:
    async with db.read() as session:
        row = await console_repo.live_session(session, id_hash=_digest(secret), now=utcnow())
    if row is None:
        return None
    return ConsoleOperator(
        id=row.operator_id,
        email=row.operator_email,
        name=row.operator_name,
        expires_at=row.expires_at,
    )


async def close_session(*, db: Database, secret: str, actor: audit.Actor) -> None:
    async with db.transaction() as session:
        await console_repo.delete_session(session, id_hash=_digest(secret))
        audit.record(session, actor=actor, action="console.signed_out")


async def create_sign_in_link(*, db: Database, operator: User, seconds: int = LINK_SECONDS) -> str:
    """A nonce for a one-time sign-in (printed by `azora-payments dev`), valid `seconds`."""
    nonce = secrets.token_urlsafe(32)
    async with db.transaction() as session:
        console_repo.add(
            session,
            ConsoleSignInLink(
                nonce_hash=_digest(nonce),
                operator_id=operator.id,
                operator_email=operator.email,
                operator_name=operator.name,
                expires_at=utcnow() + timedelta(seconds=seconds),
            ),
        )
    return nonce


async def redeem_sign_in_link(
    *,
    db: Database,
    nonce: str,
    hours: float,
    request_id: str | None = None,
    client_ip: str | None = None,
) -> OpenedSession | None:
    """A session for the link's operator, once; None when it is unknown, used or expired."""
    async with db.transaction() as session:
        link = await console_repo.take_link(session, nonce_hash=_digest(nonce), now=utcnow())
    if link is None:
        return None
    operator = User(
        id=link.operator_id, email=link.operator_email, name=link.operator_name, roles=()
    )
    return await open_session(
        db=db,
        operator=operator,
        token_expires_at=None,
        hours=hours,
        request_id=request_id,
        client_ip=client_ip,
    )
