"""Payments in the console: search, one payment's page, its receipt, and refunds (reviewed,
confirmed, and above the threshold approved by a second operator)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import APIRouter, Request, Response

from azora_payments.addresses import InvalidAddress, plain_address
from azora_payments.api.deps import ServicesDep
from azora_payments.api.refunds import REFUND_PATH
from azora_payments.console import forms, reads
from azora_payments.console.web import (
    ConsolePageError,
    ConsoleRoute,
    FormPost,
    Posted,
    SignedIn,
    page,
    see_other,
)
from azora_payments.domain import receipts, refund_approvals, refund_flow
from azora_payments.domain.flow_outcomes import Answer
from azora_payments.errors import PaymentNotFound

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

REASONS = (
    ("requested_by_customer", "Requested by the customer"),
    ("duplicate", "Duplicate payment"),
    ("fraudulent", "Fraudulent"),
)
NOTICES = {
    "receipt_sent": "The receipt is on its way: it was queued for e-mailing.",
    "approval_rejected": "The refund request was rejected.",
}


def new_form_key() -> str:
    """A refund form's idempotency key, made when the form is drawn: the same form sent twice
    (a double click, the back button) is the same refund."""
    return "console:" + secrets.token_urlsafe(18)


def _search_from(request: Request) -> forms.Search:
    params = request.query_params

    def value(name: str) -> str:
        return params.get(name, "").strip()[:100]

    return forms.Search(
        q=value("q"),
        status=value("status"),
        currency=value("currency"),
        amount_min=value("amount_min"),
        amount_max=value("amount_max"),
        date_from=value("date_from"),
        date_to=value("date_to"),
    )


@router.get("/payments")
async def payments(request: Request, operator: SignedIn, services: ServicesDep) -> Response:
    search = _search_from(request)
    if search.exact_id is not None:
        return see_other(f"/console/payments/{search.exact_id}")
    where = search.history_filter(services.settings.currencies)
    found = None
    if where is not None:
        cursor = request.query_params.get("cursor") or None
        found = await reads.payment_page(db=services.db, where=where, cursor=cursor)
    return page(
        request,
        "payments.html",
        operator=operator,
        search=search,
        found=found,
        statuses=forms.STATUSES,
        currencies=services.settings.currencies,
        status=422 if search.errors else 200,
    )


async def _detail(services: Any, payment_id: str) -> reads.PaymentDetail:
    detail = None
    if forms.PAY_ID.match(payment_id):
        detail = await reads.payment_detail(db=services.db, payment_id=payment_id)
    if detail is None:
        raise PaymentNotFound()
    return detail


@router.get("/payments/{payment_id}")
async def payment(
    request: Request, payment_id: str, operator: SignedIn, services: ServicesDep
) -> Response:
    detail = await _detail(services, payment_id)
    return page(
        request,
        "payment.html",
        operator=operator,
        d=detail,
        p=detail.payment,
        form_key=new_form_key(),
        reasons=REASONS,
        threshold=services.settings.console_refund_approval_above,
        notice=NOTICES.get(request.query_params.get("notice", "")),
        default_amount=forms.major(detail.refundable, detail.payment.currency),
    )


@router.get("/payments/{payment_id}/receipt.pdf")
async def receipt_pdf(payment_id: str, operator: SignedIn, services: ServicesDep) -> Response:
    # The stored version the customer holds, as the API serves it.
    doc = await receipts.get_pdf(
        db=services.db,
        storage=services.storage,
        user=operator.user,
        payment_id=(await _detail(services, payment_id)).payment.id,
        settings=services.settings,
    )
    return Response(
        doc.data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{doc.number}.pdf"'},
    )


@router.post("/payments/{payment_id}/receipt/email")
async def resend_receipt(payment_id: str, post: Posted) -> Response:
    services = post.services
    detail = await _detail(services, payment_id)
    to = post.form.get("email") or None
    if to is not None:
        try:
            to = plain_address(to)
        except InvalidAddress:
            raise ConsolePageError(
                f"“{to}” is not an e-mail address (one plain address, no name or list)."
            ) from None
    settings = services.settings
    await receipts.request_email(
        db=services.db,
        limits=receipts.ResendLimits(
            per_payment=settings.rate_limit_receipt_email,
            per_user=settings.rate_limit_receipt_email_user,
        ),
        user=post.operator.user,
        actor=post.actor,
        payment_id=detail.payment.id,
        email=to,
    )
    return see_other(f"/console/payments/{detail.payment.id}?notice=receipt_sent")


def _reason(form: dict[str, str]) -> str | None:
    reason = form.get("reason") or None
    if reason not in {None, *(code for code, _ in REASONS)}:
        raise ConsolePageError("Choose a reason from the list.")
    return reason


def _refund_request(detail: reads.PaymentDetail, form: dict[str, str]) -> refund_flow.RefundRequest:
    reason = _reason(form)
    text = form.get("amount", "")
    currency = detail.payment.currency
    try:
        amount = forms.parse_amount(text, currency) if text else detail.refundable
    except forms.FormError as exc:
        raise ConsolePageError(f"Amount: {exc}.") from None
    if amount < 1:
        raise ConsolePageError("Nothing is left to refund on this payment.")
    return refund_flow.RefundRequest(payment_id=detail.payment.id, amount=amount, reason=reason)


def _form_key(form: dict[str, str]) -> str:
    key = form.get("key", "")
    if not key.startswith("console:") or not 9 <= len(key) <= 64:
        raise ConsolePageError("The form has no refund key: open the payment again.")
    return key


@router.post("/payments/{payment_id}/refund")
async def review_refund(payment_id: str, post: Posted) -> Response:
    """Step one: what will be refunded and what remains; nothing changes yet."""
    form = post.form
    detail = await _detail(post.services, payment_id)
    refund = _refund_request(detail, form)
    assert refund.amount is not None
    too_much = refund.amount > detail.refundable
    threshold = post.services.settings.console_refund_approval_above
    return page(
        post.request,
        "refund_review.html",
        operator=post.operator,
        status=422 if too_much else 200,
        d=detail,
        p=detail.payment,
        refund=refund,
        too_much=too_much,
        key=_form_key(form),
        reason_label=dict(REASONS).get(refund.reason or "", "None given"),
        needs_approval=refund_approvals.needs_approval(refund.amount, threshold),
    )


@router.post("/payments/{payment_id}/refund/confirm")
async def confirm_refund(payment_id: str, post: Posted) -> Response:
    """Step two: the refund through the API's idempotent flow, under the form's key; or, above
    the threshold, a request for a second operator's approval."""
    services, form = post.services, post.form
    detail = await _detail(services, payment_id)
    try:
        amount = int(form.get("amount_minor", ""))
    except ValueError:
        raise ConsolePageError(
            "The confirmation form is incomplete: open the payment again."
        ) from None
    if amount < 1:
        raise ConsolePageError("The amount to refund must be positive.")
    refund = refund_flow.RefundRequest(
        payment_id=detail.payment.id, amount=amount, reason=_reason(form)
    )
    key = _form_key(form)
    if refund_approvals.needs_approval(amount, services.settings.console_refund_approval_above):
        async with services.db.transaction() as session:
            approval = await refund_approvals.request_approval(
                session, request=refund, actor=post.actor, key=key
            )
        return page(
            post.request,
            "approval_requested.html",
            operator=post.operator,
            p=detail.payment,
            a=approval,
        )
    answer = await refund_flow.refund(
        keys=services.idempotency,
        stripe=services.stripe,
        operator=post.operator.user,
        actor=post.actor,
        request=refund,
        key=key,
        path=REFUND_PATH,
        fingerprint=refund_approvals.refund_fingerprint(refund, path=REFUND_PATH),
    )
    return await _refund_result(post, detail.payment.id, answer)


