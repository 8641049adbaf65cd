"""JWT verification: the configured key and algorithms only, `exp` required, `iss`/`aud` checked.

Knows nothing of HTTP; `api/deps.py` turns its answer into the current user or a 401.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from azora_payments.config import Settings

OPERATOR_ROLE = "admin"
# The product's own backend: may create checkout sessions.
SERVICE_ROLE = "service"


class InvalidToken(Exception):
    """The token is missing, malformed, expired, or not signed by our key."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str | None = None
    name: str | None = None
    roles: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_operator(self) -> bool:
        return OPERATOR_ROLE in self.roles

    @property
    def is_service(self) -> bool:
        return SERVICE_ROLE in self.roles


class JwksCache:
    """Fetches the JWKS document and keeps it for `ttl`; on an unknown `kid` (a rotated key) it
    refetches, but at most once per `refresh_floor`, failed attempts included, so that tokens
    cannot make us hammer the issuer. When the issuer is down, the keys we have keep serving."""

    def __init__(self, url: str, *, ttl: float, refresh_floor: float = 30.0) -> None:
        self.url = url
        self.ttl = ttl
        self.refresh_floor = refresh_floor
        self._keys: dict[str, Any] = {}
        # None until the first fetch: monotonic time starts near zero on a freshly booted host.
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    def _known(self, kid: str | None) -> bool:
        return kid in self._keys if kid is not None else len(self._keys) == 1

    def _needs_fetch(self, kid: str | None) -> bool:
        now = time.monotonic()
        if self._attempted_at is None:
            return True
        if now - self._attempted_at <= min(self.refresh_floor, self.ttl):
            return False
        stale = self._fetched_at is None or now - self._fetched_at > self.ttl
        return stale or not self._known(kid)

    async def key_for(self, kid: str | None) -> Any:
        if self._needs_fetch(kid):
            async with self._lock:
                if self._needs_fetch(kid):  # another request may have fetched meanwhile
                    await self._fetch()
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid is None or kid not in self._keys:
            raise InvalidToken("unknown key id")
        return self._keys[kid]

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                document = response.json()
            if not isinstance(document, dict):
                raise ValueError("a JWKS document is a JSON object")
            jwks = jwt.PyJWKSet.from_dict(document)
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            # Stamped only once the attempt is over: requests arriving meanwhile must queue on
            # the lock for its result, not conclude that there is nothing to wait for.
            self._attempted_at = time.monotonic()
            if self._keys:
                return  # keep serving the keys we have
            raise InvalidToken("signing keys unavailable") from exc
        self._keys = {jwk.key_id or "": jwk.key for jwk in jwks.keys}
        self._fetched_at = self._attempted_at = time.monotonic()


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.algorithms = list(settings.effective_jwt_algorithms)
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_seconds
        self._static_key: Any = settings.jwt_secret or settings.jwt_public_key
        self._jwks = (
            JwksCache(settings.jwt_jwks_url, ttl=settings.jwt_jwks_cache_seconds)
            if settings.jwt_jwks_url and not self._static_key
            else None
        )

    async def verify(self, token: str) -> User:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("alg") not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        key = self._static_key
        if self._jwks is not None:
            key = await self._jwks.key_for(header.get("kid"))
        if key is None:
            raise InvalidToken("no key configured")
        # `aud` is checked only when configured; PyJWT would otherwise refuse any token with one.
        options: jwt.types.Options = {
            "require": ["exp", "sub"],
            "verify_aud": self.audience is not None,
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=options,
            )
        except (jwt.PyJWTError, TypeError) as exc:
            # TypeError: a key of another type than the token's algorithm (an EC key in the JWKS
            # under the kid of an RS256 token); a bad token, not our failure.
            raise InvalidToken(str(exc)) from exc
        return _user_from_claims(claims)


def _user_from_claims(claims: dict[str, Any]) -> User:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise InvalidToken("bad sub")
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("bad roles")
    email = claims.get("email")
    name = claims.get("name")
    return User(
        id=sub,
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
        roles=tuple(roles),
    )
