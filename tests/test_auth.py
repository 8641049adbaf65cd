"""Bearer tokens: every attack is a 401 problem with `WWW-Authenticate: Bearer`; HS256, RS256
(PEM and JWKS, with rotation and caching) and ES256 tokens are accepted; operators only on audit."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from azora_payments import auth as auth_module
from azora_payments.auth import InvalidToken, TokenVerifier
from azora_payments.config import Settings
from tests.conftest import JWT_SECRET, app_client, bearer, make_settings, make_token

AUDIT = "/api/audit"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def craft(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    return signing_input + "." + b64url(signature)


# Outside dev, tokens checked with a public key or JWKS must name us as issuer and audience.
ISSUED = {"iss": "https://id.azora.dev", "aud": "azora-payments"}
ISSUED_SETTINGS = {"jwt_issuer": ISSUED["iss"], "jwt_audience": ISSUED["aud"]}


def claims(lifetime: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "ops_1", "roles": ["admin"], "iat": now, "exp": now + lifetime, **ISSUED}
    return {**base, **extra}


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "unauthenticated"
    assert body["type"] == "https://docs.azora.dev/errors/unauthenticated"
    assert body["request_id"] == response.headers["x-request-id"]


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
def rs256_settings(database_url: str, tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> Settings:
    return make_settings(
        database_url,
        jwt_secret=None,
        jwt_public_key=public_pem(rsa_private),
        jwt_algorithms="RS256",
        **ISSUED_SETTINGS,
    )


# ---------------------------------------------------------------- HS256 (the default)


async def test_hs256_operator_token_is_accepted(
    client: httpx.AsyncClient, operator_headers: dict[str, str]
) -> None:
    response = await client.get(AUDIT, headers=operator_headers)
    assert response.status_code == 200
    assert response.json() == {"data": [], "has_more": False, "next_cursor": None}


async def test_authenticated_non_operator_is_forbidden(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    response = await client.get(AUDIT, headers=user_headers)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "forbidden"
    assert body["type"] == "https://docs.azora.dev/errors/forbidden"
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer    ",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Token " + make_token("ops_1", roles=["admin"]),
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer " + "eyJ" * 20,
    ],
    ids=[
        "no-header",
        "empty",
        "scheme-only",
        "blank-token",
        "basic",
        "other-scheme-good-token",
        "garbage",
        "three-garbage-parts",
        "bad-base64",
    ],
)
async def test_missing_or_malformed_credentials(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_unauthenticated(await client.get(AUDIT, headers=headers))


async def test_alg_none_is_refused(client: httpx.AsyncClient) -> None:
    for alg in ("none", "None", "NONE"):
        token = craft({"alg": alg, "typ": "JWT"}, claims())
        assert_unauthenticated(await client.get(AUDIT, headers=bearer(token)))


async def test_token_signed_with_another_key_is_refused(client: httpx.AsyncClient) -> None:
    token = make_token("ops_1", roles=["admin"], secret="another-key-" + "0123456789abcdef" * 3)
    assert_unauthenticated(await client.get(AUDIT, headers=bearer(token)))


async def test_tampered_payload_is_refused(client: httpx.AsyncClient) -> None:
    header, _, signature = make_token("user_1").split(".")
    forged = b64url(json.dumps(claims()).encode())
    assert_unauthenticated(
        await client.get(AUDIT, headers=bearer(f"{header}.{forged}.{signature}"))
    )


async def test_expiry_is_checked_with_leeway(client: httpx.AsyncClient) -> None:
    expired = make_token("ops_1", roles=["admin"], lifetime=-120)
    assert_unauthenticated(await client.get(AUDIT, headers=bearer(expired)))
    # 10 s past `exp` is inside the 30 s leeway.
    within_leeway = make_token("ops_1", roles=["admin"], lifetime=-10)
    assert (await client.get(AUDIT, headers=bearer(within_leeway))).status_code == 200


async def test_not_before_in_the_future_is_refused(client: httpx.AsyncClient) -> None:
    token = make_token("ops_1", roles=["admin"], nbf=int(time.time()) + 600)
    assert_unauthenticated(await client.get(AUDIT, headers=bearer(token)))
    soon = make_token("ops_1", roles=["admin"], nbf=int(time.time()) + 10)
    assert (await client.get(AUDIT, headers=bearer(soon))).status_code == 200


async def test_issued_in_the_future_is_refused(client: httpx.AsyncClient) -> None:
    token = make_token("ops_1", roles=["admin"], iat=int(time.time()) + 600)
    assert_unauthenticated(await client.get(AUDIT, headers=bearer(token)))


@pytest.mark.parametrize(
    "payload",
    [
        {"roles": ["admin"], "exp": int(time.time()) + 3600},  # no sub
        {"sub": "", "roles": ["admin"], "exp": int(time.time()) + 3600},
        {"sub": 42, "roles": ["admin"], "exp": int(time.time()) + 3600},
        {"sub": "x" * 256, "roles": ["admin"], "exp": int(time.time()) + 3600},
        {"sub": "ops_1", "roles": ["admin"]},  # no exp
        {"sub": "ops_1", "roles": ["admin"], "exp": "tomorrow"},
        {"sub": "ops_1", "roles": "admin", "exp": int(time.time()) + 3600},
        {"sub": "ops_1", "roles": ["admin", 7], "exp": int(time.time()) + 3600},
    ],
    ids=[
        "no-sub",
        "empty-sub",
        "int-sub",
        "long-sub",
        "no-exp",
        "text-exp",
        "roles-string",
        "roles-non-str",
    ],
)
async def test_bad_claims_are_refused(client: httpx.AsyncClient, payload: dict[str, Any]) -> None:
    token = jwt.encode(payload, JWT_SECRET, algorithm="HS256")
    assert_unauthenticated(await client.get(AUDIT, headers=bearer(token)))


async def test_hs256_is_the_only_algorithm_by_default(client: httpx.AsyncClient) -> None:
    # A valid HS512 signature with the right secret: refused, only the configured algorithm counts.
    token = make_token("ops_1", roles=["admin"], algorithm="HS512")
    assert_unauthenticated(await client.get(AUDIT, headers=bearer(token)))


async def test_issuer_and_audience_are_checked_when_configured(database_url: str) -> None:
    settings = make_settings(
        database_url, jwt_issuer="https://id.azora.dev", jwt_audience="azora-payments"
    )
    good = {"iss": "https://id.azora.dev", "aud": "azora-payments"}
    async with app_client(settings) as http:
        ok = make_token("ops_1", roles=["admin"], **good)
        assert (await http.get(AUDIT, headers=bearer(ok))).status_code == 200
        for bad in (
            {**good, "aud": "someone-else"},
            {**good, "iss": "https://evil.example"},
            {"iss": good["iss"]},  # aud missing
            {"aud": good["aud"]},  # iss missing
        ):
            token = make_token("ops_1", roles=["admin"], **bad)
            assert_unauthenticated(await http.get(AUDIT, headers=bearer(token)))


async def test_audience_in_token_is_ignored_when_not_configured(client: httpx.AsyncClient) -> None:
    token = make_token("ops_1", roles=["admin"], aud="whatever", iss="whoever")
    assert (await client.get(AUDIT, headers=bearer(token))).status_code == 200


# ---------------------------------------------------------------- RS256 / ES256 with a PEM key


async def test_rs256_with_public_key(
    rs256_settings: Settings, rsa_private: rsa.RSAPrivateKey
) -> None:
    async with app_client(rs256_settings) as http:
        good = jwt.encode(claims(), rsa_private, algorithm="RS256")
        assert (await http.get(AUDIT, headers=bearer(good))).status_code == 200

        other = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(other)))

        # The classic confusion attack: HMAC-SHA256 keyed with the public key we trust.
        pem = rs256_settings.jwt_public_key
        assert pem is not None
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64url(json.dumps(claims()).encode())
        mac = hmac.new(pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        assert_unauthenticated(
            await http.get(AUDIT, headers=bearer(f"{header}.{payload}.{b64url(mac)}"))
        )
        # And an HS256 token with our (unused) default-style secret is no better.
        hs = jwt.encode(claims(), JWT_SECRET, algorithm="HS256")
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(hs)))
        none = craft({"alg": "none"}, claims())
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(none)))


async def test_another_apps_token_from_the_same_provider_is_refused(
    rs256_settings: Settings, rsa_private: rsa.RSAPrivateKey
) -> None:
    # The same identity provider, the same keys, its own `admin`: not an operator here.
    async with app_client(rs256_settings) as http:
        for other in (
            {"aud": "billing-dashboard"},
            {"iss": "https://id.other.example"},
            {"aud": None},
            {"iss": None},
        ):
            payload = {k: v for k, v in claims(**other).items() if v is not None}
            token = jwt.encode(payload, rsa_private, algorithm="RS256")
            assert_unauthenticated(await http.get(AUDIT, headers=bearer(token)))


async def test_es256_with_public_key(database_url: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    settings = make_settings(
        database_url,
        jwt_secret=None,
        jwt_public_key=public_pem(key),
        jwt_algorithms="ES256",
        **ISSUED_SETTINGS,
    )
    async with app_client(settings) as http:
        good = jwt.encode(claims(), key, algorithm="ES256")
        assert (await http.get(AUDIT, headers=bearer(good))).status_code == 200
        stranger = jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(stranger)))


# ---------------------------------------------------------------- RS256 through a JWKS endpoint


@dataclass
class JwksServer:
    url: str
    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    fetches: int = 0

    def publish(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        entries = []
        for kid, key in keys:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            entries.append({**jwk, "kid": kid, "use": "sig"})
        self.document = {"keys": entries}


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            body = json.dumps(state.document).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Clock:
    """Stands in for `time.monotonic` inside the auth module only (the event loop keeps its own)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    # A machine that booted a few seconds ago: monotonic time is small.
    fake = Clock(5.0)
    monkeypatch.setattr(auth_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def jwks_settings(database_url: str, url: str, **extra: Any) -> Settings:
    return make_settings(
        database_url,
        jwt_secret=None,
        jwt_jwks_url=url,
        jwt_algorithms="RS256",
        **{**ISSUED_SETTINGS, **extra},
    )


def signed(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**extra), key, algorithm="RS256", headers=headers)


