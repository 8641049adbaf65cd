"""The audit log: `domain.audit.record` in the caller's transaction, and `GET /api/audit` for
operators — newest first, keyset pages, exact filters — on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from azora_payments.api.deps import RequestActor, ServicesDep
from azora_payments.app import create_app
from azora_payments.config import Settings
from azora_payments.domain import audit
from azora_payments.services import Services
from tests.conftest import make_settings, over_asgi

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FIELDS = {"id", "at", "actor", "action", "payment_id", "details", "request_id", "client_ip"}


async def add(services: Services, *entries: dict[str, Any]) -> None:
    # One transaction per record, as requests and jobs write them.
    for entry in entries:
        actor = entry.pop("actor", audit.SYSTEM)
        async with services.db.transaction() as session:
            audit.record(session, actor=actor, **entry)


async def pages(
    client: httpx.AsyncClient, headers: dict[str, str], query: str = ""
) -> list[dict[str, Any]]:
    """Every page of `/api/audit?{query}`, following `next_cursor`."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = f"/api/audit?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        out.append(page)
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            return out


async def test_records_have_the_documented_shape(
    client: httpx.AsyncClient, services: Services, operator_headers: dict[str, str]
) -> None:
    actor = audit.Actor("ops_1", request_id="req-42", client_ip="198.51.100.4")
    await add(
        services,
        {
            "actor": actor,
            "action": "refund.created",
            "payment_id": "pay_01",
            "details": {"amount": 500, "reason": "duplicate"},
        },
        {"actor": audit.STRIPE, "action": "payment.disputed", "payment_id": "pay_01"},
    )
    response = await client.get("/api/audit", headers=operator_headers)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "has_more", "next_cursor"}
    newest, oldest = body["data"]
    assert set(newest) == FIELDS
    assert newest["actor"] == "stripe"
    assert newest["action"] == "payment.disputed"
    assert newest["details"] == {}
    assert newest["request_id"] is None
    assert newest["client_ip"] is None
    assert oldest == {
        "id": oldest["id"],
        "at": oldest["at"],
        "actor": "ops_1",
        "action": "refund.created",
        "payment_id": "pay_01",
        "details": {"amount": 500, "reason": "duplicate"},
        "request_id": "req-42",
        "client_ip": "198.51.100.4",
    }
    assert isinstance(oldest["id"], int)
    assert newest["id"] > oldest["id"]
    assert RFC3339_UTC.match(oldest["at"]), oldest["at"]
    assert oldest["at"] <= newest["at"]


async def test_newest_first_in_keyset_pages(
    client: httpx.AsyncClient, services: Services, operator_headers: dict[str, str]
) -> None:
    await add(services, *({"action": "job.ran", "details": {"n": n}} for n in range(25)))
    result = await pages(client, operator_headers, "limit=10")
    assert [len(p["data"]) for p in result] == [10, 10, 5]
    assert [p["has_more"] for p in result] == [True, True, False]
    numbers = [r["details"]["n"] for p in result for r in p["data"]]
    assert numbers == list(range(24, -1, -1))
    ids = [r["id"] for p in result for r in p["data"]]
    assert ids == sorted(ids, reverse=True)


async def test_exactly_one_full_page_has_no_next(
    client: httpx.AsyncClient, services: Services, operator_headers: dict[str, str]
) -> None:
    await add(services, *({"action": "job.ran"} for _ in range(3)))
    result = await pages(client, operator_headers, "limit=3")
    assert len(result) == 1
    assert result[0]["next_cursor"] is None
    assert len(result[0]["data"]) == 3
    default = (await client.get("/api/audit", headers=operator_headers)).json()
    assert len(default["data"]) == 3


async def test_pages_are_stable_while_records_arrive(
    client: httpx.AsyncClient, services: Services, operator_headers: dict[str, str]
) -> None:
    await add(services, *({"action": "job.ran", "details": {"n": n}} for n in range(6)))
    first = (await client.get("/api/audit?limit=3", headers=operator_headers)).json()
    await add(services, *({"action": "job.ran", "details": {"n": n}} for n in range(100, 103)))
    second = (
        await client.get(
            f"/api/audit?limit=3&cursor={first['next_cursor']}", headers=operator_headers
        )
    ).json()
    assert [r["details"]["n"] for r in first["data"]] == [5, 4, 3]
    assert [r["details"]["n"] for r in second["data"]] == [2, 1, 0]
    assert second["next_cursor"] is None


