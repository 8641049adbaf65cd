"""The checkout page in headless Chromium against real serve + worker processes and the Stripe
emulator: paying with a new card (saved), then with the saved card; receipts; sessions complete."""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.checkout_pages import (
    VISA,
    by_css,
    history,
    intents_at_emulator,
    open_page,
    payment,
    press_pay,
    session_now,
    type_card,
    visible,
    wait_paid,
    wait_receipt_link,
)
from tests.browser.conftest import Stack, shoot, wait_until
from tests.conftest import unique_user


def test_a_new_card_saved_then_the_saved_card(browser: Any, checkout_stack: Stack) -> None:
    from tests.browser.checkout_pages import new_session

    stack = checkout_stack
    customer = unique_user()
    first = new_session(stack, customer)
    open_page(browser, stack, first)
    assert "€49.00" in by_css(browser, "#amount").text
    assert "Linear Algebra" in by_css(browser, "#description").text
    assert not visible(browser, "#saved")  # nothing saved yet
    shoot(browser, "checkout-new-card")
    type_card(browser, VISA)
    by_css(browser, "#save-card").click()
    press_pay(browser)
    text = wait_paid(browser)
    assert "€49.00" in text
    assert "4242" in text
    receipt = wait_receipt_link(browser)
    shoot(browser, "checkout-paid")
    pdf = httpx.get(receipt)
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")
    done = session_now(stack, first["id"])
    assert done["status"] == "complete"
    assert done["payment_id"]
    assert by_css(browser, "#return-link").get_attribute("href") == first["return_url"]

    second = new_session(stack, customer, amount=1500, description="Workbook")
    open_page(browser, stack, second)
    assert visible(browser, "#saved")
    saved = by_css(browser, 'input[name="method"]:checked')
    assert saved.get_attribute("value").startswith("pm_")
    assert not visible(browser, "#card-element")
    shoot(browser, "checkout-saved-card")
    press_pay(browser)
    wait_paid(browser)
    wait_receipt_link(browser)
    again = session_now(stack, second["id"])
    assert again["status"] == "complete"

    paid = history(stack, customer)
    assert sorted(p["id"] for p in paid) == sorted([done["payment_id"], again["payment_id"]])
    assert all(p["status"] == "succeeded" for p in paid)
    assert {p["checkout_session_id"] for p in paid} == {first["id"], second["id"]}
    for p in paid:
        wait_until(
            lambda p=p: payment(stack, p["id"])["receipt"] is not None, what="receipt issued"
        )
    assert len(intents_at_emulator(stack, customer)) == 2
