"""The checkout page under /checkout/cs_…: the page a product sends its customer to, with its own
assets. The session id in the path is the customer's only credential (no token, no cookie); the
page pays through `POST /api/checkout/sessions/{id}/pay` and reads its state from here."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from azora_payments.config import Settings

__all__ = ["install"]


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the page when checkout is on (dev, or CHECKOUT_ENABLED); elsewhere it is 404."""
    if not settings.checkout_on:
        return
    from azora_payments.checkout import page

    app.include_router(page.router)
    app.mount(
        "/checkout/static", StaticFiles(directory=page.HERE / "static"), name="checkout-static"
    )
