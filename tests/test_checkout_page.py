"""The checkout page's server side over ASGI, on SQLite and PostgreSQL with the emulator: what the
page is served with (CSP, Stripe.js), what its script reads, the settings that turn it on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from azora_payments.checkout.page import content_security_policy
from azora_payments.config import ConfigError, Settings
from azora_payments.domain import receipts
from azora_payments.services import Services
from tests.conftest import (
    STRIPE_KEY,
    app_client,
    bearer,
    emulator_settings,
    make_settings,
    make_token,
    unique_user,
)
from tests.test_checkout import PUBLISHABLE_KEY, SERVICE, create, pay


@pytest.fixture
def stripe_settings(database_url: str, tmp_path: Path, stripe_emulator: str) -> Settings:
    return emulator_settings(
        database_url,
        tmp_path,
        stripe_emulator,
        checkout_enabled=True,
        stripe_publishable_key=PUBLISHABLE_KEY,
    )


async def test_the_page_shows_the_session_with_its_own_policy(
    api: httpx.AsyncClient, stripe_emulator: str
) -> None:
    created = await create(api, amount=123456, currency="jpy", description="Kanji <course>")
    page = await api.get(created["url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "¥123,456" in html
    assert "Kanji &lt;course&gt;" in html  # escaped
    assert f'src="{stripe_emulator}/js.stripe.com/v3/"' in html
    assert f'data-key="{PUBLISHABLE_KEY}"' in html
    assert STRIPE_KEY not in html
    policies = page.headers.get_list("content-security-policy")
    assert len(policies) == 1
    assert f"script-src 'self' {stripe_emulator};" in policies[0]
    assert "frame-ancestors 'none'" in policies[0]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    script = await api.get("/checkout/static/checkout.js")
    assert script.status_code == 200
    assert "handleNextAction" in script.text


def test_outside_the_emulator_the_policy_allows_exactly_stripe(tmp_path: Path) -> None:
    settings = make_settings(
        "sqlite:///x.db",
        stripe_api_base="https://api.stripe.com",
        checkout_enabled=True,
        stripe_publishable_key=PUBLISHABLE_KEY,
    )
    assert settings.stripe_js_url == "https://js.stripe.com/v3/"
    policy = content_security_policy(settings)
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self' https://js.stripe.com https://*.js.stripe.com"
    assert directives["frame-src"] == (
        "https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com"
    )
    assert directives["connect-src"] == "'self' https://api.stripe.com"
    assert directives["style-src"] == "'self'"
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy


def test_checkout_settings() -> None:
    assert make_settings("sqlite:///x.db").checkout_on is False
    with pytest.raises(ConfigError, match="STRIPE_PUBLISHABLE_KEY"):
        make_settings("sqlite:///x.db", checkout_enabled=True)
    with pytest.raises(ConfigError, match="STRIPE_PUBLISHABLE_KEY"):
        make_settings("sqlite:///x.db", stripe_publishable_key="pk_live_abc123")
    with pytest.raises(ConfigError, match="STRIPE_PUBLISHABLE_KEY"):
        make_settings("sqlite:///x.db", stripe_publishable_key="sk_test_abc")
    dev = make_settings("sqlite:///x.db", AZORA_ENV="dev")
    assert dev.checkout_on is True
    assert make_settings("sqlite:///x.db", AZORA_ENV="dev", checkout_enabled=False).checkout_on is (
        False
    )


async def test_off_unless_enabled(database_url: str, tmp_path: Path) -> None:
    async with app_client(make_settings(database_url)) as http:
        assert (await http.get(f"/checkout/cs_{'a' * 32}")).status_code == 404
        created = await http.post(
            "/api/checkout/sessions", json={}, headers={**SERVICE, "Idempotency-Key": "k"}
        )
        assert created.status_code == 404


async def test_what_the_script_reads(api: httpx.AsyncClient, stripe_services: Services) -> None:
    customer = unique_user()
    created = await create(api, customer={"sub": customer})
    state_path = f"/checkout/{created['id']}/state"
    state = (await api.get(state_path)).json()
    assert state["status"] == "open"
    assert state["payment"] is None
    assert state["receipt_url"] is None
    assert (state["amount"], state["currency"]) == (2500, "eur")

    declined = await pay(api, created["id"], "pm_card_chargeDeclined")
    assert declined.status_code == 402
    state = (await api.get(state_path)).json()
    assert state["payment"]["status"] == "failed"
    assert state["payment"]["failure"]["message"] == "Your card was declined."
    assert set(state["payment"]) == {"id", "status", "payment_method", "failure", "client_secret"}

    paid = (await pay(api, created["id"], save=True)).json()
    state = (await api.get(state_path)).json()
    assert state["status"] == "complete"
    assert state["payment"]["id"] == paid["id"]
    assert state["receipt_url"] is None  # the worker has not issued it yet
    pdf = await api.get(f"/checkout/{created['id']}/receipt.pdf")
    assert pdf.status_code == 404
    assert pdf.json()["code"] == "receipt_not_ready"

    async with stripe_services.db.transaction() as session:
        await receipts.issue(session, payment_id=paid["id"])
    state = (await api.get(state_path)).json()
    assert state["receipt_url"] == f"/checkout/{created['id']}/receipt.pdf"
    pdf = await api.get(state["receipt_url"])
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")

    cards = (await api.get(f"/checkout/{created['id']}/payment_methods")).json()["data"]
    assert [(c["brand"], c["last4"]) for c in cards] == [("visa", "4242")]
    other = await create(api)
    assert (await api.get(f"/checkout/{other['id']}/payment_methods")).json() == {"data": []}

    complete_page = await api.get(created["url"])
    assert complete_page.status_code == 200
    assert 'data-state="complete"' in complete_page.text


async def test_three_d_secure_state_carries_the_client_secret(api: httpx.AsyncClient) -> None:
    created = await create(api)
    first = (await pay(api, created["id"], "pm_card_threeDSecure2Required")).json()
    state = (await api.get(f"/checkout/{created['id']}/state")).json()
    assert state["payment"]["status"] == "requires_action"
    assert state["payment"]["client_secret"] == first["client_secret"]


@pytest.mark.parametrize("path", ["", "/state", "/payment_methods", "/receipt.pdf"])
async def test_unknown_sessions_are_not_found(api: httpx.AsyncClient, path: str) -> None:
    for unknown in (f"cs_{'z' * 32}", "cs_bad"):
        response = await api.get(f"/checkout/{unknown}{path}")
        assert response.status_code == 404
        if path == "":
            assert "This checkout link is not valid" in response.text
            assert response.headers["content-type"].startswith("text/html")


async def test_an_expired_session_gets_the_expired_page(
    api: httpx.AsyncClient, stripe_services: Services
) -> None:
    from tests.test_checkout import _move_expiry

    created = await create(api)
    await _move_expiry(stripe_services, created["id"], minutes=-1)
    page = await api.get(created["url"])
    assert page.status_code == 410
    assert "This checkout link has expired" in page.text
    assert created["return_url"] in page.text


async def test_the_emulators_stripe_js_and_browser_payment_methods(stripe_emulator: str) -> None:
    async with httpx.AsyncClient(base_url=stripe_emulator) as http:
        js = await http.get("/js.stripe.com/v3/")
        assert js.status_code == 200
        assert js.headers["content-type"].startswith("application/javascript")
        assert "localstripe" in js.text
        assert "stripe.handleNextAction = async function" in js.text
        assert "stripe.createPaymentMethod = async function" in js.text
        card = {
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        }
        made = await http.post("/v1/payment_methods", data={**card, "key": PUBLISHABLE_KEY})
        assert made.status_code == 200, made.text
        assert re.fullmatch(r"pm_\w+", made.json()["id"])
        assert made.json()["card"]["last4"] == "4242"
        bad = await http.post("/v1/payment_methods", data={**card, "card[number]": "1234"})
        assert bad.status_code == 401
        refused: Any = await http.post(
            "/v1/payment_methods", data={**card, "key": PUBLISHABLE_KEY, "card[number]": "12"}
        )
        assert refused.status_code == 400
        assert (
            await http.post(
                "/v1/payment_methods", data=card, headers={"Authorization": f"Bearer {STRIPE_KEY}"}
            )
        ).status_code == 200


async def test_receipt_link_is_bound_to_the_session(api: httpx.AsyncClient) -> None:
    created = await create(api)
    other = await create(api)
    paid = (await pay(api, created["id"])).json()
    # The other session's receipt link never shows this payment's receipt.
    response = await api.get(f"/checkout/{other['id']}/receipt.pdf")
    assert response.status_code == 404
    owner = bearer(make_token(paid["id"]))
    assert (await api.get(f"/api/payments/{paid['id']}", headers=owner)).status_code == 404