async def test_filters_match_exactly_and_combine(
    client: httpx.AsyncClient, services: Services, operator_headers: dict[str, str]
) -> None:
    alice = audit.Actor("alice")
    await add(
        services,
        {"actor": alice, "action": "payment_method.saved", "payment_id": None},
        {"actor": alice, "action": "refund.created", "payment_id": "pay_1"},
        {"actor": audit.STRIPE, "action": "refund.created", "payment_id": "pay_1"},
        {"actor": audit.STRIPE, "action": "payment.disputed", "payment_id": "pay_10"},
        {"actor": audit.Actor("alice2"), "action": "refund.created", "payment_id": "pay_2"},
    )

    async def actions(query: str) -> list[tuple[str, str, str | None]]:
        data = [r for p in await pages(client, operator_headers, query) for r in p["data"]]
        return [(r["actor"], r["action"], r["payment_id"]) for r in data]

    assert await actions("payment_id=pay_1") == [
        ("stripe", "refund.created", "pay_1"),
        ("alice", "refund.created", "pay_1"),
    ]
    assert await actions("actor=alice") == [
        ("alice", "refund.created", "pay_1"),
        ("alice", "payment_method.saved", None),
    ]
    assert await actions("action=refund.created&limit=1") == [
        ("alice2", "refund.created", "pay_2"),
        ("stripe", "refund.created", "pay_1"),
        ("alice", "refund.created", "pay_1"),
    ]
    assert await actions("actor=stripe&action=refund.created&payment_id=pay_1") == [
        ("stripe", "refund.created", "pay_1")
    ]
    # Exact: no prefixes, no wildcards, no case folding.
    for query in ("payment_id=pay_", "actor=ali", "actor=ALICE", "action=refund", "actor=%25"):
        assert await actions(query) == []


async def test_audit_is_for_operators_only(
    client: httpx.AsyncClient, user_headers: dict[str, str]
) -> None:
    assert (await client.get("/api/audit")).status_code == 401
    assert (await client.get("/api/audit", headers=user_headers)).status_code == 403


# ---------------------------------------------------------------- the request's actor


def add_audited_route(app: FastAPI) -> None:
    @app.post("/api/_test/audited")
    async def audited(actor: RequestActor, services: ServicesDep) -> dict[str, str]:
        async with services.db.transaction() as session:
            audit.record(session, actor=actor, action="test.done", payment_id="pay_9")
        return {"ok": "yes"}


@pytest.fixture
async def proxied(database_url: str, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    settings: Settings = make_settings(database_url, trusted_proxies="10.0.0.0/8, 192.0.2.1")
    app = create_app(settings, services=services)
    add_audited_route(app)
    async with over_asgi(app, client_addr=("10.1.2.3", 5555)) as http:
        yield http


async def test_request_actor_is_recorded_with_request_id_and_client_address(
    proxied: httpx.AsyncClient, client: httpx.AsyncClient, operator_headers: dict[str, str]
) -> None:
    headers = {**operator_headers, "X-Request-Id": "req-aud-1"}
    # Through our proxy (10.1.2.3, trusted), which appended the real client to the header.
    forwarded = {**headers, "X-Forwarded-For": "6.6.6.6, 198.51.100.20"}
    assert (await proxied.post("/api/_test/audited", headers=forwarded)).status_code == 200
    data = (await client.get("/api/audit", headers=operator_headers)).json()["data"]
    assert [(r["actor"], r["request_id"], r["client_ip"]) for r in data] == [
        ("ops_1", "req-aud-1", "198.51.100.20")
    ]


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    database_url: str,
    services: Services,
    client: httpx.AsyncClient,
    operator_headers: dict[str, str],
) -> None:
    app = create_app(make_settings(database_url), services=services)  # no TRUSTED_PROXIES
    add_audited_route(app)
    async with over_asgi(app, client_addr=("203.0.113.7", 4321), base_url="http://t") as http:
        headers = {**operator_headers, "X-Forwarded-For": "198.51.100.20"}
        assert (await http.post("/api/_test/audited", headers=headers)).status_code == 200
    data = (await client.get("/api/audit", headers=operator_headers)).json()["data"]
    assert data[0]["client_ip"] == "203.0.113.7"
