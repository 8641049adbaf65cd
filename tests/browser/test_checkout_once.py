"""Never twice, in a real browser: a double click on Pay, a reload in the middle of a payment, a
second tab, and a 503 on the first try each end with one PaymentIntent at the emulator, one
payment and one receipt."""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.checkout_pages import (
    VISA,
    by_css,
    history,
    intents_at_emulator,
    open_new_session,
    open_page,
    payment,
    press_pay,
    session_now,
    start_three_d_secure,
    type_card,
    wait_challenge,
    wait_paid,
    wait_ready,
    wait_receipt_link,
)
from tests.browser.conftest import Stack, shoot, wait_until


def paid_exactly_once(stack: Stack, customer: str, checkout_id: str) -> None:
    wait_until(
        lambda: session_now(stack, checkout_id)["status"] == "complete", what="session complete"
    )
    [intent] = intents_at_emulator(stack, customer)
    assert intent["status"] == "succeeded"
    [paid] = history(stack, customer)
    assert paid["stripe_payment_intent_id"] == intent["id"]
    assert session_now(stack, checkout_id)["payment_id"] == paid["id"]
    wait_until(lambda: payment(stack, paid["id"])["receipt"] is not None, what="receipt issued")


def test_a_double_click_on_pay_charges_once(browser: Any, checkout_stack: Stack) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    stack = checkout_stack
    customer, session = open_new_session(browser, stack)
    type_card(browser, VISA)
    ActionChains(browser).double_click(by_css(browser, "#pay")).perform()
    # And a third press sent straight to the form, as a script or an impatient finger would.
    browser.execute_script("document.getElementById('pay-form').requestSubmit()")
    wait_paid(browser)
    wait_receipt_link(browser)
    paid_exactly_once(stack, customer, session["id"])


def test_a_reload_in_the_middle_of_3ds_continues_the_same_payment(
    browser: Any, checkout_stack: Stack
) -> None:
    stack = checkout_stack
    customer, session = open_new_session(browser, stack)
    start_three_d_secure(browser)
    browser.refresh()
    # The reloaded page finds the attempt under way and asks the bank again: no new charge.
    wait_ready(browser)
    wait_challenge(browser)
    shoot(browser, "checkout-reloaded-3ds")
    by_css(browser, "#azora-3ds-complete").click()
    wait_paid(browser)
    paid_exactly_once(stack, customer, session["id"])


def test_two_tabs_paying_at_once_charge_once(browser: Any, checkout_stack: Stack) -> None:
    stack = checkout_stack
    customer, session = open_new_session(browser, stack)
    first = browser.current_window_handle
    type_card(browser, VISA)
    browser.switch_to.new_window("tab")
    open_page(browser, stack, session)
    second = browser.current_window_handle
    type_card(browser, "5555555555554444")
    # Both tabs press Pay before either hears back.
    for handle in (first, second):
        browser.switch_to.window(handle)
        browser.execute_script("document.getElementById('pay-form').requestSubmit()")
    for handle in (first, second):
        browser.switch_to.window(handle)
        wait_paid(browser)
    paid_exactly_once(stack, customer, session["id"])


def test_a_503_on_the_first_try_is_retried_into_one_payment(
    browser: Any, checkout_stack: Stack
) -> None:
    stack = checkout_stack
    customer, session = open_new_session(browser, stack)
    type_card(browser, VISA)
    # More failures than the service's own retries: the page gets a 503 and tries again.
    httpx.post(
        f"{stack.emulator_url}/_azora/faults",
        json={"method": "POST", "path": "^/v1/payment_intents$", "status": 500, "times": 2},
    ).raise_for_status()
    try:
        press_pay(browser)
        wait_until(lambda: len(history(stack, customer)) == 1, what="the attempt was recorded")
        assert history(stack, customer)[0]["status"] == "processing"
        shoot(browser, "checkout-retrying")
        wait_paid(browser, timeout=60)
    finally:
        httpx.delete(f"{stack.emulator_url}/_azora/faults")
    wait_receipt_link(browser)
    paid_exactly_once(stack, customer, session["id"])
