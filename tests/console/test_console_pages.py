"""Every console page and action over ASGI on both databases, on data written straight to the
database: the overview's figures and chart, the payment search and its refusals, one payment's
page (decline reason, dispute, timeline, receipt PDF), and the work lists with their actions."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from azora_payments.db.models import AuditRecord, Job, Notification, WebhookEvent
from azora_payments.db.types import utcnow
from azora_payments.domain import notifications
from azora_payments.ids import new_id
from azora_payments.jobs.queue import enqueue
from azora_payments.services import Services
from tests.console.conftest import csrf_of, sign_in
from tests.receipts.conftest import run_receipt_jobs, seed_succeeded
from tests.webhooks.conftest import seed_payment


async def _dispute(session: object, payment_id: str, status: str) -> None:
    from azora_payments.db.models import Payment

    await session.execute(  # type: ignore[attr-defined]
        update(Payment).where(Payment.id == payment_id).values(disputed=True, dispute_status=status)
    )


def _event(
    id: str, *, type: str, object_id: str, status: str, attempts: int, last_error: str | None = None
) -> WebhookEvent:
    return WebhookEvent(
        last_error=last_error,
        id=id,
        type=type,
        livemode=False,
        stripe_created=utcnow(),
        object_id=object_id,
        payload={},
        status=status,
        attempts=attempts,
        source="webhook",
        received_at=utcnow(),
    )


@pytest.fixture
async def signed_in(console: httpx.AsyncClient) -> httpx.AsyncClient:
    await sign_in(console)
    return console


async def _audit(services: Services, action: str) -> list[AuditRecord]:
    async with services.db.read() as session:
        query = select(AuditRecord).where(AuditRecord.action == action)
        return list((await session.scalars(query)).all())


async def test_overview_counts_money_by_currency_and_draws_the_hours(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    await seed_succeeded(console_services, amount=2000, currency="usd", enqueue=False)
    await seed_succeeded(console_services, amount=1500, currency="eur", enqueue=False)
    await seed_payment(
        console_services,
        status="failed",
        pi_id="pi_declined_1",
        failure_code="card_declined",
        failure_decline_code="insufficient_funds",
    )
    page = await signed_in.get("/console")
    assert page.status_code == 200
    text = page.text
    assert "$20.00" in text
    assert "€15.00" in text
    assert "66.7 %" in text  # 2 of 3 decided payments succeeded
    assert "insufficient funds" in text
    svg = re.search(r"<svg class=\"chart\".*?</svg>", text, re.S)
    assert svg is not None
    assert "2 succeeded, 1 failed" in svg.group(0)
    assert svg.group(0).count("<rect") == 2  # this hour's two stacked bars


async def test_overview_counts_what_waits_for_an_operator(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    """The tiles: open disputes (not the closed ones), parked events, dead and queued jobs."""
    open_one = await seed_succeeded(console_services, amount=700, enqueue=False)
    closed = await seed_succeeded(console_services, amount=800, enqueue=False)
    queued = [await seed_succeeded(console_services, amount=900) for _ in range(3)]
    async with console_services.db.transaction() as session:
        await _dispute(session, open_one, "needs_response")
        await _dispute(session, closed, "won")
        session.add(
            _event(
                "evt_parked_tile",
                type="payment_intent.succeeded",
                object_id="pi_tile",
                status="parked",
                attempts=15,
            )
        )
        dead = (await session.scalars(select(Job.id).order_by(Job.id).limit(1))).one()
        await session.execute(update(Job).where(Job.id == dead).values(status="dead"))
    assert len(queued) == 3
    text = (await signed_in.get("/console")).text

    def tile(label: str) -> str:
        found = re.search(r'<span class="n">(\d+)</span> ' + label, text)
        assert found is not None, label
        return found.group(1)

    assert tile("open disputes") == "1"
    assert tile("parked events") == "1"
    assert tile("dead jobs") == "1"
    assert tile("jobs queued") == "2"  # three receipt jobs, one of them dead
    assert tile("refunds to approve") == "0"
    assert "oldest due since" in text


async def test_search_by_id_user_status_amount_and_date(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    small = await seed_succeeded(console_services, user_id="user_a", amount=900, enqueue=False)
    large = await seed_succeeded(console_services, user_id="user_a", amount=5000, enqueue=False)
    other = await seed_payment(console_services, status="failed", pi_id="pi_found_me", amount=700)
    exact = await signed_in.get(f"/console/payments?q={small}")
    assert exact.status_code == 303
    assert exact.headers["location"] == f"/console/payments/{small}"
    by_user = (await signed_in.get("/console/payments?q=user_a")).text
    assert small in by_user
    assert large in by_user
    assert other.id not in by_user
    by_intent = (await signed_in.get("/console/payments?q=pi_found_me")).text
    assert other.id in by_intent
    assert small not in by_intent
    failed = (await signed_in.get("/console/payments?status=failed")).text
    assert other.id in failed
    assert small not in failed
    ranged = (
        await signed_in.get("/console/payments?currency=usd&amount_min=10&amount_max=60.00")
    ).text
    assert large in ranged
    assert small not in ranged
    today = utcnow().date().isoformat()
    dated = (await signed_in.get(f"/console/payments?date_from={today}&date_to={today}")).text
    assert small in dated
    yesterday = (utcnow() - timedelta(days=1)).date().isoformat()
    none = (await signed_in.get(f"/console/payments?date_to={yesterday}")).text
    assert "No payment matches" in none


async def test_search_pages_by_keyset(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    ids = [
        await seed_succeeded(console_services, user_id="user_pages", enqueue=False)
        for _ in range(27)
    ]
    first = (await signed_in.get("/console/payments?q=user_pages")).text
    more = re.search(r'href="(/console/payments\?[^"]*cursor=[^"]+)" rel="next"', first)
    assert more is not None
    second = (await signed_in.get(more.group(1).replace("&amp;", "&"))).text
    shown = set(re.findall(r"pay_[0-9a-z]{26}", first)) | set(
        re.findall(r"pay_[0-9a-z]{26}", second)
    )
    assert shown == set(ids)
    assert 'rel="next"' not in second


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("q=pay_short", "pay_ followed by 26"),
        ("status=lost", "Choose a status"),
        ("currency=xyz", "not one of our currencies"),
        ("amount_min=5", "choose a currency"),
        ("currency=usd&amount_max=1.234", "2 decimal places"),
        ("currency=usd&amount_min=abc", "not an amount"),
        ("date_from=01/12/2026", "a date like"),
    ],
)
async def test_search_says_what_to_fix(
    signed_in: httpx.AsyncClient, query: str, message: str
) -> None:
    response = await signed_in.get(f"/console/payments?{query}")
    assert response.status_code == 422
    assert message in response.text


async def test_payment_page_shows_the_decline_the_dispute_and_the_timeline(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    failed = await seed_payment(
        console_services,
        status="failed",
        pi_id="pi_declined_2",
        charge_id="ch_declined_2",
        failure_code="card_declined",
        failure_decline_code="stolen_card",
        failure_message="Your card was declined.",
        card_brand="visa",
        card_last4="0019",
    )
    async with console_services.db.transaction() as session:
        await _dispute(session, failed.id, "needs_response")
        session.add(
            _event(
                "evt_timeline_1",
                type="payment_intent.payment_failed",
                object_id="pi_declined_2",
                status="applied",
                attempts=1,
            )
        )
        await notifications.tell(
            session, type="payment.failed", payment_id=failed.id, data={"id": failed.id}
        )
    page = (await signed_in.get(f"/console/payments/{failed.id}")).text
    assert "stolen_card" in page
    assert "Your card was declined." in page
    assert "needs response" in page
    assert "visa ···· 0019" in page
    assert "payment_intent.payment_failed" in page
    assert "evt_timeline_1" in page
    assert "payment.failed" in page
    assert "waiting for delivery" in page
    assert "Only a succeeded payment can be refunded" in page
    assert (await signed_in.get("/console/payments/pay_nothere")).status_code == 404
    missing = await signed_in.get(f"/console/payments/pay_{'0' * 26}")
    assert missing.status_code == 404
    assert "<h1>" in missing.text


async def test_receipt_pdf_and_resend(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    payment_id = await seed_succeeded(console_services, amount=4200, currency="usd")
    await run_receipt_jobs(console_services, "receipt.issue")
    pdf = await signed_in.get(f"/console/payments/{payment_id}/receipt.pdf")
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")
    csrf = csrf_of((await signed_in.get(f"/console/payments/{payment_id}")).text)
    bad = await signed_in.post(
        f"/console/payments/{payment_id}/receipt/email", data={"csrf": csrf, "email": "nope"}
    )
    assert bad.status_code == 400
    assert "not an e-mail address" in bad.text
    sent = await signed_in.post(
        f"/console/payments/{payment_id}/receipt/email",
        data={"csrf": csrf, "email": "accounts@shop.example"},
    )
    assert sent.status_code == 303
    assert "on its way" in (await signed_in.get(sent.headers["location"])).text
    async with console_services.db.read() as session:
        jobs = (await session.scalars(select(Job).where(Job.kind == "receipt.email"))).all()
    assert [j.payload.get("email") for j in jobs if "resend" in j.payload] == [
        "accounts@shop.example"
    ]
    [record] = await _audit(console_services, "receipt.email_requested")
    assert record.details["channel"] == "console"
    assert record.details["email"] == "accounts@shop.example"


async def test_parked_event_is_replayed_and_audited(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    payment = await seed_payment(console_services, status="processing", pi_id="pi_parked_1")
    async with console_services.db.transaction() as session:
        session.add(
            _event(
                "evt_parked_1",
                type="payment_intent.succeeded",
                object_id="pi_parked_1",
                status="parked",
                attempts=15,
                last_error="RuntimeError: boom\nmore",
            )
        )
    page = (await signed_in.get("/console/events")).text
    assert "evt_parked_1" in page
    assert payment.id in page
    assert "RuntimeError: boom" in page
    csrf = csrf_of(page)
    done = await signed_in.post("/console/events/evt_parked_1/replay", data={"csrf": csrf})
    assert done.status_code == 303
    assert "queued to be applied again" in (await signed_in.get(done.headers["location"])).text
    async with console_services.db.read() as session:
        row = await session.get(WebhookEvent, "evt_parked_1")
        jobs = (await session.scalars(select(Job).where(Job.unique_key == "evt_parked_1"))).all()
    assert row is not None
    assert row.status == "received"
    assert [j.status for j in jobs] == ["ready"]
    [record] = await _audit(console_services, "event.replayed")
    assert (record.actor, record.details["channel"]) == ("ops_1", "console")
    missing = await signed_in.post("/console/events/evt_nothere/replay", data={"csrf": csrf})
    assert missing.status_code == 400


async def test_dead_job_is_retried_and_audited(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    payment_id = await seed_succeeded(console_services)
    async with console_services.db.transaction() as session:
        await session.execute(
            update(Job).values(status="dead", attempts=20, last_error="  OSError: gone\nmore")
        )
        job_id = (await session.scalars(select(Job.id))).one()
    page = (await signed_in.get("/console/jobs")).text
    assert "receipt.issue" in page
    assert payment_id in page
    assert "OSError: gone" in page
    csrf = csrf_of(page)
    done = await signed_in.post(f"/console/jobs/{job_id}/retry", data={"csrf": csrf})
    assert done.headers["location"] == "/console/jobs?notice=retried"
    again = await signed_in.post(f"/console/jobs/{job_id}/retry", data={"csrf": csrf})
    assert again.headers["location"] == "/console/jobs?notice=nothing"
    async with console_services.db.read() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    assert (job.status, job.attempts) == ("ready", 0)
    [record] = await _audit(console_services, "job.retried")
    assert record.details == {"job_id": job_id, "channel": "console"}


async def test_failed_notification_is_delivered_again(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    payment_id = await seed_succeeded(console_services, enqueue=False)
    async with console_services.db.transaction() as session:
        sent = await notifications.tell(
            session, type="payment.succeeded", payment_id=payment_id, data={"id": payment_id}
        )
        await session.execute(update(Notification).values(attempts=3))
        await session.execute(update(Job).values(status="dead"))
        delivered = Notification(
            id=new_id("ntf"),
            type="payment.succeeded",
            payment_id=payment_id,
            data={},
            created_at=utcnow(),
            delivered_at=utcnow(),
            attempts=1,
        )
        session.add(delivered)
    page = (await signed_in.get("/console/notifications")).text
    assert sent.id in page
    assert delivered.id not in page
    jobs_page = (await signed_in.get("/console/jobs")).text
    assert payment_id in jobs_page  # the dead delivery job links to its payment
    csrf = csrf_of(page)
    done = await signed_in.post(f"/console/notifications/{sent.id}/redeliver", data={"csrf": csrf})
    assert done.headers["location"] == "/console/notifications?notice=redelivery"
    nothing = await signed_in.post(
        f"/console/notifications/{delivered.id}/redeliver", data={"csrf": csrf}
    )
    assert nothing.headers["location"] == "/console/notifications?notice=nothing"
    async with console_services.db.read() as session:
        ready = (
            await session.scalars(
                select(Job).where(Job.kind == notifications.DELIVER, Job.status == "ready")
            )
        ).all()
    assert [j.payload for j in ready] == [{"id": sent.id}]
    [record] = await _audit(console_services, "notification.redelivery_requested")
    assert record.payment_id == payment_id


async def test_disputes_list_and_a_reconciliation_pass(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    disputed = await seed_payment(console_services, status="succeeded")
    quiet = await seed_payment(console_services, status="succeeded")
    async with console_services.db.transaction() as session:
        await _dispute(session, disputed.id, "under_review")
    page = (await signed_in.get("/console/disputes")).text
    assert disputed.id in page
    assert quiet.id not in page
    assert "under review" in page
    csrf = csrf_of(page)
    report = await signed_in.post("/console/reconcile", data={"csrf": csrf})
    assert report.status_code == 200
    assert "payments checked" in report.text
    [record] = await _audit(console_services, "reconcile.run")
    assert record.details["channel"] == "console"


async def test_approval_can_be_rejected_by_another_operator(
    console: httpx.AsyncClient, console_settings: object, console_services: Services
) -> None:
    from azora_payments.db.models import RefundApproval
    from tests.console.conftest import browser_like, operator_token

    payment_id = await seed_succeeded(console_services, amount=50_000, enqueue=False)
    async with console_services.db.transaction() as session:
        session.add(
            RefundApproval(
                id=new_id("apr"),
                payment_id=payment_id,
                amount=30_000,
                currency="usd",
                reason="fraudulent",
                status="pending",
                requested_by="ops_1",
                request_key="k" * 64,
                created_at=utcnow(),
            )
        )
    async with browser_like(console_settings, console_services) as second:  # type: ignore[arg-type]
        await sign_in(second, operator_token("ops_2"))
        page = (await second.get(f"/console/payments/{payment_id}")).text
        assert "Approve and refund" in page
        approval_id = re.search(r"/console/approvals/(apr_\w+)/reject", page)
        assert approval_id is not None
        csrf = csrf_of(page)
        rejected = await second.post(
            f"/console/approvals/{approval_id.group(1)}/reject",
            data={"csrf": csrf, "back": payment_id},
        )
        assert (
            rejected.headers["location"]
            == f"/console/payments/{payment_id}?notice=approval_rejected"
        )
        twice = await second.post(
            f"/console/approvals/{approval_id.group(1)}/reject", data={"csrf": csrf}
        )
        assert twice.status_code == 409
        unknown = await second.post("/console/approvals/apr_nothere/approve", data={"csrf": csrf})
        assert unknown.status_code == 404
    assert (
        "No refund is waiting"
        in (await sign_in(console) and await console.get("/console/approvals")).text
    )


async def test_dead_jobs_link_to_their_payment_through_the_ids_they_carry(
    signed_in: httpx.AsyncClient, console_services: Services
) -> None:
    payment_id = await seed_succeeded(console_services)
    await run_receipt_jobs(console_services, "receipt.issue")  # queues receipt.email (receipt_id)
    async with console_services.db.transaction() as session:
        await session.execute(update(Job).where(Job.kind == "receipt.email").values(status="dead"))
        await enqueue(session, kind="stripe.event.apply", payload={"event_id": "evt_unknown"})
        await enqueue(session, kind="refund.email", payload={"refund_id": "rf_unknown"})
        await session.execute(update(Job).where(Job.status == "ready").values(status="dead"))
    page = (await signed_in.get("/console/jobs")).text
    assert "receipt.email" in page
    assert f"/console/payments/{payment_id}" in page
    assert "stripe.event.apply" in page
    assert "refund.email" in page


async def test_thirty_day_figures_are_kept_a_minute_and_say_so(
    signed_in: httpx.AsyncClient, console_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azora_payments.console import reads

    await seed_succeeded(console_services, amount=1000, currency="usd", enqueue=False)
    first = (await signed_in.get("/console")).text
    assert "As of" not in first
    await seed_succeeded(console_services, amount=3000, currency="usd", enqueue=False)
    cached = (await signed_in.get("/console")).text
    day, month = cached.split("Last 30 days", 1)
    assert "$40.00" in day  # the day's figures are live
    assert "$10.00" in month
    assert "$40.00" not in month
    assert "As of" in month
    monkeypatch.setattr(reads, "LONG_WINDOW_SECONDS", 0.0)
    fresh = (await signed_in.get("/console")).text
    assert "$40.00" in fresh.split("Last 30 days", 1)[1]
