"""The checkout page and what its script reads: the session's state, the customer's saved cards,
the receipt. Every path is keyed by the session id and shows that session only."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from azora_payments.api.checkout import checked_id
from azora_payments.api.deps import ServicesDep
from azora_payments.config import Settings
from azora_payments.db.types import utcnow
from azora_payments.domain import checkout, money
from azora_payments.domain.checkout_state import CheckoutStatus
from azora_payments.domain.payments import UNSETTLED
from azora_payments.errors import AzoraError, CheckoutSessionNotFound
from azora_payments.templating import html_templates

HERE = Path(__file__).parent
DEV_PUBLISHABLE_KEY = "pk_test_azora_dev_stack"

router = APIRouter(prefix="/checkout", include_in_schema=False)

templates = html_templates(HERE / "templates")
templates.filters["money"] = money.format_amount


def content_security_policy(settings: Settings) -> str:
    """Our own assets, and exactly what Stripe.js needs: its script, its frames (card fields,
    3-D Secure), its API. With the emulator, its origin instead of Stripe's."""
    if settings.stripe_uses_emulator:
        parts = urlsplit(settings.stripe_api_base)
        origin = f"{parts.scheme}://{parts.netloc}"
        script, frame, connect = origin, "'none'", origin
    else:
        script = "https://js.stripe.com https://*.js.stripe.com"
        frame = "https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com"
        connect = "https://api.stripe.com"
    return (
        f"default-src 'none'; script-src 'self' {script}; frame-src {frame}; "
        f"connect-src 'self' {connect}; style-src 'self'; img-src 'self' data:; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def _html(request: Request, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    settings: Settings = request.app.state.services.settings
    html = templates.get_template(name).render(
        merchant_name=settings.merchant_name, request_id=request.state.request_id, **context
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = content_security_policy(settings)
    return response


def _refused(request: Request, error: AzoraError, *, return_url: str | None = None) -> Response:
    return _html(request, "refused.html", status=error.status, error=error, return_url=return_url)


@router.get("/{checkout_id}", response_class=HTMLResponse)
async def checkout_page(checkout_id: str, request: Request, services: ServicesDep) -> Response:
    try:
        state = await checkout.page_state(db=services.db, checkout_id=checked_id(checkout_id))
    except CheckoutSessionNotFound as error:
        return _refused(request, error)
    session = state.checkout
    latest = state.latest
    under_way = latest is not None and latest.status in UNSETTLED
    expired = session.status == CheckoutStatus.EXPIRED or (
        session.status == CheckoutStatus.OPEN and utcnow() >= session.expires_at and not under_way
    )
    if expired:
        return _html(request, "expired.html", status=410, session=session)
    settings = services.settings
    return _html(
        request,
        "checkout.html",
        session=session,
        order_id=(session.metadata_ or {}).get("order_id"),
        state=state.status,
        stripe_js_url=settings.stripe_js_url,
        publishable_key=settings.stripe_publishable_key or DEV_PUBLISHABLE_KEY,
    )


@router.get("/{checkout_id}/state")
async def checkout_state(checkout_id: str, services: ServicesDep) -> dict[str, Any]:
    state = await checkout.page_state(db=services.db, checkout_id=checked_id(checkout_id))
    return state.view()


@router.get("/{checkout_id}/payment_methods")
async def saved_cards(checkout_id: str, services: ServicesDep) -> dict[str, Any]:
    rows = await checkout.saved_methods(db=services.db, checkout_id=checked_id(checkout_id))
    return {
        "data": [
            {
                "id": row.id,
                "brand": row.brand,
                "last4": row.last4,
                "exp_month": row.exp_month,
                "exp_year": row.exp_year,
                "is_default": row.is_default,
            }
            for row in rows
        ]
    }


@router.get("/{checkout_id}/receipt.pdf", response_class=Response)
async def receipt_pdf(checkout_id: str, services: ServicesDep) -> Response:
    doc = await checkout.receipt_pdf(
        db=services.db,
        storage=services.storage,
        checkout_id=checked_id(checkout_id),
        settings=services.settings,
    )
    return Response(
        doc.data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{doc.number}.pdf"'},
    )
