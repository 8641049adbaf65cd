"""The console's rules over ASGI on both databases: sign-in (operators only), the session and
its cookie, expiry, sign-out, CSRF on every form, refunds reviewed then confirmed under the
form's key, and the second operator's approval above the threshold."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from azora_payments.config import Settings
from azora_payments.db.models import AuditRecord, ConsoleSession, Refund
from azora_payments.db.types import utcnow
from azora_payments.domain import console_sessions
from azora_payments.services import Services
from tests.conftest import app_client, make_settings, make_token, unique_user
from tests.console.conftest import (
    FORM_KEY,
    browser_like,
    csrf_of,
    operator_token,
    sign_in,
)
from tests.receipts.conftest import pay


async def test_operator_signs_in_and_gets_a_strict_session_cookie(
    console: httpx.AsyncClient, console_services: Services
) -> None:
    response = await sign_in(console)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-azora-console=")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower()
    assert "domain=" not in cookie.lower()
    page = await console.get("/console")
    assert page.status_code == 200
    assert "Overview" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    async with console_services.db.read() as session:
        rows = (await session.scalars(select(ConsoleSession))).all()
        audit = (await session.scalars(select(AuditRecord))).all()
    # Only a hash of the cookie's id is stored.
    secret = console.cookies["__Host-azora-console"]
    assert [r.id_hash for r in rows] == [console_sessions._digest(secret)]
    assert secret not in {r.id_hash for r in rows}
    assert [(a.action, a.actor, a.details["channel"]) for a in audit] == [
        ("console.signed_in", "ops_1", "console")
    ]


async def test_pages_need_a_session(console: httpx.AsyncClient) -> None:
    response = await console.get("/console/payments?status=failed")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=/console/payments?status=failed"


async def test_a_customer_token_is_refused_with_a_clear_message(
    console: httpx.AsyncClient,
) -> None:
    response = await console.post("/console/login", data={"token": make_token("user_9")})
    assert response.status_code == 403
    assert "customer" in response.text
    assert "admin role" in response.text
    assert "set-cookie" not in response.headers
    bad = await console.post("/console/login", data={"token": "not-a-jwt"})
    assert bad.status_code == 401
    assert "not valid" in bad.text


async def test_session_ends_with_the_token_or_the_setting(
    console: httpx.AsyncClient, console_services: Services
) -> None:
    await sign_in(console, operator_token(lifetime=120))
    async with console_services.db.read() as session:
        row = (await session.scalars(select(ConsoleSession))).one()
    assert row.expires_at <= utcnow() + timedelta(seconds=121)
    await console.post("/console/login", data={"token": operator_token(lifetime=86400 * 3)})
    async with console_services.db.read() as session:
        longest = max(r.expires_at for r in (await session.scalars(select(ConsoleSession))).all())
    assert longest <= utcnow() + timedelta(hours=8, seconds=1)
    assert longest >= utcnow() + timedelta(hours=7, minutes=59)
    # Past its expiry a session signs nobody in, whatever the browser still holds.
    async with console_services.db.transaction() as session:
        await session.execute(update(ConsoleSession).values(expires_at=utcnow()))
    assert (await console.get("/console")).status_code == 303


async def test_sign_out_deletes_the_session(
    console: httpx.AsyncClient, console_services: Services
) -> None:
    await sign_in(console)
    secret = console.cookies["__Host-azora-console"]
    csrf = csrf_of((await console.get("/console")).text)
    out = await console.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert "max-age=0" in out.headers["set-cookie"].lower()
    async with console_services.db.read() as session:
        assert (await session.scalars(select(ConsoleSession))).all() == []
    # The old cookie, replayed, is no session any more.
    console.cookies.set("__Host-azora-console", secret)
    assert (await console.get("/console")).status_code == 303


async def test_forms_without_the_sessions_csrf_token_are_refused(
    console: httpx.AsyncClient, console_settings: Settings, console_services: Services
) -> None:
    await sign_in(console)
    missing = await console.post("/console/reconcile", data={})
    assert missing.status_code == 403
    assert "did not come from the console" in missing.text
    wrong = await console.post("/console/logout", data={"csrf": "0" * 64})
    assert wrong.status_code == 403
    # Another operator's token does not fit this session.
    async with browser_like(console_settings, console_services) as other:
        await sign_in(other, operator_token("ops_2"))
        theirs = csrf_of((await other.get("/console")).text)
    assert (await console.post("/console/logout", data={"csrf": theirs})).status_code == 403
    # The right token from another site's page is refused as well.
    mine = csrf_of((await console.get("/console")).text)
    cross = await console.post(
        "/console/logout", data={"csrf": mine}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert (await console.get("/console")).status_code == 200  # still signed in


async def test_one_time_link_signs_in_once(
    console: httpx.AsyncClient, console_services: Services
) -> None:
    from azora_payments.auth import User

    nonce = await console_sessions.create_sign_in_link(
        db=console_services.db, operator=User(id="dev_operator", email="ops@dev.example")
    )
    shown = await console.get(f"/console/login/link/{nonce}")
    assert shown.status_code == 200
    assert "set-cookie" not in shown.headers
    first = await console.post("/console/login/link", data={"nonce": nonce})
    assert first.status_code == 303
    assert "__Host-azora-console" in first.headers["set-cookie"]
    again = await console.post("/console/login/link", data={"nonce": nonce})
    assert again.status_code == 401


async def test_console_is_off_outside_dev_unless_enabled(database_url: str) -> None:
    async with app_client(make_settings(database_url)) as http:
        assert (await http.get("/console/login")).status_code == 404
    async with app_client(make_settings(database_url, AZORA_ENV="dev")) as http:
        assert (await http.get("/console/login")).status_code == 200


async def _refund_form(http: httpx.AsyncClient, payment_id: str) -> tuple[str, str]:
    html = (await http.get(f"/console/payments/{payment_id}")).text
    key = FORM_KEY.search(html)
    assert key
    return csrf_of(html), key.group(1)


async def test_refund_is_reviewed_then_made_once_under_the_forms_key(
    console: httpx.AsyncClient, console_services: Services
) -> None:
    paid = await pay(console, unique_user(), amount=5000, currency="eur")
    await sign_in(console)
    csrf, key = await _refund_form(console, paid["id"])
    form = {"csrf": csrf, "key": key, "amount": "12.50", "reason": "requested_by_customer"}
    review = await console.post(f"/console/payments/{paid['id']}/refund", data=form)
    assert review.status_code == 200
    assert "€12.50" in review.text
    assert "€37.50" in review.text
    async with console_services.db.read() as session:
        assert (await session.scalars(select(Refund))).all() == []  # reviewing changes nothing
    confirm = {"csrf": csrf, "key": key, "amount_minor": "1250", "reason": "requested_by_customer"}
    done = await console.post(f"/console/payments/{paid['id']}/refund/confirm", data=confirm)
    assert done.status_code == 201, done.text
    again = await console.post(f"/console/payments/{paid['id']}/refund/confirm", data=confirm)
    assert again.status_code == 201
    assert "had been sent already" in again.text
    async with console_services.db.read() as session:
        refunds = (await session.scalars(select(Refund))).all()
        audit = (
            await session.scalars(select(AuditRecord).where(AuditRecord.action == "refund.created"))
        ).all()
    assert [(r.amount, r.status, r.created_by) for r in refunds] == [(1250, "succeeded", "ops_1")]
    assert [(a.actor, a.details["channel"]) for a in audit] == [("ops_1", "console")]
    timeline = (await console.get(f"/console/payments/{paid['id']}")).text
    assert "amount: €12.50, reason: requested_by_customer, refund_id: rf_" in timeline
    assert "(via console)" in timeline
    too_much = {**form, "amount": "40.00"}
    refused = await console.post(f"/console/payments/{paid['id']}/refund", data=too_much)
    assert refused.status_code == 422
    assert "at most <strong>€37.50</strong>" in refused.text
    bad = await console.post(
        f"/console/payments/{paid['id']}/refund", data={**form, "amount": "1.234"}
    )
    assert bad.status_code == 400
    assert "2 decimal places" in bad.text


async def test_large_refund_waits_for_a_second_operator(
    console: httpx.AsyncClient,
    console_settings: Settings,
    console_services: Services,
) -> None:
    paid = await pay(console, unique_user(), amount=20_000, currency="usd")
    await sign_in(console)
    csrf, key = await _refund_form(console, paid["id"])
    confirm = {"csrf": csrf, "key": key, "amount_minor": "15000", "reason": "duplicate"}
    asked = await console.post(f"/console/payments/{paid['id']}/refund/confirm", data=confirm)
    assert asked.status_code == 200
    assert "Waiting for a second operator" in asked.text
    twice = await console.post(f"/console/payments/{paid['id']}/refund/confirm", data=confirm)
    assert twice.status_code == 200
    page = (await console.get("/console/approvals")).text
    approval_ids = set(re.findall(r"/console/approvals/(apr_[0-9a-z]+)/approve", page))
    assert approval_ids == set()  # the requester is offered no approve button
    async with console_services.db.read() as session:
        assert (await session.scalars(select(Refund))).all() == []
    from azora_payments.db.models import RefundApproval

    async with console_services.db.read() as session:
        approvals = (await session.scalars(select(RefundApproval))).all()
    assert len(approvals) == 1  # the same form twice is one request
    approval = approvals[0]
    own = await console.post(f"/console/approvals/{approval.id}/approve", data={"csrf": csrf})
    assert own.status_code == 403
    assert "second operator" in own.text
    async with browser_like(console_settings, console_services) as second:
        await sign_in(second, operator_token("ops_2"))
        listed = (await second.get("/console/approvals")).text
        assert f"/console/approvals/{approval.id}/approve" in listed
        their_csrf = csrf_of(listed)
        approved = await second.post(
            f"/console/approvals/{approval.id}/approve", data={"csrf": their_csrf}
        )
        assert approved.status_code == 201, approved.text
        again = await second.post(
            f"/console/approvals/{approval.id}/approve", data={"csrf": their_csrf}
        )
        assert again.status_code == 201
        assert "had been sent already" in again.text
    async with console_services.db.read() as session:
        refunds = (await session.scalars(select(Refund))).all()
        row = (await session.scalars(select(RefundApproval))).one()
        actions = [
            (a.action, a.actor)
            for a in (await session.scalars(select(AuditRecord).order_by(AuditRecord.id))).all()
            if a.action.startswith("refund.")
        ]
    assert [(r.amount, r.created_by) for r in refunds] == [(15000, "ops_2")]
    assert (row.status, row.decided_by, row.refund_id) == ("approved", "ops_2", refunds[0].id)
    assert actions == [
        ("refund.approval_requested", "ops_1"),
        ("refund.approved", "ops_2"),
        ("refund.created", "ops_2"),
        ("refund.succeeded", "stripe"),
    ]


async def test_two_stale_forms_cannot_refund_more_than_the_payment(
    console: httpx.AsyncClient, console_services: Services
) -> None:
    paid = await pay(console, unique_user(), amount=3000, currency="eur")
    await sign_in(console)
    forms = [await _refund_form(console, paid["id"]) for _ in range(2)]
    answers = []
    for csrf, key in forms:  # two tabs, each reviewed while the other had not refunded
        confirm = {"csrf": csrf, "key": key, "amount_minor": "2000", "reason": ""}
        answers.append(
            await console.post(f"/console/payments/{paid['id']}/refund/confirm", data=confirm)
        )
    assert [a.status_code for a in answers] == [201, 422]
    assert "at most <strong>€10.00</strong> can still be refunded" in answers[1].text
    async with console_services.db.read() as session:
        refunds = (await session.scalars(select(Refund))).all()
    assert [(r.amount, r.status) for r in refunds] == [(2000, "succeeded")]


async def test_a_session_opened_on_one_server_is_known_to_every_other(
    console: httpx.AsyncClient, console_settings: Settings
) -> None:
    from tests.conftest import open_services

    await sign_in(console)
    secret = console.cookies["__Host-azora-console"]
    # Another process: its own engine and services, the same database.
    async with (
        open_services(console_settings) as other_services,
        browser_like(console_settings, other_services) as other,
    ):
        other.cookies.set("__Host-azora-console", secret)
        page = await other.get("/console")
        assert page.status_code == 200
        out = await other.post("/console/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
    # Signed out there: signed out here too.
    assert (await console.get("/console")).status_code == 303