async def test_jwks_keys_are_fetched_cached_and_rotated(
    database_url: str, jwks_server: JwksServer, clock: Clock, rsa_private: rsa.RSAPrivateKey
) -> None:
    old, new = rsa_private, rsa_key()
    jwks_server.publish(("k-old", old))
    async with app_client(jwks_settings(database_url, jwks_server.url)) as http:
        assert (await http.get(AUDIT, headers=bearer(signed(old, "k-old")))).status_code == 200
        assert jwks_server.fetches == 1
        # Cached: a second token does not refetch.
        clock.now += 1
        assert (await http.get(AUDIT, headers=bearer(signed(old, "k-old")))).status_code == 200
        assert jwks_server.fetches == 1

        # The issuer rotates: its JWKS now has the new key and tokens carry the new kid.
        jwks_server.publish(("k-old", old), ("k-new", new))
        # Right after a fetch, an unknown kid does not hammer the issuer...
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(new, "k-new"))))
        assert jwks_server.fetches == 1
        # ...but once the refresh floor has passed it triggers one refetch, and then works.
        clock.now += 31
        assert (await http.get(AUDIT, headers=bearer(signed(new, "k-new")))).status_code == 200
        assert jwks_server.fetches == 2
        assert (await http.get(AUDIT, headers=bearer(signed(new, "k-new")))).status_code == 200
        assert jwks_server.fetches == 2

        # A kid the issuer never published stays refused; a key that signs under a known kid
        # but is not that key is refused too.
        clock.now += 31
        stranger = rsa_key()
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(stranger, "k-x"))))
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(stranger, "k-new"))))

        # The cache expires after JWT_JWKS_CACHE_SECONDS (300): the old key, now withdrawn, goes.
        jwks_server.publish(("k-new", new))
        clock.now += 301
        fetches = jwks_server.fetches
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(old, "k-old"))))
        assert jwks_server.fetches == fetches + 1


