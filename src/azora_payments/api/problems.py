"""Every error the app can produce, rendered as RFC 9457 problem+json."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from azora_payments.api.schemas import install_schema_components
from azora_payments.errors import (
    PROBLEM_JSON,
    AzoraError,
    BadRequest,
    Forbidden,
    InternalError,
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StripeRejected,
    Unauthenticated,
    ValidationFailed,
)
from azora_payments.logs import request_id_var

logger = logging.getLogger(__name__)


def problem_response(error: AzoraError) -> JSONResponse:
    request_id = request_id_var.get()
    return JSONResponse(
        error.problem(request_id),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers,
    )


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic's error list as `{"field": "metadata.order_id", "message": …}`."""
    out = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        message = str(err.get("msg", "is not valid"))
        if err.get("type") == "extra_forbidden":
            message = "is not a known field"
        out.append({"field": ".".join(loc) or "body", "message": message})
    return out


def validation_problem(errors: Sequence[Any]) -> AzoraError:
    if any(err.get("type") == "json_invalid" for err in errors):
        return InvalidJson()
    return ValidationFailed("Some fields are not valid.", errors=field_errors(errors))


_STARLETTE_ERRORS: dict[int, type[AzoraError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    # Through FastAPI's flattened view: included routers hide their routes behind one entry.
    for route in iter_route_contexts(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    install_schema_components(app)

    @app.exception_handler(AzoraError)
    async def _azora(_: Request, exc: AzoraError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(StripeRejected)
    async def _rejected(_: Request, exc: StripeRejected) -> JSONResponse:
        # A refusal the domain did not expect is our bug: the client learns nothing of Stripe.
        logger.error("stripe rejected a request: %s (param %s)", exc.stripe_code, exc.param)
        return problem_response(InternalError())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_class = _STARLETTE_ERRORS.get(exc.status_code)
        error = error_class() if error_class else InternalError()
        if exc.status_code == 405:
            error.headers["Allow"] = allowed_methods(request)
        return problem_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error: %s", type(exc).__name__)
        return problem_response(InternalError())
