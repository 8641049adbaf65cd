"""The operator console in a real browser, against real `serve` and `worker` processes, the
Stripe emulator and an SMTP server: what an operator does in a day, with a screenshot of every
page at desktop and phone width (test-output/screenshots/console-*.png)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from azora_payments.db.models import Job, Receipt, WebhookEvent
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from tests.browser.conftest import Stack, shoot, wait_until
from tests.conftest import STRIPE_KEY, bearer, make_token, unique_user

pytestmark = pytest.mark.slow

OPERATOR = make_token("ops_browser", roles=["admin"], email="ops@azora.example", lifetime=3600)


@pytest.fixture
def console(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(CONSOLE_ENABLED="true")


def by(how: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, how)


def button(driver: Any, text: str) -> Any:
    return driver.find_element(by("XPATH"), f"//button[normalize-space()='{text}']")


def click_and_wait(driver: Any, element: Any) -> None:
    """Click what submits a form or follows a link, and wait for the next page to be loaded."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    old = driver.find_element(by("TAG_NAME"), "html")
    element.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def pay(stack: Stack, user: str, *, amount: int = 2500, currency: str = "eur") -> dict[str, Any]:
    response = httpx.post(
        f"{stack.url}/api/payments/process",
        json={
            "amount": amount,
            "currency": currency,
            "payment_method_id": "pm_card_visa",
            "description": "Annual plan",
            "receipt_email": "buyer@shop.example",
        },
        headers={**bearer(make_token(user)), "Idempotency-Key": uuid.uuid4().hex},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    paid: dict[str, Any] = response.json()
    return paid


def sign_in(driver: Any, stack: Stack, token: str = OPERATOR) -> None:
    driver.get(f"{stack.url}/console")
    assert driver.current_url.startswith(f"{stack.url}/console/login")
    driver.find_element(by("ID"), "token").send_keys(token)
    click_and_wait(driver, button(driver, "Sign in"))


def db_run(stack: Stack, work: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        db = Database(stack.settings.database_url, pool_size=1)
        try:
            async with db.transaction() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(run())


def emulator_refunds(stack: Stack, intent_id: str) -> list[dict[str, Any]]:
    page = httpx.get(
        f"{stack.emulator_url}/v1/refunds",
        params={"payment_intent": intent_id, "limit": 100},
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
        timeout=10,
    ).json()
    return [r for r in page["data"] if r.get("payment_intent") == intent_id]


def receipt_resends(stack: Stack) -> list[str]:
    ids = [str(m["Message-ID"]) for m in stack.smtp.inbox.messages]
    return [i for i in ids if i.startswith("<rcpt_") and ".issued@" not in i]


def test_operator_finds_a_payment_refunds_it_and_resends_its_receipt(
    browser: Any, console: Stack
) -> None:
    user = unique_user()
    paid = pay(console, user)
    wait_until(lambda: len(console.smtp.inbox.messages) >= 1, what="the receipt e-mail")

    driver = browser
    driver.get(f"{console.url}/console/login")
    shoot(driver, "console-login")
    sign_in(driver, console)
    assert driver.current_url == f"{console.url}/console", driver.page_source
    cookies = {c["name"]: c for c in driver.get_cookies()}
    session = cookies["__Host-azora-console"]
    assert session["httpOnly"] is True
    assert session["secure"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/"
    assert "domain" not in session or session["domain"] in ("127.0.0.1", "")
    # Not readable from the page: HttpOnly.
    assert "__Host-azora-console" not in driver.execute_script("return document.cookie")
    assert "Overview" in driver.page_source
    shoot(driver, "console-overview")

    # Find it by user, open it.
    driver.get(f"{console.url}/console/payments")
    driver.find_element(by("ID"), "q").send_keys(user)
    click_and_wait(driver, button(driver, "Search"))
    shoot(driver, "console-payments")
    click_and_wait(driver, driver.find_element(by("LINK_TEXT"), paid["id"]))
    assert paid["id"] in driver.title
    wait_until(lambda: _reloaded_has(driver, "Open the PDF"), what="the receipt on the page")
    shoot(driver, "console-payment")

    # A partial refund: reviewed, then confirmed.
    amount = driver.find_element(by("ID"), "amount")
    amount.clear()
    amount.send_keys("10.00")
    click_and_wait(driver, button(driver, "Review the refund"))
    assert "€15.00" in driver.page_source  # what is left after it
    shoot(driver, "console-refund-review")
    click_and_wait(driver, button(driver, "Refund €10.00"))
    assert "Refund €10.00" in driver.find_element(by("TAG_NAME"), "h1").text
    shoot(driver, "console-refund-done")

    # A second one for more than remains is refused.
    driver.get(f"{console.url}/console/payments/{paid['id']}")
    amount = driver.find_element(by("ID"), "amount")
    amount.clear()
    amount.send_keys("20.00")
    click_and_wait(driver, button(driver, "Review the refund"))
    assert (
        "at most €15.00 can still be refunded" in driver.find_element(by("TAG_NAME"), "main").text
    )
    shoot(driver, "console-refund-too-much")

    # The same confirmation form sent twice at once (a double click): one refund at Stripe.
    driver.get(f"{console.url}/console/payments/{paid['id']}")
    amount = driver.find_element(by("ID"), "amount")
    amount.clear()
    amount.send_keys("5.00")
    click_and_wait(driver, button(driver, "Review the refund"))
    statuses = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const form = document.querySelector('form[action$="/refund/confirm"]');
        const body = () => new URLSearchParams(new FormData(form));
        const send = () => fetch(form.action, {method: 'POST', body: body(),
                                               credentials: 'same-origin'}).then(r => r.status);
        Promise.all([send(), send()]).then(done, e => done(String(e)));
        """
    )
    assert statuses == [201, 201], statuses
    # And once more later, as the back button and "resubmit" would.
    click_and_wait(driver, button(driver, "Refund €5.00"))
    assert "had been sent already" in driver.page_source
    refunds = emulator_refunds(console, paid["stripe_payment_intent_id"])
    assert sorted(r["amount"] for r in refunds) == [500, 1000]

    # Re-send the receipt: an e-mail arrives at the test's SMTP server.
    driver.get(f"{console.url}/console/payments/{paid['id']}")
    click_and_wait(driver, button(driver, "Re-send the receipt"))
    assert "on its way" in driver.page_source, driver.find_element(by("TAG_NAME"), "main").text
    wait_until(lambda: len(receipt_resends(console)) == 1, what="the re-sent receipt")
    # And to another address the operator gives.
    driver.find_element(by("ID"), "resend-email").send_keys("accounts@shop.example")
    click_and_wait(driver, button(driver, "Re-send the receipt"))
    wait_until(lambda: len(receipt_resends(console)) == 2, what="the receipt to another address")
    assert ["accounts@shop.example"] in console.smtp.inbox.recipients
    driver.refresh()
    timeline = driver.find_element(by("ID"), "timeline-h").find_element(by("XPATH"), "..").text
    assert "refund.created" in timeline
    assert "receipt.email_requested" in timeline
    assert "via console" in timeline
    shoot(driver, "console-payment-after")

    # Sign out: the session is gone, the pages send the browser to sign in.
    click_and_wait(driver, button(driver, "Sign out"))
    assert driver.current_url == f"{console.url}/console/login"
    assert "__Host-azora-console" not in {c["name"] for c in driver.get_cookies()}
    driver.get(f"{console.url}/console/payments")
    assert driver.current_url.startswith(f"{console.url}/console/login")


def _reloaded_has(driver: Any, text: str) -> bool:
    if text in driver.page_source:
        return True
    time.sleep(0.3)
    driver.refresh()
    return text in driver.page_source


def test_customer_token_and_forms_without_csrf_are_refused(browser: Any, console: Stack) -> None:
    driver = browser
    sign_in(driver, console, make_token("user_customer", lifetime=3600))
    assert "customer" in driver.page_source
    assert "__Host-azora-console" not in {c["name"] for c in driver.get_cookies()}
    shoot(driver, "console-customer-refused")

    sign_in(driver, console)
    status = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch('/console/reconcile', {method: 'POST', body: new URLSearchParams({}),
                                     credentials: 'same-origin'}).then(r => done(r.status));
        """
    )
    assert status == 403
    # The same form with its token works: a reconciliation pass.
    click_and_wait(driver, button(driver, "Run a reconciliation pass"))
    assert "Reconciliation pass" in driver.page_source
    shoot(driver, "console-reconcile", phone=False)


def test_replay_a_parked_event_and_retry_a_dead_job(browser: Any, console: Stack) -> None:
    paid = pay(console, unique_user(), amount=4200, currency="usd")
    intent = httpx.get(
        f"{console.emulator_url}/v1/payment_intents/{paid['stripe_payment_intent_id']}",
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
        timeout=10,
    ).json()
    event_id = f"evt_parked_{uuid.uuid4().hex[:12]}"
    # The first e-mail done (job finished) before the test kills its job: no race with it.
    wait_until(
        lambda: db_run(console, lambda s: _email_job_status(s)) == "done",
        timeout=60,
        what="the receipt e-mailed",
    )

    async def seed(session: Any) -> int:
        session.add(
            WebhookEvent(
                id=event_id,
                type="payment_intent.succeeded",
                livemode=False,
                stripe_created=datetime.now(UTC),
                object_id=intent["id"],
                payload={
                    "id": event_id,
                    "object": "event",
                    "type": "payment_intent.succeeded",
                    "created": int(time.time()),
                    "livemode": False,
                    "data": {"object": intent},
                },
                status="parked",
                attempts=15,
                last_error="RuntimeError: the database went away mid-apply",
                source="webhook",
                received_at=utcnow(),
            )
        )
        # The receipt e-mail job, dead after its attempts (as after a long SMTP outage).
        job = (await session.scalars(select(Job).where(Job.kind == "receipt.email").limit(1))).one()
        await session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(status="dead", attempts=20, last_error="SMTPServerDisconnected: gone")
        )
        await session.execute(update(Receipt).values(emailed_at=None))
        return int(job.id)

    job_id = db_run(console, seed)
    sent_before = len(console.smtp.inbox.messages)

    driver = browser
    sign_in(driver, console)
    driver.get(f"{console.url}/console/events")
    assert event_id in driver.page_source
    assert paid["id"] in driver.page_source  # linked to its payment
    shoot(driver, "console-events")
    click_and_wait(
        driver, driver.find_element(by("CSS_SELECTOR"), f'button[aria-label="Replay {event_id}"]')
    )
    assert "queued to be applied again" in driver.page_source
    wait_until(
        lambda: db_run(console, lambda s: _event_status(s, event_id)) == "applied",
        what="the replayed event applied by the worker",
    )

    driver.get(f"{console.url}/console/jobs")
    assert "receipt.email" in driver.page_source
    shoot(driver, "console-jobs")
    click_and_wait(
        driver, driver.find_element(by("CSS_SELECTOR"), f'button[aria-label="Retry job {job_id}"]')
    )
    assert "back in the queue" in driver.page_source
    wait_until(
        lambda: len(console.smtp.inbox.messages) > sent_before,
        timeout=60,
        what="the retried e-mail job",
    )
    wait_until(
        lambda: db_run(console, lambda s: _job_status(s, job_id)) == "done",
        what="the retried job recorded done",
    )

    for name in ("disputes", "notifications", "approvals"):
        driver.get(f"{console.url}/console/{name}")
        assert driver.find_element(by("TAG_NAME"), "h1").text
        shoot(driver, f"console-{name}")
    driver.get(f"{console.url}/console")
    shoot(driver, "console-overview-after")


async def _email_job_status(session: Any) -> str | None:
    job = (await session.scalars(select(Job).where(Job.kind == "receipt.email"))).first()
    return None if job is None else str(job.status)


async def _event_status(session: Any, event_id: str) -> str:
    return str((await session.get(WebhookEvent, event_id)).status)


async def _job_status(session: Any, job_id: int) -> str:
    return str((await session.get(Job, job_id)).status)