async def test_jwks_single_key_without_kid(
    database_url: str, jwks_server: JwksServer, clock: Clock, rsa_private: rsa.RSAPrivateKey
) -> None:
    jwks_server.publish(("only", rsa_private))
    async with app_client(jwks_settings(database_url, jwks_server.url)) as http:
        assert (await http.get(AUDIT, headers=bearer(signed(rsa_private, None)))).status_code == 200
        # With two keys published, a token without kid is ambiguous.
        jwks_server.publish(("only", rsa_private), ("second", rsa_key()))
        clock.now += 400
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(rsa_private, None))))


async def test_jwks_outage_keeps_known_keys_and_refuses_when_none(
    database_url: str, jwks_server: JwksServer, clock: Clock, rsa_private: rsa.RSAPrivateKey
) -> None:
    jwks_server.status = 503
    async with app_client(jwks_settings(database_url, jwks_server.url)) as http:
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(rsa_private, "a"))))
        jwks_server.status = 200
        jwks_server.publish(("a", rsa_private))
        clock.now += 31
        assert (await http.get(AUDIT, headers=bearer(signed(rsa_private, "a")))).status_code == 200
        # The issuer goes down after the cache expired: the keys we have keep working.
        jwks_server.status = 500
        clock.now += 400
        assert (await http.get(AUDIT, headers=bearer(signed(rsa_private, "a")))).status_code == 200


