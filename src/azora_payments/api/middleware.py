"""The ASGI edge: request ids, body limit, security headers, metrics, access log, Server-Timing,
last-resort 500.

One pure ASGI middleware rather than a stack of BaseHTTPMiddleware layers: it sees every
response, including the errors raised below it, and costs one function call per request.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from azora_payments.errors import (
    PROBLEM_JSON,
    AzoraError,
    InternalError,
    PayloadTooLarge,
    RateLimited,
)
from azora_payments.logs import log_fields, request_id_var
from azora_payments.metrics import HTTP_LATENCY, HTTP_OWN_TIME, HTTP_REQUESTS
from azora_payments.ratelimit import RateLimiter
from azora_payments.request_timing import RequestTiming
from azora_payments.request_timing import finish as finish_timing
from azora_payments.request_timing import start as start_timing
from azora_payments.telemetry import annotate

logger = logging.getLogger("azora_payments.access")

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

API_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    b"script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
)

# The console: its own styles only, no script, forms only to itself, never framed.
CONSOLE_CSP = (
    b"content-security-policy",
    b"default-src 'none'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'",
)


# Probes and scrapes are never counted against a client address.
# Probes, and Stripe's own deliveries: those come in bursts from few addresses, each is verified
# by its signature before anything is stored, and a 429 would only delay what Stripe retries.
WEBHOOK_PATH = "/api/webhooks/stripe"
IP_LIMIT_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics", WEBHOOK_PATH})
# What a webhook request that fails its checks is answered: counted against its address.
WEBHOOK_FAILURES = frozenset({400, 413})


class _BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        trusted_proxies: list[str],
        rate_limit_ip: str | None = None,
        webhook_max_body_bytes: int | None = None,
        rate_limit_webhook_failures: str | None = None,
        server_timing: Literal["off", "operators", "all"] = "off",
    ) -> None:
        self.app = app
        self.server_timing = server_timing
        self.max_body_bytes = max_body_bytes
        self.webhook_max_body_bytes = webhook_max_body_bytes or max_body_bytes
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self.rate_limit_ip = rate_limit_ip
        self.rate_limit_webhook_failures = rate_limit_webhook_failures
        self._untrusted_proxy_warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing, timing_token = start_timing()
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        annotate(request_id=request_id)
        client_ip = self.client_ip(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        scope["state"]["client_ip"] = client_ip
        # Only a client's own address may count against a per-address limit: not one of our
        # proxies (no forwarded address, or a chain we cannot read past).
        scope["state"]["countable_ip"] = (
            client_ip if client_ip and not self._is_trusted(client_ip) else None
        )
        status = 500
        response_started = False
        rejected = False  # we answered 413 ourselves while the app was reading the body

        path: str = scope["path"]
        extra_headers = [(b"x-request-id", request_id.encode()), *API_HEADERS]
        default_csp = _csp(path)
        # The console's forms need their Origin (with no-referrer, Chromium sends "null").
        console = path.startswith("/console")
        extra_headers.append((b"referrer-policy", b"same-origin" if console else b"no-referrer"))
        if console or path.startswith(("/api/", "/checkout")):
            extra_headers.append((b"cache-control", b"no-store"))

        webhook = path == WEBHOOK_PATH
        max_body = self.webhook_max_body_bytes if webhook else self.max_body_bytes
        early: AzoraError | None = None
        if webhook:
            early = await self._check_webhook_failures(scope, client_ip)
        if early is None and _content_length(scope) > max_body:
            early = PayloadTooLarge()
        if early is None:
            early = await self._check_ip_limit(scope, path, client_ip)
        if early is not None:
            await self._send_problem(send, early, [*extra_headers, default_csp])
            if webhook:
                await self._count_webhook_failure(scope, client_ip, early.status)
            self._observe(scope, early.status, timing)
            request_id_var.reset(token)
            finish_timing(timing_token)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received, rejected, response_started
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    # Answer here: whatever the app makes of the exception (FastAPI turns errors
                    # while reading a body into a 400) is dropped by `send_with_headers`.
                    if not response_started and not rejected:
                        rejected = response_started = True
                        await self._send_problem(
                            send, PayloadTooLarge(), [*extra_headers, default_csp]
                        )
                    raise _BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if rejected:
                return
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                # A page that sets its own policy (the checkout page) keeps it alone: two
                # policies would both be enforced.
                own_csp = any(k.lower() == b"content-security-policy" for k, _ in headers)
                message["headers"] = headers + extra_headers + ([] if own_csp else [default_csp])
                if self._shows_timing(timing):
                    message["headers"].append((b"server-timing", timing.server_timing()))
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception as exc:
            if not rejected:  # else: answered 413 already, the app's reaction does not matter
                status = 413 if isinstance(exc, _BodyTooLarge) else 500
                if response_started:
                    # Too late for a problem: let the server abort the connection, so that the
                    # client sees a broken response rather than a complete-looking truncated one.
                    raise
                logger.exception("unhandled error")
                await self._send_problem(send, InternalError(), [*extra_headers, default_csp])
        finally:
            if rejected:
                status = 413
            if webhook:
                await self._count_webhook_failure(scope, client_ip, status)
            self._observe(scope, status, timing)
            request_id_var.reset(token)
            finish_timing(timing_token)

    def _shows_timing(self, timing: RequestTiming) -> bool:
        # Never to everyone in production: to a card tester, Stripe's share would tell whether
        # a card reached Stripe.
        if self.server_timing == "all":
            return True
        return self.server_timing == "operators" and timing.operator

    async def _check_webhook_failures(
        self, scope: Scope, client_ip: str | None
    ) -> AzoraError | None:
        """An address whose webhook requests keep failing is refused before any signature work.
        Only failures count: Stripe's verified bursts from a few addresses are never limited."""
        limiter = _limiter(scope)
        if not self.rate_limit_webhook_failures or not client_ip or limiter is None:
            return None
        return await limiter.exhausted(self.rate_limit_webhook_failures, "webhook", client_ip)

    async def _count_webhook_failure(
        self, scope: Scope, client_ip: str | None, status: int
    ) -> None:
        limiter = _limiter(scope)
        if status not in WEBHOOK_FAILURES or not self.rate_limit_webhook_failures:
            return
        if client_ip and limiter is not None:
            await limiter.count(self.rate_limit_webhook_failures, "webhook", client_ip)

    async def _check_ip_limit(
        self, scope: Scope, path: str, client_ip: str | None
    ) -> AzoraError | None:
        """A flood from one address is refused before anything else (authentication included)."""
        limiter = _limiter(scope)
        if not self.rate_limit_ip or not client_ip or path in IP_LIMIT_EXEMPT or limiter is None:
            return None
        try:
            await limiter.check(self.rate_limit_ip, "ip", client_ip)
        except RateLimited as exc:
            return exc
        return None

    def client_ip(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if peer and not self.trusted and not self._untrusted_proxy_warned:
            self._warn_if_behind_a_proxy(scope, peer)
        if not peer or not self.trusted or not self._is_trusted(peer):
            return peer
        # Several X-Forwarded-For lines are one list, in order (RFC 9110 section 5.3).
        forwarded = ",".join(_headers(scope, b"x-forwarded-for"))
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        # Walk right to left past our own proxies; the first address they did not add is the
        # client. A hop that is not an address means the chain is garbage from there on: the
        # last proxy we trust is then all we know.
        closest = peer
        for hop in reversed(hops):
            if not _is_ip(hop):
                return closest
            if not self._is_trusted(hop):
                return hop
            closest = hop
        return closest

    def _warn_if_behind_a_proxy(self, scope: Scope, peer: str) -> None:
        """Once per process: requests forwarded by a proxy on a private network while no proxy
        is trusted mean every client has the proxy's address, and shares its limits."""
        if not _headers(scope, b"x-forwarded-for"):
            return
        try:
            private = ipaddress.ip_address(peer).is_private
        except ValueError:
            return
        if private:
            self._untrusted_proxy_warned = True
            logger.warning(
                "requests carry X-Forwarded-For from a private address but TRUSTED_PROXIES is "
                "empty: every client behind that proxy shares one address and its rate limits; "
                "set TRUSTED_PROXIES to the proxy's network",
                extra=log_fields(peer=peer),
            )

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    async def _send_problem(
        self, send: Send, error: AzoraError, extra_headers: list[tuple[bytes, bytes]]
    ) -> None:
        request_id = request_id_var.get()
        body = json.dumps(error.problem(request_id)).encode()
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *extra_headers,
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _observe(self, scope: Scope, status: int, timing: RequestTiming) -> None:
        elapsed = timing.elapsed()
        route = _route_template(scope)
        method = scope["method"]
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_LATENCY.labels(method, route).observe(elapsed)
        HTTP_OWN_TIME.labels(method, route).observe(max(0.0, elapsed - timing.stripe_seconds))
        logger.info(
            "request",
            extra=log_fields(
                method=method, route=route, status=status, ms=round(elapsed * 1000, 2)
            ),
        )


def _limiter(scope: Scope) -> RateLimiter | None:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return getattr(services, "limiter", None)


def _route_template(scope: Scope) -> str:
    # Only matched route templates become labels: raw paths would let clients grow the metrics.
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _csp(path: str) -> tuple[bytes, bytes]:
    if path.startswith("/docs"):
        return DOCS_CSP
    if path.startswith("/console") and not path.endswith(".pdf"):
        return CONSOLE_CSP
    return API_CSP


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def _header(scope: Scope, name: bytes) -> str | None:
    values = _headers(scope, name)
    return values[0] if values else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _request_id(scope: Scope) -> str:
    incoming = _header(scope, b"x-request-id")
    # fullmatch: `$` would let a trailing newline through into headers and log lines.
    if incoming and REQUEST_ID_PATTERN.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
