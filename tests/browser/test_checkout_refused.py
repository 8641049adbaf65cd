"""Links that cannot pay: an expired session and an unknown id get a clear page, and a session id
cannot show or use another customer's saved cards."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx

from tests.browser.checkout_pages import (
    VISA,
    by_css,
    intents_at_emulator,
    new_session,
    open_page,
    press_pay,
    type_card,
    visible,
    wait_paid,
)
from tests.browser.conftest import Stack, shoot
from tests.conftest import unique_user


def expire_now(stack: Stack, checkout_id: str) -> None:
    path = stack.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE checkout_sessions SET expires_at = '2020-01-01 00:00:00.000000' WHERE id = ?",
            (checkout_id,),
        )


def test_expired_and_unknown_links_are_refused_with_a_clear_page(
    browser: Any, checkout_stack: Stack
) -> None:
    stack = checkout_stack
    customer = unique_user()
    session = new_session(stack, customer)
    expire_now(stack, session["id"])
    browser.get(f"{stack.url}{session['url']}")
    assert by_css(browser, "h1").text == "This checkout link has expired"
    assert "Nothing was charged" in by_css(browser, ".refused").text
    assert by_css(browser, "#return-link").get_attribute("href") == session["return_url"]
    assert not visible(browser, "#pay")
    shoot(browser, "checkout-expired")
    assert httpx.get(f"{stack.url}{session['url']}").status_code == 410
    refused = httpx.post(
        f"{stack.url}/api/checkout/sessions/{session['id']}/pay",
        json={"payment_method_id": "pm_card_visa"},
    )
    assert refused.json()["code"] == "checkout_session_expired"
    assert intents_at_emulator(stack, customer) == []

    for unknown in (f"cs_{'x' * 32}", "cs_nope", "not-a-session"):
        browser.get(f"{stack.url}/checkout/{unknown}")
        assert by_css(browser, "h1").text == "This checkout link is not valid"
        assert httpx.get(f"{stack.url}/checkout/{unknown}").status_code == 404
    shoot(browser, "checkout-unknown")


def test_a_session_cannot_read_or_use_another_customers_cards(
    browser: Any, checkout_stack: Stack
) -> None:
    stack = checkout_stack
    owner = unique_user()
    mine = new_session(stack, owner)
    open_page(browser, stack, mine)
    type_card(browser, VISA)
    by_css(browser, "#save-card").click()
    press_pay(browser)
    wait_paid(browser)
    saved = httpx.get(f"{stack.url}/checkout/{mine['id']}/payment_methods").json()["data"]
    assert [m["last4"] for m in saved] == ["4242"]

    stranger = unique_user()
    theirs = new_session(stack, stranger)
    open_page(browser, stack, theirs)
    assert not visible(browser, "#saved")
    assert visible(browser, "#card-element")
    listed = httpx.get(f"{stack.url}/checkout/{theirs['id']}/payment_methods").json()
    assert listed == {"data": []}
    stolen = httpx.post(
        f"{stack.url}/api/checkout/sessions/{theirs['id']}/pay",
        json={"payment_method_id": saved[0]["id"]},
    )
    assert stolen.status_code == 404
    assert stolen.json()["code"] == "payment_method_not_found"
    assert intents_at_emulator(stack, stranger) == []