@pytest.mark.parametrize(
    "document",
    [
        {"keys": []},
        {"nothing": "here"},
        {"keys": [{"kty": "nope", "kid": "a"}]},
        ["not", "a", "set"],
    ],
    ids=["empty", "no-keys", "bad-kty", "list"],
)
async def test_jwks_unusable_document_is_401_not_500(
    database_url: str,
    jwks_server: JwksServer,
    rsa_private: rsa.RSAPrivateKey,
    document: Any,
) -> None:
    jwks_server.document = document
    async with app_client(jwks_settings(database_url, jwks_server.url)) as http:
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(rsa_private, "a"))))


async def test_jwks_key_of_the_wrong_type_is_401_not_500(
    database_url: str, jwks_server: JwksServer, rsa_private: rsa.RSAPrivateKey
) -> None:
    # The issuer publishes an EC key under the kid the token names, while the token says RS256.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    jwks_server.document = {"keys": [{**jwk, "kid": "a"}]}
    async with app_client(jwks_settings(database_url, jwks_server.url)) as http:
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(rsa_private, "a"))))


async def test_jwks_unreachable_is_401(database_url: str, rsa_private: rsa.RSAPrivateKey) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    async with app_client(jwks_settings(database_url, url)) as http:
        assert_unauthenticated(await http.get(AUDIT, headers=bearer(signed(rsa_private, "a"))))


async def test_verifier_without_any_key_refuses(database_url: str) -> None:
    # `dev` starts without secrets; then no token can be valid.
    settings = make_settings(
        database_url,
        AZORA_ENV="dev",
        jwt_secret=None,
        stripe_secret_key=None,
        stripe_webhook_secret="",
    )
    verifier = TokenVerifier(settings)
    for token in (make_token("user_1"), jwt.encode(claims(), rsa_key(), algorithm="RS256")):
        with pytest.raises(InvalidToken):
            await verifier.verify(token)


async def test_concurrent_requests_fetch_the_jwks_once(
    database_url: str, jwks_server: JwksServer, clock: Clock, rsa_private: rsa.RSAPrivateKey
) -> None:
    jwks_server.publish(("a", rsa_private))
    verifier = TokenVerifier(jwks_settings(database_url, jwks_server.url))
    token = signed(rsa_private, "a", email="buyer@shop.example", name="Ada")
    users = await asyncio.gather(*(verifier.verify(token) for _ in range(5)))
    assert {u.id for u in users} == {"ops_1"}
    assert users[0].email == "buyer@shop.example"
    assert users[0].name == "Ada"
    assert users[0].is_operator
    assert jwks_server.fetches == 1
