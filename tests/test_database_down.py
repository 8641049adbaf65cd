"""A database that cannot be reached is a retryable 503, never a 500 (webhooks excepted)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from azora_payments.db.session import is_unavailable
from tests.conftest import asgi_client, bearer, make_settings, make_token, open_services

DOWN = "postgresql://postgres@127.0.0.1:1/nowhere"


async def test_reads_and_writes_answer_503_with_retry_after() -> None:
    settings = make_settings(DOWN)
    headers = bearer(make_token("user_1"))
    async with open_services(settings) as services, asgi_client(settings, services) as http:
        history = await http.get("/api/payments/history", headers=headers)
        process = await http.post(
            "/api/payments/process",
            json={"amount": 2000, "currency": "usd", "payment_method_id": "pm_card_visa"},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        ready = await http.get("/readyz")
    for response in (history, process):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable"
        assert response.json()["retryable"] is True
        assert int(response.headers["retry-after"]) > 0
    assert ready.status_code == 503
    assert ready.json()["database"] == "unavailable"


class _Coded(Exception):
    """The shape of SQLAlchemy's asyncpg adapter error: a message and a SQLSTATE."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _caused(cause: BaseException) -> Exception:
    error = Exception("wrapped")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked")), True),
        (OperationalError("x", {}, sqlite3.OperationalError("no such table: payments")), False),
        (DBAPIError("x", {}, Exception("gone"), connection_invalidated=True), True),
        (ProgrammingError("x", {}, Exception("syntax error")), False),
        (ValueError("not the database"), False),
        (DBAPIError("x", {}, _Coded("08006", "connection failure")), True),
        (DBAPIError("x", {}, _Coded("57P01", "terminating connection")), True),
        (DBAPIError("x", {}, _Coded("23505", "duplicate key")), False),
        (DBAPIError("x", {}, _caused(ConnectionResetError("reset"))), True),
    ],
)
def test_what_counts_as_unavailable(error: BaseException, unavailable: bool) -> None:
    assert is_unavailable(error) is unavailable


@pytest.fixture
def shutting_down_postgres() -> Iterator[str]:
    """A private PostgreSQL in a smart shutdown: a client still holds it open, so it stays up
    but refuses new connections with "the database system is shutting down" (57P03)."""
    import asyncpg

    from azora_payments.db.migrate import upgrade
    from tests.private_services import PrivatePostgres

    pg = PrivatePostgres()
    try:
        pg.start()
        pg.create_database()
        upgrade(pg.url)
        loop = asyncio.new_event_loop()
        holder = loop.run_until_complete(asyncpg.connect(pg.url))
        pg.stop("smart", wait=False)

        async def refused() -> bool:
            try:
                conn = await asyncpg.connect(pg.url)
            except asyncpg.CannotConnectNowError:
                return True
            await conn.close()
            return False

        deadline = time.monotonic() + 30
        while not loop.run_until_complete(refused()):
            assert time.monotonic() < deadline, "the smart shutdown did not begin"
            time.sleep(0.05)
        yield pg.url
        loop.run_until_complete(holder.close())
        loop.close()
    finally:
        pg.destroy()


@pytest.mark.postgres
async def test_a_database_shutting_down_answers_503_not_500(shutting_down_postgres: str) -> None:
    settings = make_settings(shutting_down_postgres)
    headers = bearer(make_token("user_1"))
    async with open_services(settings) as services, asgi_client(settings, services) as http:
        history = await http.get("/api/payments/history", headers=headers)
        process = await http.post(
            "/api/payments/process",
            json={"amount": 2000, "currency": "usd", "payment_method_id": "pm_card_visa"},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
    for response in (history, process):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "service_unavailable"
        assert int(response.headers["retry-after"]) > 0
