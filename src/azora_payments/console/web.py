"""What every console page shares: the templates, the signed-in operator, forms checked for
their CSRF token, and errors drawn as pages (the API's problems are JSON; these are HTML)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from azora_payments import request_timing
from azora_payments.api.deps import ServicesDep
from azora_payments.domain import audit, money
from azora_payments.domain import console_sessions as sessions
from azora_payments.domain.console_sessions import ConsoleOperator
from azora_payments.errors import AzoraError, InternalError, StripeRejected
from azora_payments.services import Services
from azora_payments.templating import html_templates

logger = logging.getLogger(__name__)

COOKIE = "__Host-azora-console"
HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024

templates = html_templates(HERE / "templates")


def _money(amount: int | None, currency: str) -> str:
    return "—" if amount is None else money.format_amount(amount, currency)


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


templates.filters["money"] = _money
templates.filters["when"] = _when
templates.filters["iso"] = _iso


class SignInRequired(Exception):
    """No live console session: the page sends the browser to the sign-in page."""


class ConsolePageError(AzoraError):
    """A console refusal shown as a page (bad CSRF token, a form that makes no sense)."""

    status = 400
    code = "console_refused"
    title = "That did not work."


class CsrfRefused(ConsolePageError):
    status = 403
    code = "csrf_refused"
    title = "This form has expired or did not come from the console."


def page(
    request: Request,
    name: str,
    *,
    operator: ConsoleOperator | None = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    secret = request.cookies.get(COOKIE)
    html = templates.get_template(name).render(
        operator=operator,
        csrf=sessions.csrf_token(secret) if operator is not None and secret else "",
        path=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        **context,
    )
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, error: AzoraError, operator: ConsoleOperator | None) -> Response:
    response = page(
        request,
        "error.html",
        operator=operator,
        status=error.status,
        error=error,
    )
    for key, value in error.headers.items():
        response.headers[key] = value
    return response


class ConsoleRoute(APIRoute):
    """Console routes answer HTML: a missing session sends the browser to sign in, and our
    errors become pages with their status instead of problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                next_part = f"?next={target}" if request.method == "GET" else ""
                return RedirectResponse(f"/console/login{next_part}", status_code=303)
            except AzoraError as error:
                operator = getattr(request.state, "console_operator", None)
                return error_page(request, error, operator)
            except StripeRejected:
                # Not a client's error (errors.py): the page of a plain 500, as the API answers.
                operator = getattr(request.state, "console_operator", None)
                return error_page(request, InternalError(), operator)

        return console_handler


async def current_operator(request: Request, services: ServicesDep) -> ConsoleOperator:
    secret = request.cookies.get(COOKIE)
    if not secret or len(secret) > 128:
        raise SignInRequired()
    operator = await sessions.find_session(db=services.db, secret=secret)
    if operator is None:
        raise SignInRequired()
    request.state.console_operator = operator
    timing = request_timing.current()
    if timing is not None:
        # Only operators can hold a console session (sign-in refuses other roles).
        timing.operator = True
    return operator


SignedIn = Annotated[ConsoleOperator, Depends(current_operator)]


def same_origin(request: Request) -> bool:
    """A POST's Origin (browsers send one) must be this console's own; none at all is allowed
    for clients that send none, since the CSRF token and SameSite=Strict still stand."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    return parts.netloc == host and parts.scheme in ("http", "https")


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body, one value per field (the last, as browsers send one)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise ConsolePageError("The form is too large.")
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise ConsolePageError("The form could not be read.") from None
    return {key: values[-1].strip() for key, values in parsed.items()}


async def checked_form(request: Request, operator: SignedIn) -> dict[str, str]:
    """The form of a signed-in operator, refused unless it carries the session's CSRF token
    and comes from this origin."""
    form = await read_form(request)
    secret = request.cookies.get(COOKIE, "")
    if not same_origin(request) or not sessions.csrf_matches(secret, form.get("csrf")):
        raise CsrfRefused("Reload the page and try again.")
    return form


CheckedForm = Annotated[dict[str, str], Depends(checked_form)]


def actor_for(request: Request, operator: ConsoleOperator) -> audit.Actor:
    return sessions.session_actor(
        operator,
        request_id=getattr(request.state, "request_id", None),
        client_ip=getattr(request.state, "client_ip", None),
    )


@dataclass(frozen=True, slots=True)
class FormPost:
    """What every console action is given: the signed-in operator's form, checked (CSRF token,
    origin), the request and the services."""

    request: Request
    operator: ConsoleOperator
    form: dict[str, str]
    services: Services

    @property
    def actor(self) -> audit.Actor:
        """The operator as the audit log records them, with this request's id and address."""
        return actor_for(self.request, self.operator)


async def form_post(
    request: Request, operator: SignedIn, form: CheckedForm, services: ServicesDep
) -> FormPost:
    return FormPost(request, operator, form, services)


Posted = Annotated[FormPost, Depends(form_post)]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
