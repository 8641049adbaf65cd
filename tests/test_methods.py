"""Saved payment methods end to end against the emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from azora_payments.db.models import AuditRecord, Customer
from azora_payments.services import Services
from tests.conftest import bearer, emulator_customers_for, make_token, unique_user


def headers_for(user: str, **claims: object) -> dict[str, str]:
    return bearer(make_token(user, **claims))  # type: ignore[arg-type]


async def test_save_list_delete(api: httpx.AsyncClient, stripe_services: Services) -> None:
    h = headers_for(unique_user())
    saved = await api.post(
        "/api/payments/methods/save", json={"payment_method_id": "pm_card_visa"}, headers=h
    )
    assert saved.status_code == 201, saved.text
    method = saved.json()
    assert method["id"].startswith("pm_")
    assert method["type"] == "card"
    assert method["brand"] == "visa"
    assert method["last4"] == "4242"
    assert method["is_default"] is False

    again = await api.post(
        "/api/payments/methods/save",
        json={"payment_method_id": method["id"], "set_default": True},
        headers=h,
    )
    assert again.status_code == 200
    assert again.json()["id"] == method["id"]
    assert again.json()["is_default"] is True
    customer_id = await _customer_of(stripe_services, h)
    assert await stripe_services.stripe.default_payment_method(customer_id) == method["id"]

    listed = await api.get("/api/payments/methods/list", headers=h)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == [method["id"]]

    deleted = await api.delete(
        "/api/payments/methods/delete", params={"payment_method_id": method["id"]}, headers=h
    )
    assert deleted.status_code == 204
    assert (await api.get("/api/payments/methods/list", headers=h)).json() == {"data": []}
    stripe_pm = await stripe_services.stripe.retrieve_payment_method(method["id"])
    assert stripe_pm.customer is None

    async with stripe_services.db.transaction() as session:
        actions = (await session.scalars(select(AuditRecord.action).order_by(AuditRecord.id))).all()
    assert actions == [
        "payment_method.saved",
        "payment_method.default_set",
        "payment_method.deleted",
    ]


async def _customer_of(services: Services, headers: dict[str, str]) -> str:
    token = headers["Authorization"].split()[1]
    user = await services.verifier.verify(token)
    async with services.db.transaction() as session:
        cus = await session.scalar(
            select(Customer.stripe_customer_id).where(Customer.user_id == user.id)
        )
    assert cus is not None
    return cus


async def test_list_newest_first(api: httpx.AsyncClient) -> None:
    h = headers_for(unique_user())
    ids = []
    for pm in ("pm_card_visa", "pm_card_mastercard"):
        r = await api.post("/api/payments/methods/save", json={"payment_method_id": pm}, headers=h)
        assert r.status_code == 201
        ids.append(r.json()["id"])
    listed = (await api.get("/api/payments/methods/list", headers=h)).json()["data"]
    assert [m["id"] for m in listed] == list(reversed(ids))
    assert listed[0]["brand"] == "mastercard"


async def test_another_users_method_is_not_found(api: httpx.AsyncClient) -> None:
    owner = headers_for(unique_user())
    thief = headers_for(unique_user())
    saved = await api.post(
        "/api/payments/methods/save", json={"payment_method_id": "pm_card_visa"}, headers=owner
    )
    pm = saved.json()["id"]
    stolen = await api.post(
        "/api/payments/methods/save", json={"payment_method_id": pm}, headers=thief
    )
    assert stolen.status_code == 404
    assert stolen.json()["code"] == "payment_method_not_found"
    gone = await api.delete(
        "/api/payments/methods/delete", params={"payment_method_id": pm}, headers=thief
    )
    assert gone.status_code == 404
    assert (await api.get("/api/payments/methods/list", headers=owner)).json()["data"][0][
        "id"
    ] == pm


async def test_method_attached_elsewhere_in_stripe_is_not_found(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    """Attached to a customer that is not the caller's (e.g. made outside this service)."""
    other = await stripe_services.stripe.create_customer(
        user_id=unique_user(), email=None, name=None
    )
    pm = await stripe_services.stripe.retrieve_payment_method("pm_card_visa")
    attached = await stripe_services.stripe.attach_payment_method(
        payment_method_id=pm.id, customer_id=other
    )
    response = await api.post(
        "/api/payments/methods/save",
        json={"payment_method_id": attached.id},
        headers=headers_for(unique_user()),
    )
    assert response.status_code == 404
    assert response.json()["code"] == "payment_method_not_found"


async def test_unknown_method_is_not_found(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/payments/methods/save",
        json={"payment_method_id": "pm_doesnotexist123"},
        headers=headers_for(unique_user()),
    )
    assert response.status_code == 404
    assert response.json()["code"] == "payment_method_not_found"


async def test_first_requests_race_create_one_customer(
    api: httpx.AsyncClient, stripe_services: Services, stripe_emulator: str
) -> None:
    user = unique_user()
    h = headers_for(user)
    responses = await asyncio.gather(
        *[
            api.post(
                "/api/payments/methods/save", json={"payment_method_id": "pm_card_visa"}, headers=h
            )
            for _ in range(6)
        ]
    )
    # One save created the method; the others, racing it, answer 200 with the same object.
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201], [
        r.text for r in responses
    ]
    assert len({r.json()["id"] for r in responses}) == 1
    async with stripe_services.db.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.user_id == user)
        )
    assert count == 1
    # And one at Stripe: a race that made a customer per request would leave the losers'
    # customers there, unused, even if our table kept only one.
    at_stripe = await emulator_customers_for(stripe_emulator, user)
    assert [c["id"] for c in at_stripe] == [await _customer_of(stripe_services, h)]
    listed = (await api.get("/api/payments/methods/list", headers=h)).json()["data"]
    assert len(listed) == 1
    stripe_pm = await stripe_services.stripe.retrieve_payment_method(listed[0]["id"])
    assert stripe_pm.customer == await _customer_of(stripe_services, h)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "validation_error"),
        ({"payment_method_id": "card_123"}, 422, "validation_error"),
        ({"payment_method_id": "pm_card_visa", "extra": 1}, 422, "validation_error"),
        ({"payment_method_id": "pm_card_visa", "set_default": "yes"}, 422, "validation_error"),
    ],
)
async def test_bad_save_bodies(
    api: httpx.AsyncClient, body: dict[str, object], status: int, code: str
) -> None:
    h = headers_for(unique_user())
    response = await api.post("/api/payments/methods/save", json=body, headers=h)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert (await api.get("/api/payments/methods/list", headers=h)).json() == {"data": []}


async def test_malformed_json_is_400_but_auth_first(api: httpx.AsyncClient) -> None:
    no_auth = await api.post("/api/payments/methods/save", content=b"{not json")
    assert no_auth.status_code == 401
    bad = await api.post(
        "/api/payments/methods/save", content=b"{not json", headers=headers_for(unique_user())
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_json"
