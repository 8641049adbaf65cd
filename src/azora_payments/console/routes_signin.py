"""Signing in and out: an operator token once by POST (or a one-time link from `dev`), then a
session cookie; customer tokens are refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jwt
from fastapi import APIRouter, Request, Response

from azora_payments.api.deps import ServicesDep
from azora_payments.auth import InvalidToken
from azora_payments.console.web import (
    COOKIE,
    ConsolePageError,
    ConsoleRoute,
    Posted,
    page,
    read_form,
    same_origin,
    see_other,
)
from azora_payments.domain import console_sessions as sessions
from azora_payments.errors import Forbidden, Unauthenticated

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
MAX_TOKEN_CHARS = 8192


def _next(target: str | None) -> str:
    # Only our own pages: an absolute or protocol-relative URL would make this an open redirect.
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"


def _token_expiry(token: str) -> datetime | None:
    """`exp` of a token already verified (PyJWT checked it), to end the session with it."""
    claims = jwt.decode(token, options={"verify_signature": False})
    exp = claims.get("exp")
    return datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None


def _signed_in(opened: sessions.OpenedSession, target: str) -> Response:
    response = see_other(target)
    seconds = int((opened.expires_at - datetime.now(UTC)).total_seconds())
    response.set_cookie(
        COOKIE,
        opened.secret,
        max_age=max(seconds, 1),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", next=_next(next), message=None)


@router.post("/login")
async def login(request: Request, services: ServicesDep) -> Response:
    form = await read_form(request)
    if not same_origin(request):
        raise ConsolePageError("Sign in from the console's own page.")
    target = _next(form.get("next"))
    try:
        return await _sign_in(request, services, form.get("token", ""), target)
    except (Unauthenticated, Forbidden) as refused:
        # The sign-in page again, saying why: the next token can be pasted at once.
        return page(
            request, "login.html", status=refused.status, next=target, message=refused.detail
        )


async def _sign_in(request: Request, services: Any, token: str, target: str) -> Response:
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("Paste an operator token (a JWT) to sign in.")
    try:
        user = await services.verifier.verify(token)
    except InvalidToken:
        raise Unauthenticated(
            "That token is not valid: it may have expired, or not be signed by our key."
        ) from None
    if not user.is_operator:
        raise Forbidden(
            "That is a customer's token. The console is for operators: sign in with a token "
            "that has the admin role."
        )
    opened = await sessions.open_session(
        db=services.db,
        operator=user,
        token_expires_at=_token_expiry(token),
        hours=services.settings.console_session_hours,
        request_id=request.state.request_id,
        client_ip=request.state.client_ip,
    )
    return _signed_in(opened, target)


@router.get("/login/link/{nonce}")
async def link_page(request: Request, nonce: str) -> Response:
    # A GET never signs in (link previews and prefetches would use the link up): a button does.
    return page(request, "link.html", nonce=nonce[:128])


@router.post("/login/link")
async def redeem_link(request: Request, services: ServicesDep) -> Response:
    form = await read_form(request)
    if not same_origin(request):
        raise ConsolePageError("Sign in from the console's own page.")
    opened = await sessions.redeem_sign_in_link(
        db=services.db,
        nonce=form.get("nonce", "")[:128],
        hours=services.settings.console_session_hours,
        request_id=request.state.request_id,
        client_ip=request.state.client_ip,
    )
    if opened is None:
        raise Unauthenticated(
            "This sign-in link was used already or has expired (links last a minute). "
            "Run `azora-payments dev` again, or sign in with a token."
        )
    return _signed_in(opened, "/console")


@router.post("/logout")
async def logout(post: Posted) -> Response:
    await sessions.close_session(
        db=post.services.db, secret=post.request.cookies[COOKIE], actor=post.actor
    )
    response = see_other("/console/login")
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
