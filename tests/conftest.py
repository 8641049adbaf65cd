"""Shared fixtures: real SQLite and PostgreSQL databases, Redis, tokens, the app, server processes.

The database suites run on both engines. Where PostgreSQL or Redis does not answer, their tests
are skipped with a reason the summary prints; with AZORA_REQUIRE_SERVICES=1 (set by .ci/run)
they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from azora_payments.app import create_app
from azora_payments.config import Settings, load_settings
from azora_payments.db.migrate import upgrade
from azora_payments.db.models import Base
from azora_payments.devstack.processes import free_port as free_port
from azora_payments.devstack.processes import wait_http as wait_http
from azora_payments.gateway_protocol import StripeGateway
from azora_payments.services import Services

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("AZORA_REQUIRE_SERVICES") == "1"

JWT_SECRET = "k3y-" + "9f8e7d6c5b4a39281706f5e4d3c2b1a0" * 2
STRIPE_KEY = "sk_test_" + "azora" * 6
WEBHOOK_SECRET = "whsec_" + "testsecret0123456789abcdef"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


PG_UP = _reachable("127.0.0.1", 5432)
REDIS_UP = _reachable("127.0.0.1", 6379)


def _require(up: bool, what: str) -> None:
    if up:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (AZORA_REQUIRE_SERVICES=1) but does not answer")
    pytest.skip(f"{what} not reachable: its suite was skipped")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    missing = [name for name, up in (("PostgreSQL", PG_UP), ("Redis", REDIS_UP)) if not up]
    if missing:
        terminalreporter.write_line(
            f"NOTE: {', '.join(missing)} not reachable: the tests that need it were SKIPPED.",
            yellow=True,
        )


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


# ---------------------------------------------------------------- databases


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test worker, dropped at the end."""
    _require(PG_UP, "PostgreSQL")
    name = f"azora_test_{_worker()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


TABLES = ", ".join(table.name for table in reversed(Base.metadata.sorted_tables))


async def _truncate(url: str) -> None:
    from azora_payments.db.session import create_engine

    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    await engine.dispose()


# For a test of what only PostgreSQL does (LISTEN/NOTIFY, a second writer, one-statement
# ingest): `database_url` and everything built on it take PostgreSQL alone, with no SQLite run
# to skip.
postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database: a copied SQLite file, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "azora.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_template_url")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
def redis_url() -> str:
    _require(REDIS_UP, "Redis")
    return REDIS_URL


# ---------------------------------------------------------------- settings, app, tokens


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "AZORA_ENV": "test",
        "database_url": database_url,
        "stripe_secret_key": STRIPE_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "jwt_secret": JWT_SECRET,
        "stripe_api_base": "http://127.0.0.1:9",
        "stripe_max_network_retries": 0,
        "receipt_storage": "",
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, receipt_storage=str(tmp_path / "receipts"))


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, *, stripe: StripeGateway | None = None
) -> AsyncIterator[Services]:
    """The services of `settings` (on `stripe`, e.g. tests/fake_stripe's, if given), closed
    at the end."""
    svc = Services(settings, stripe=stripe)
    try:
        yield svc
    finally:
        await svc.close()


CLIENT_ADDR = ("203.0.113.7", 4321)
# httpx.ASGITransport's own client address, for a test whose peer is "nobody in particular".
ASGI_DEFAULT_CLIENT = ("127.0.0.1", 123)


