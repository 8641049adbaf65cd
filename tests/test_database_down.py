"""A database that cannot be reached is a retryable 503, never a 500 (webhooks excepted)."""

from __future__ import annotations

import sqlite3
import uuid

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


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked")), True),
        (OperationalError("x", {}, sqlite3.OperationalError("no such table: payments")), False),
        (DBAPIError("x", {}, Exception("gone"), connection_invalidated=True), True),
        (ProgrammingError("x", {}, Exception("syntax error")), False),
        (ValueError("not the database"), False),
    ],
)
def test_what_counts_as_unavailable(error: BaseException, unavailable: bool) -> None:
    assert is_unavailable(error) is unavailable
