"""Payment history and details: keyset pagination, filters, ownership, the operator view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from azora_payments.db.models import Payment
from azora_payments.domain import audit
from azora_payments.ids import new_id
from azora_payments.services import Services
from tests.conftest import bearer, make_token

BASE = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def seed(
    services: Services,
    user_id: str,
    count: int,
    *,
    status: str = "succeeded",
    start: datetime = BASE,
    same_time: bool = False,
) -> list[str]:
    ids = []
    async with services.db.transaction() as session:
        for i in range(count):
            at = start if same_time else start + timedelta(minutes=i)
            payment = Payment(
                id=new_id("pay"),
                user_id=user_id,
                status=status,
                amount=1000 + i,
                currency="usd",
                amount_refunded=0,
                metadata_={},
                save_payment_method=False,
                disputed=False,
                stripe_payment_intent_id=new_id("pi_seed"),
                created_at=at,
                updated_at=at,
            )
            session.add(payment)
            audit.record(
                session, actor=audit.Actor(user_id), action="payment.created", payment_id=payment.id
            )
            ids.append(payment.id)
    return ids


async def walk(client: httpx.AsyncClient, headers: dict[str, str], **params: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        page = await client.get("/api/payments/history", params=query, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [p["id"] for p in body["data"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return seen
        cursor = body["next_cursor"]


async def test_pages_newest_first_with_ties(client: httpx.AsyncClient, services: Services) -> None:
    ids = await seed(services, "user_1", 7)
    tied = await seed(services, "user_1", 5, start=BASE + timedelta(hours=1), same_time=True)
    headers = bearer(make_token("user_1"))
    seen = await walk(client, headers, limit=3)
    assert seen == sorted(tied, reverse=True) + list(reversed(ids))


async def test_stable_while_new_payments_arrive(
    client: httpx.AsyncClient, services: Services
) -> None:
    ids = await seed(services, "user_1", 6)
    headers = bearer(make_token("user_1"))
    first = (await client.get("/api/payments/history", params={"limit": 3}, headers=headers)).json()
    await seed(services, "user_1", 4, start=BASE + timedelta(days=1))
    second = (
        await client.get(
            "/api/payments/history",
            params={"limit": 3, "cursor": first["next_cursor"]},
            headers=headers,
        )
    ).json()
    assert [p["id"] for p in first["data"] + second["data"]] == list(reversed(ids))
    assert second["has_more"] is False


async def test_only_own_payments(client: httpx.AsyncClient, services: Services) -> None:
    mine = await seed(services, "user_1", 2)
    theirs = await seed(services, "user_2", 3)
    headers = bearer(make_token("user_1"))
    assert await walk(client, headers) == list(reversed(mine))
    other = await client.get(f"/api/payments/{theirs[0]}", headers=headers)
    assert other.status_code == 404
    assert other.json()["code"] == "not_found"
    missing = await client.get("/api/payments/pay_doesnotexist", headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {**other.json(), "request_id": missing.json()["request_id"]}


async def test_filters(client: httpx.AsyncClient, services: Services) -> None:
    ok = await seed(services, "user_1", 3)
    failed = await seed(services, "user_1", 2, status="failed", start=BASE + timedelta(hours=2))
    headers = bearer(make_token("user_1"))
    assert await walk(client, headers, status="failed") == list(reversed(failed))
    window = await walk(
        client,
        headers,
        created_gte=(BASE + timedelta(minutes=1)).isoformat(),
        created_lt=(BASE + timedelta(minutes=2)).isoformat(),
    )
    assert window == [ok[1]]


async def test_operator_view(
    client: httpx.AsyncClient, services: Services, operator_headers: dict[str, str]
) -> None:
    a = await seed(services, "user_1", 2)
    b = await seed(services, "user_2", 2, start=BASE + timedelta(hours=1))
    everything = await walk(client, operator_headers)
    assert everything == list(reversed(b)) + list(reversed(a))
    listed = (await client.get("/api/payments/history", headers=operator_headers)).json()
    assert [r["action"] for r in listed["data"][0]["audit"]] == ["payment.created"]
    assert {p["user_id"] for p in listed["data"]} == {"user_1", "user_2"}
    assert await walk(client, operator_headers, user_id="user_1") == list(reversed(a))
    intent = (await client.get(f"/api/payments/{b[1]}", headers=operator_headers)).json()
    by_intent = await walk(
        client, operator_headers, stripe_payment_intent_id=intent["stripe_payment_intent_id"]
    )
    assert by_intent == [b[1]]
    detail = (await client.get(f"/api/payments/{a[0]}", headers=operator_headers)).json()
    assert detail["user_id"] == "user_1"
    assert [r["action"] for r in detail["audit"]] == ["payment.created"]
    own = (await client.get(f"/api/payments/{a[0]}", headers=bearer(make_token("user_1")))).json()
    assert "user_id" not in own
    assert "audit" not in own


async def test_non_operator_cannot_ask_for_others(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/payments/history", params={"user_id": "user_2"}, headers=bearer(make_token("user_1"))
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "WyJrMSIsIjIwMjYiLDFd"])
async def test_foreign_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get(
        "/api/payments/history", params={"cursor": cursor}, headers=bearer(make_token("user_1"))
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"status": "paid"}, "status"),
        ({"created_gte": "yesterday"}, "created_gte"),
    ],
)
async def test_bad_query_is_422(
    client: httpx.AsyncClient, params: dict[str, object], field: str
) -> None:
    response = await client.get(
        "/api/payments/history", params=params, headers=bearer(make_token("user_1"))
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]
