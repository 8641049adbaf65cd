"""Driving the checkout page in the browser suites: sessions made as the product's backend would,
the card typed into the (emulator's) Stripe Elements, the outcome read off the page."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.browser.conftest import CHECKOUT_ENV as CHECKOUT_ENV
from tests.browser.conftest import PUBLISHABLE_KEY as PUBLISHABLE_KEY
from tests.browser.conftest import Stack, wait_until
from tests.conftest import STRIPE_KEY, bearer, make_token, unique_user

SERVICE = bearer(make_token("shop-backend", roles=["service"], email=None, lifetime=24 * 3600))
OPERATOR = bearer(
    make_token("ops_1", roles=["admin"], email="ops@azora.example", lifetime=24 * 3600)
)

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
DECLINED = "4000000000000002"
THREE_D_SECURE = "4000000000003220"


def new_session(stack: Stack, customer: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {
            "sub": customer or unique_user(),
            "email": "ada@shop.example",
            "name": "Ada Lovelace",
        },
        "amount": 4900,
        "currency": "eur",
        "description": "Course: Linear Algebra (spring term)",
        "metadata": {"order_id": f"ord_{uuid.uuid4().hex[:6]}"},
        "return_url": "https://shop.example/orders/42",
    }
    body.update(overrides)
    response = httpx.post(
        f"{stack.url}/api/checkout/sessions",
        json=body,
        headers={**SERVICE, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


def session_now(stack: Stack, checkout_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.url}/api/checkout/sessions/{checkout_id}", headers=SERVICE)
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    return session


def payment(stack: Stack, payment_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.url}/api/payments/{payment_id}", headers=OPERATOR)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def history(stack: Stack, customer: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.url}/api/payments/history", headers=bearer(make_token(customer)), timeout=10
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def intents_at_emulator(stack: Stack, customer: str) -> list[dict[str, Any]]:
    page = httpx.get(
        f"{stack.emulator_url}/v1/payment_intents",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
    ).json()
    return [pi for pi in page["data"] if pi.get("metadata", {}).get("azora_user_id") == customer]


def open_page(browser: Any, stack: Stack, session: dict[str, Any]) -> None:
    browser.get(f"{stack.url}{session['url']}")
    wait_ready(browser)


def open_new_session(browser: Any, stack: Stack) -> tuple[str, dict[str, Any]]:
    """A new customer's checkout session, open and ready in the browser: (customer, session)."""
    customer = unique_user()
    session = new_session(stack, customer)
    open_page(browser, stack, session)
    return customer, session


def start_three_d_secure(browser: Any) -> None:
    """Pay with the 3-D Secure test card, up to the bank's challenge on the page."""
    type_card(browser, THREE_D_SECURE)
    press_pay(browser)
    wait_challenge(browser)


def wait_ready(browser: Any) -> None:
    wait_until(
        lambda: browser.execute_script(
            "const r = document.getElementById('checkout');"
            " return !!r && r.dataset.ready === 'true'"
        ),
        what="the checkout page is ready",
    )


def by_css(browser: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def visible(browser: Any, selector: str) -> bool:
    from selenium.webdriver.common.by import By

    found = browser.find_elements(By.CSS_SELECTOR, selector)
    return bool(found) and found[0].is_displayed()


def type_card(browser: Any, number: str, *, exp: str = "1234", cvc: str = "123") -> None:
    """The emulator's card element: number, month, year (two digits), CVC, postal code."""
    fields = {"cardnumber": number, "exp-month": exp[:2], "exp-year": exp[2:], "cvc": cvc}
    fields["postal"] = "75001"
    for name, value in fields.items():
        box = by_css(browser, f'#card-element input[name="{name}"]')
        box.clear()
        box.send_keys(value)


def choose_new_card(browser: Any) -> None:
    if visible(browser, "#method-new"):
        by_css(browser, "#method-new").click()


def press_pay(browser: Any) -> None:
    by_css(browser, "#pay").click()


def message(browser: Any) -> str:
    return str(by_css(browser, "#message").text) if visible(browser, "#message") else ""


def wait_message(browser: Any, *, timeout: float = 30.0) -> str:
    wait_until(lambda: bool(message(browser)), timeout=timeout, what="a message on the page")
    return message(browser)


def wait_paid(browser: Any, *, timeout: float = 40.0) -> str:
    wait_until(lambda: visible(browser, "#outcome.ok"), timeout=timeout, what="payment received")
    return str(by_css(browser, "#outcome").text)


def wait_receipt_link(browser: Any, *, timeout: float = 40.0) -> str:
    wait_until(lambda: visible(browser, "#receipt-link"), timeout=timeout, what="receipt link")
    return str(by_css(browser, "#receipt-link").get_attribute("href"))


def wait_challenge(browser: Any, *, timeout: float = 30.0) -> None:
    wait_until(lambda: visible(browser, "#azora-3ds-challenge"), timeout=timeout, what="3-D Secure")


def settle(seconds: float = 0.5) -> None:
    time.sleep(seconds)