@contextlib.asynccontextmanager
async def over_asgi(
    app: Any, *, client_addr: tuple[str, int] = CLIENT_ADDR, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on `app` over ASGI (no network), as if from `client_addr`."""
    transport = httpx.ASGITransport(app=app, client=client_addr)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


@contextlib.asynccontextmanager
async def asgi_client(
    settings: Settings,
    services: Services,
    *,
    client_addr: tuple[str, int] = CLIENT_ADDR,
    app: Any = None,
    base_url: str = "http://testserver",
) -> AsyncIterator[httpx.AsyncClient]:
    """`over_asgi` on the app built from `settings` and `services` (or on `app`, e.g. one a
    test added routes to)."""
    application = app if app is not None else create_app(settings, services=services)
    async with over_asgi(application, client_addr=client_addr, base_url=base_url) as http:
        yield http


def _taking(*names: str) -> inspect.Signature:
    """A signature of keyword parameters `names`: the fixtures pytest passes a made fixture."""
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature([inspect.Parameter(name, kind) for name in names])


def services_fixture(settings: str, *, name: str, stripe: str | None = None) -> Any:
    """A fixture `name`: the services of the settings fixture `settings` (on the gateway
    fixture `stripe` if given), closed after the test. The one way a suite gets its services:

        receipt_services = services_fixture("receipt_settings", name="receipt_services")
    """

    async def made(**fixtures: Any) -> AsyncIterator[Services]:
        gateway = fixtures[stripe] if stripe is not None else None
        async with open_services(fixtures[settings], stripe=gateway) as svc:
            yield svc

    made.__signature__ = _taking(settings, *([stripe] if stripe else []))  # type: ignore[attr-defined]
    made.__name__ = made.__qualname__ = name
    return pytest.fixture(name=name)(made)


def client_fixture(
    settings: str,
    services: str,
    *,
    name: str,
    client_addr: tuple[str, int] = CLIENT_ADDR,
    base_url: str = "http://testserver",
) -> Any:
    """A fixture `name`: an ASGI client (`asgi_client`) on the app of the fixtures `settings`
    and `services`."""

    async def made(**fixtures: Any) -> AsyncIterator[httpx.AsyncClient]:
        async with asgi_client(
            fixtures[settings], fixtures[services], client_addr=client_addr, base_url=base_url
        ) as http:
            yield http

    made.__signature__ = _taking(settings, services)  # type: ignore[attr-defined]
    made.__name__ = made.__qualname__ = name
    return pytest.fixture(name=name)(made)


def stack_fixtures(
    settings: str, *, services: str, client: str, stripe: str | None = None, **options: Any
) -> tuple[Any, Any]:
    """The settings → services → ASGI client stack of a suite, as its two fixtures:

    receipt_services, receipt_api = stack_fixtures(
        "receipt_settings", services="receipt_services", client="receipt_api"
    )
    """
    return (
        services_fixture(settings, name=services, stripe=stripe),
        client_fixture(settings, services, name=client, **options),
    )


services, client = stack_fixtures("settings", services="services", client="client")


def make_token(
    sub: str = "user_1",
    *,
    roles: list[str] | None = None,
    email: str | None = "buyer@shop.example",
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    lifetime: int = 300,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + lifetime, **claims}
    if roles is not None:
        payload["roles"] = roles
    if email is not None:
        payload["email"] = email
    return jwt.encode(payload, secret, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def user_headers() -> dict[str, str]:
    return bearer(make_token("user_1"))


@pytest.fixture
def other_headers() -> dict[str, str]:
    return bearer(make_token("user_2", email="other@shop.example"))


@pytest.fixture
def operator_headers() -> dict[str, str]:
    return bearer(make_token("ops_1", roles=["admin"], email="ops@azora.example"))


# ---------------------------------------------------------------- server processes


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "JWT_"))}
    env.update(
        {
            "AZORA_ENV": settings.environment,
            "DATABASE_URL": settings.database_url,
            "STRIPE_SECRET_KEY": settings.stripe_secret_key or "",
            "STRIPE_WEBHOOK_SECRET": ",".join(settings.stripe_webhook_secret),
            "STRIPE_API_BASE": settings.stripe_api_base,
            "STRIPE_MAX_NETWORK_RETRIES": str(settings.stripe_max_network_retries),
            "JWT_SECRET": settings.jwt_secret or "",
            "RECEIPT_STORAGE": settings.receipt_storage,
            "LOG_LEVEL": "WARNING",
        }
    )
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    env.update(extra)
    return env


# ---------------------------------------------------------------- the Stripe emulator


@pytest.fixture(scope="session")
def stripe_emulator() -> Iterator[str]:
    """localstripe behind our emulator layer, on loopback, for this test worker."""
    from azora_payments.devstack.emulator import EmulatorProcess

    emulator = EmulatorProcess(webhook_delay=0.0)
    emulator.start()
    yield emulator.base_url
    emulator.stop()


def emulator_settings(
    database_url: str, tmp_path: Path, emulator_url: str, **overrides: Any
) -> Settings:
    """Settings for an app wired to the Stripe emulator at `emulator_url`."""
    return make_settings(
        database_url,
        receipt_storage=str(tmp_path / "receipts"),
        stripe_api_base=emulator_url,
        stripe_max_network_retries=1,
        **overrides,
    )


@pytest.fixture
def stripe_settings(database_url: str, tmp_path: Path, stripe_emulator: str) -> Settings:
    return emulator_settings(database_url, tmp_path, stripe_emulator)


# The app wired to the emulator, over ASGI.
stripe_services, api = stack_fixtures(
    "stripe_settings", services="stripe_services", client="api", client_addr=("203.0.113.9", 4321)
)


async def emulator_faults(base_url: str, **fault: Any) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(f"{base_url}/_azora/faults", json=fault)).raise_for_status()


async def emulator_clear_faults(base_url: str) -> None:
    async with httpx.AsyncClient() as http:
        (await http.delete(f"{base_url}/_azora/faults")).raise_for_status()


@contextlib.asynccontextmanager
async def emulator_faulted(base_url: str, **fault: Any) -> AsyncIterator[None]:
    """The emulator answers with `fault` (as `emulator_faults`) inside the block; cleared
    after it, whatever happens in it."""
    await emulator_faults(base_url, **fault)
    try:
        yield
    finally:
        await emulator_clear_faults(base_url)


async def emulator_count(base_url: str, key: str) -> int:
    async with httpx.AsyncClient() as http:
        counts = (await http.get(f"{base_url}/_azora/requests")).json()
    return int(counts.get(key, 0))


def unique_user() -> str:
    return f"user_{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- helpers for single-engine suites


@pytest.fixture
def sqlite_database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh migrated SQLite database, for suites whose subject does not depend on the engine
    (override `database_url` with it in the module)."""
    path = tmp_path / "azora.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings, *, client_addr: tuple[str, int] = CLIENT_ADDR, app: Any = None
) -> AsyncIterator[httpx.AsyncClient]:
    """`asgi_client` on services of its own (closed at the end), for a test that needs only the
    client; a given `app` is handed those services."""
    async with open_services(settings) as svc:
        if app is not None:
            app.state.services = svc
        async with asgi_client(settings, svc, client_addr=client_addr, app=app) as http:
            yield http


