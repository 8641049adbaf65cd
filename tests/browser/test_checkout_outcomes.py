"""Declines and 3-D Secure on the checkout page, in headless Chromium against real serve + worker
processes and the Stripe emulator: the customer is told what happened, in their words, and is
charged only when the payment succeeds."""

from __future__ import annotations

from typing import Any

from tests.browser.checkout_pages import (
    DECLINED,
    VISA,
    by_css,
    history,
    intents_at_emulator,
    open_new_session,
    payment,
    press_pay,
    session_now,
    start_three_d_secure,
    type_card,
    visible,
    wait_message,
    wait_paid,
    wait_receipt_link,
)
from tests.browser.conftest import Stack, shoot, wait_until


def test_a_decline_shows_the_safe_message_then_another_card_pays_once(
    browser: Any, checkout_stack: Stack
) -> None:
    stack = checkout_stack
    customer, session = open_new_session(browser, stack)
    type_card(browser, DECLINED)
    press_pay(browser)
    text = wait_message(browser)
    assert text.startswith("Your card was declined.")
    assert "You were not charged" in text
    assert by_css(browser, "#pay").is_enabled()
    shoot(browser, "checkout-declined")
    assert session_now(stack, session["id"])["status"] == "open"

    type_card(browser, VISA)
    press_pay(browser)
    wait_paid(browser)
    wait_receipt_link(browser)
    paid = history(stack, customer)
    assert sorted(p["status"] for p in paid) == ["failed", "succeeded"]
    done = session_now(stack, session["id"])
    winner = next(p for p in paid if p["status"] == "succeeded")
    assert (done["status"], done["payment_id"]) == ("complete", winner["id"])
    intents = intents_at_emulator(stack, customer)
    assert len(intents) == 2
    assert sum(1 for i in intents if i["status"] == "succeeded") == 1


def test_three_d_secure_completed_in_place(browser: Any, checkout_stack: Stack) -> None:
    stack = checkout_stack
    customer, session = open_new_session(browser, stack)
    start_three_d_secure(browser)
    shoot(browser, "checkout-3ds-challenge")
    by_css(browser, "#azora-3ds-complete").click()
    text = wait_paid(browser)
    assert "€49.00" in text
    wait_receipt_link(browser)
    done = session_now(stack, session["id"])
    assert done["status"] == "complete"
    assert payment(stack, done["payment_id"])["status"] == "succeeded"
    [intent] = intents_at_emulator(stack, customer)
    assert intent["status"] == "succeeded"


def test_three_d_secure_failed_is_not_charged_and_says_so(
    browser: Any, checkout_stack: Stack
) -> None:
    stack = checkout_stack
    customer, session = open_new_session(browser, stack)
    start_three_d_secure(browser)
    by_css(browser, "#azora-3ds-fail").click()
    text = wait_message(browser)
    assert "did not confirm" in text
    assert "You were not charged" in text
    assert not visible(browser, "#outcome")
    shoot(browser, "checkout-3ds-failed")
    [attempt] = history(stack, customer)
    assert attempt["status"] == "failed"
    [intent] = intents_at_emulator(stack, customer)
    assert intent["status"] != "succeeded"
    assert intent.get("amount_received", 0) == 0
    assert session_now(stack, session["id"])["status"] == "open"

    # The same session may still be paid, with another card, once.
    type_card(browser, VISA)
    press_pay(browser)
    wait_paid(browser)
    wait_until(lambda: session_now(stack, session["id"])["status"] == "complete", what="complete")
    assert len(intents_at_emulator(stack, customer)) == 2
