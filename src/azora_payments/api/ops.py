"""Operations: liveness, readiness, Prometheus metrics (behind METRICS_TOKEN when set; on a port
of their own with `serve --metrics-port`)."""

from __future__ import annotations

import hmac
import logging
import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from azora_payments.api.deps import ServicesDep
from azora_payments.api.schemas import ANY_PROBLEM, Health, Readiness
from azora_payments.db.migrate import schema_is_current
from azora_payments.errors import Unauthenticated
from azora_payments.jobs.queue import refresh_gauges

router = APIRouter(tags=["operations"], responses=ANY_PROBLEM)
metrics_router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "Not ready (the body says why)", "model": Readiness}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    try:
        current = await schema_is_current(services.db.engine)
        database = "ok" if current else "schema_not_current"
    except Exception:
        database = "unavailable"
    redis = await services.redis_status()
    ready = database == "ok"
    body = {"status": "ok" if ready else "unavailable", "database": database, "redis": redis}
    return JSONResponse(body, status_code=200 if ready else 503)


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, services: ServicesDep) -> Response:
    expected = services.settings.metrics_token
    if expected is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthenticated("/metrics needs the metrics token.")
    try:
        # The queue's gauges come from the database, so any API process can report them.
        await refresh_gauges(services.db)
    except Exception:
        logger.warning("queue gauges not refreshed: database unavailable")
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
