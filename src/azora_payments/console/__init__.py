"""The operator console: server-rendered pages under /console for the people who run the money
(sign-in, overview, payments and refunds, work lists). Routes are thin: reads go through the
repositories, actions through the same domain functions as the API and the CLI."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from azora_payments.config import Settings

__all__ = ["install"]


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the console when it is on (dev, or CONSOLE_ENABLED); elsewhere /console is 404."""
    if not settings.console_on:
        return
    from azora_payments.console import routes_lists, routes_payments, routes_signin
    from azora_payments.console.web import HERE

    for module in (routes_signin, routes_lists, routes_payments):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