async def emulator_objects_for(base_url: str, resource: str, user_id: str) -> list[dict[str, Any]]:
    """Every object of `resource` (`payment_intents`, `customers`) the emulator holds for one
    of our users (by our `azora_user_id` metadata), through every page."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        while True:
            page = (await http.get(f"{base_url}/v1/{resource}", params=params)).json()
            found += [
                obj
                for obj in page["data"]
                if obj.get("metadata", {}).get("azora_user_id") == user_id
            ]
            if not page.get("has_more") or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]


async def emulator_intents_for(base_url: str, user_id: str) -> list[dict[str, Any]]:
    """Every PaymentIntent the emulator holds for one of our users (by our metadata)."""
    return await emulator_objects_for(base_url, "payment_intents", user_id)


async def emulator_customers_for(base_url: str, user_id: str) -> list[dict[str, Any]]:
    """Every Stripe customer the emulator holds for one of our users (by our metadata)."""
    return await emulator_objects_for(base_url, "customers", user_id)


# ---------------------------------------------------------------- private services


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of this module's own (migrated `azora` database), which its tests
    may stop and start: `tests.private_services.PrivatePostgres`."""
    from tests.private_services import PrivatePostgres

    pg = PrivatePostgres()
    try:
        pg.start()
        pg.create_database()
        upgrade(pg.url)
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def private_database_url(private_postgres: Any) -> str:
    """The private cluster's database, emptied (and started, if a test left it stopped)."""
    private_postgres.start()
    asyncio.run(_truncate(private_postgres.url))
    url: str = private_postgres.url
    return url