async def _refund_result(post: FormPost, payment_id: str, answer: Answer) -> Response:
    body: dict[str, Any] = json.loads(answer.stored.body)
    # Read after the refund: what remains now (the domain's own message counts minor units).
    detail = await _detail(post.services, payment_id)
    return page(
        post.request,
        "refund_result.html",
        operator=post.operator,
        status=answer.stored.status,
        p=detail.payment,
        ok=answer.stored.status == 201,
        body=body,
        refundable=detail.refundable,
        replayed=answer.replayed,
    )


@router.post("/approvals/{approval_id}/approve")
async def approve(approval_id: str, post: Posted) -> Response:
    answer = await refund_approvals.approve(
        keys=post.services.idempotency,
        stripe=post.services.stripe,
        approval_id=approval_id[:40],
        approver=post.operator.user,
        actor=post.actor,
        path=REFUND_PATH,
    )
    body = json.loads(answer.stored.body)
    return await _refund_result(post, str(body.get("payment_id")), answer)


@router.post("/approvals/{approval_id}/reject")
async def reject(approval_id: str, post: Posted) -> Response:
    async with post.services.db.transaction() as session:
        await refund_approvals.reject(session, approval_id=approval_id[:40], actor=post.actor)
    target = post.form.get("back", "")
    if not forms.PAY_ID.match(target):
        return see_other("/console/approvals?notice=approval_rejected")
    return see_other(f"/console/payments/{target}?notice=approval_rejected")
