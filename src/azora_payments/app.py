"""create_app(): routers, middleware, error handlers, offline docs, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from azora_payments import checkout as checkout_page
from azora_payments import console, telemetry
from azora_payments.api import (
    audit,
    checkout,
    methods,
    notifications,
    ops,
    payments,
    receipts,
    refunds,
    webhooks,
)
from azora_payments.api.middleware import EdgeMiddleware
from azora_payments.api.problems import install_problem_handlers
from azora_payments.api.schemas import operation_id
from azora_payments.config import Settings
from azora_payments.db.migrate import schema_is_current
from azora_payments.services import Services

DESCRIPTION = (
    "Take money with Stripe: payments, saved cards, receipts, refunds, webhooks. "
    "Errors are RFC 9457 problem+json."
)


def create_metrics_app(settings: Settings) -> FastAPI:
    """`/metrics` alone, for `serve --metrics-port`: a port that stays inside the network."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = Services(settings)
        try:
            yield
        finally:
            await app.state.services.close()

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(ops.metrics_router)
    return app


class SchemaNotCurrent(RuntimeError):
    """The database is not at the latest migration: run `azora-payments migrate`."""


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    owned = services is None
    telemetry.setup()  # traces when OTEL_EXPORTER_OTLP_ENDPOINT is set

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = services or Services(settings)
        if not await schema_is_current(svc.db.engine):
            await svc.close()
            raise SchemaNotCurrent("database schema is not current: run `azora-payments migrate`")
        app.state.services = svc
        try:
            yield
        finally:
            if owned:
                await svc.close()

    app: FastAPI = FastAPIOffline(
        title="Azora Payments",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    if services is not None:
        app.state.services = services
    install_problem_handlers(app)
    routers = (
        ops.router,
        audit.router,
        methods.router,
        payments.router,
        receipts.router,
        refunds.router,
        webhooks.router,
        notifications.router,
    )
    for router in routers:
        app.include_router(router)
    notifications.document_deliveries(app)
    webhooks.install(app)
    if settings.metrics_port is None:
        app.include_router(ops.metrics_router)
    console.install(app, settings)
    if settings.checkout_on:
        app.include_router(checkout.router)
    checkout_page.install(app, settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Idempotent-Replayed", "Retry-After"],
        )
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        trusted_proxies=settings.trusted_proxies,
        rate_limit_ip=settings.rate_limit_ip,
        webhook_max_body_bytes=settings.webhook_max_body_bytes,
        rate_limit_webhook_failures=settings.rate_limit_webhook_failures,
        server_timing=settings.server_timing_mode,
    )
    telemetry.instrument_app(app)
    return app
