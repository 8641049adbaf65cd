"""Stripe emulator for development and tests: localstripe plus the fixes real Stripe needs.

localstripe (GPL-3.0, a dev/test dependency only) is imported inside this package and nowhere
else in ``azora_payments``; importing this module does not import it (only :func:`build_app`
and the CLI do). HTTP-level behaviour lives here, resource-level patches in
``localstripe_patches/``.

Run it::

    python -m azora_payments.devstack.emulator --host 127.0.0.1 --port 0 \\
        [--webhook-url URL --webhook-secret SECRET] [--webhook-delay 1.0]

It prints one line, ``emulator listening on http://127.0.0.1:<port>``, once it accepts
connections, and stops cleanly on SIGTERM/SIGINT. :class:`EmulatorProcess` runs it as a
subprocess; :func:`configure_webhook` re-points its webhook.

Gaps in localstripe 1.15.10 and how they are filled
---------------------------------------------------

===  ===================================================  ======================================
gap  localstripe                                          emulator
===  ===================================================  ======================================
a    pickles the whole store to /tmp/localstripe.pickle   ``Store.dump_to_disk`` and
     on every write (slow, shared between processes)      ``try_load_from_disk`` are no-ops
b    ignores ``Idempotency-Key``                          middleware: same key + same method,
                                                          path and params replays the first
                                                          answer (``Idempotent-Replayed: true``);
                                                          other params -> 400
                                                          ``idempotency_error``; concurrent use
                                                          -> 409; keys scoped per
                                                          ``Authorization``; in memory
c    400 on PaymentIntent ``description``,                accepted, validated and stored
     ``receipt_email``, ``setup_future_usage``,           (``description``, ``receipt_email``,
     ``automatic_payment_methods``, ``return_url``, …     ``setup_future_usage``,
     and on refund ``reason``                             ``automatic_payment_methods``,
                                                          ``payment_method_types``;
                                                          ``Refund.reason``); ``pm_card_*`` is
                                                          resolved to a concrete ``pm_…``
d    ``POST /v1/payment_intents/{id}/confirm`` with       confirm takes ``payment_method``
     ``payment_method`` answers 500                       (also after a decline or a failed
                                                          3-D Secure), ``return_url``, …;
                                                          wrong state -> 400
                                                          ``payment_intent_unexpected_state``
e    declines carry ``type: invalid_request_error``,      402 ``card_error`` with ``code``,
     no ``decline_code``/``payment_intent``; 0002 and     ``decline_code``, ``message``,
     the other decline cards fail at *attach*             ``charge``, ``payment_method`` and the
                                                          full ``payment_intent``
                                                          (``requires_payment_method`` +
                                                          ``last_payment_error``); decline
                                                          cards attach fine and fail when
                                                          charged: 0002/0341 generic_decline,
                                                          9995 insufficient_funds, 9987
                                                          lost_card, 9979 stolen_card, 0069
                                                          expired_card, 0127 incorrect_cvc,
                                                          0119 processing_error, 4100…0019
                                                          (``pm_card_radarBlock``) fraudulent,
                                                          6975 card_velocity_exceeded; any
                                                          reason on demand: ``POST
                                                          /_azora/declines`` (JSON
                                                          ``decline_code``, ``code``,
                                                          ``message``, ``card`` number,
                                                          ``times``), ``DELETE
                                                          /_azora/declines``; emits
                                                          ``charge.failed`` and
                                                          ``payment_intent.payment_failed``
f    3-D Secure emits nothing; cancel emits nothing       ``payment_intent.requires_action``
                                                          (``next_action`` is
                                                          ``redirect_to_url`` when a
                                                          ``return_url`` was given);
                                                          ``POST …/_authenticate`` (form:
                                                          ``client_secret``, ``success=true``)
                                                          -> ``charge.succeeded`` +
                                                          ``payment_intent.succeeded``
                                                          (``payment_failed`` on
                                                          ``success=false``); cancel takes
                                                          ``cancellation_reason`` and emits
                                                          ``payment_intent.canceled``
g    refunds: no over-refund/already-refunded/disputed    400 ``amount_too_large``,
     checks, no failing refunds, no refund events; an     ``charge_already_refunded``,
     amount-less refund refunds the full amount again     ``charge_disputed``; card 5126: the
                                                          refund succeeds, then after the
                                                          webhook delay turns ``failed``
                                                          (``failure_reason``) with
                                                          ``charge.refund.updated``,
                                                          ``refund.updated``,
                                                          ``refund.failed``; failed refunds
                                                          leave ``amount_refunded``; emits
                                                          ``refund.created``,
                                                          ``charge.refunded`` and (later)
                                                          ``refund.updated``
h    no Dispute resource                                  card 0259 succeeds, then gets a
                                                          ``dp_…`` (``needs_response``,
                                                          ``fraudulent``; charge
                                                          ``disputed: true``) with
                                                          ``charge.dispute.created``;
                                                          ``GET /v1/disputes[/{id}]``; ``POST
                                                          /v1/disputes/{id}`` with evidence
                                                          ``winning_evidence`` -> ``won``,
                                                          ``losing_evidence`` -> ``lost``
                                                          (``charge.dispute.updated`` +
                                                          ``.closed``); ``…/close`` -> lost
i    no ``charge.*``, ``refund.*``,                       emitted where Stripe emits them
     ``payment_method.*``, ``payment_intent.created/``    (also ``payment_intent.created``,
     ``requires_action/canceled`` events; events say      ``charge.captured``); every event
     ``api_version`` 2017-08-15; ``latest_charge`` is     carries the stripe SDK's
     always expanded; lists are oldest first and          ``stripe.api_version`` and
     ``GET /v1/events`` ignores order within a second     ``request``; ``latest_charge`` is an
                                                          id unless ``expand[]=latest_charge``;
                                                          lists are newest first (creation
                                                          sequence, not whole seconds), so
                                                          ``starting_after`` pages to older;
                                                          events take ``type`` (with ``*``),
                                                          ``types[]``, ``created[gt|gte|lt|
                                                          lte]``, ``limit``,
                                                          ``starting_after``
j    webhooks: fixed 1 s delay, signed with the event's   ``--webhook-delay``; signed at
     creation time, one attempt, any order                delivery time; 3 retries (0.5, 1,
                                                          2 s) on non-2xx or connection
                                                          errors; one object's events are
                                                          delivered in creation order
k    no fault injection                                   ``POST /_azora/faults`` (JSON
                                                          ``method``, ``path`` regex,
                                                          ``match`` (a regex the decoded
                                                          body must contain),
                                                          ``status`` (0 = drop the
                                                          connection, 200 = the real answer
                                                          after ``delay``), ``times``, ``delay``,
                                                          ``after``, ``code``: a 4xx refusal
                                                          with Stripe's code, e.g. a refund's
                                                          ``balance_insufficient`` or a
                                                          cancel's ``payment_intent_``
                                                          ``unexpected_state``, ``body``: the
                                                          JSON to answer); ``DELETE
                                                          /_azora/faults``; ``GET|DELETE
                                                          /_azora/requests`` (counts per
                                                          ``METHOD path``); ``DELETE
                                                          /_config/data`` also clears the
                                                          idempotency cache, faults, counts
                                                          and declines on demand
l    ``pm_card_mastercard``/``amex``/… unknown; brand     more ``pm_card_*`` test ids (with the
     always visa; no ``GET /v1/customers/{id}/            right brand and last4); customer
     payment_methods``; charges list 500s on              payment-method list; list filters
     ``payment_intent``; PI list rejects ``customer``;    (``customer``, ``payment_intent``,
     ``invoice_settings`` replaced wholesale; 404         ``charge``); ``invoice_settings``
     bodies are not Stripe's                              merged, default PM must be attached;
                                                          404 ``resource_missing`` "No such
                                                          …"; ``payment_method.attached/
                                                          detached/updated``; charges carry
                                                          ``payment_method_details``,
                                                          ``outcome``, ``disputed``
m    no ``GET /v1/payment_intents/search``                ``metadata['k']:'v'``, ``customer:``
                                                          and ``status:`` clauses joined by
                                                          ``AND``; like Stripe's index it lags
                                                          writes: ``POST /_azora/search``
                                                          ``{"lag": 60}`` hides intents
                                                          younger than that (default 0)
n    fake Stripe.js: ``createPaymentMethod`` is empty,     ``/js.stripe.com/v3/`` also has
     no ``handleNextAction``; only ``/v1/tokens``,          ``createPaymentMethod`` and
     ``/v1/sources`` and ``_authenticate`` take a           ``handleNextAction`` (a 3-D Secure
     publishable key                                      challenge: complete or fail, then
                                                          ``_authenticate``), from
                                                          ``stripe_js_extension.js``; ``POST
                                                          /v1/payment_methods`` takes a
                                                          ``pk_…`` key in the form (as Stripe.js
                                                          does)
===  ===================================================  ======================================

Not emulated: off-session ``authentication_required`` declines, ``ending_before`` paging,
Stripe's 24 h idempotency expiry, partial captures as Stripe models them (localstripe refunds
the uncaptured remainder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from types import ModuleType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import httpx
from aiohttp import web
from aiohttp.typedefs import Handler

READY_PREFIX = "emulator listening on "


# ------------------------------------------------------------------ state


@dataclass
class Fault:
    path: str
    status: int = 500
    method: str | None = None
    times: int = 1
    delay: float = 0.0
    after: bool = False
    code: str | None = None
    # The JSON answered instead of Stripe's (e.g. a card error whose parts disagree).
    body: dict[str, Any] | None = None
    # A regex the request's body must contain too: one client's call among many alike.
    match: str | None = None

    def matches(self, request: web.Request, body: str) -> bool:
        method_ok = self.method is None or self.method.upper() == request.method
        body_ok = self.match is None or re.search(self.match, body) is not None
        return method_ok and body_ok and re.search(self.path, request.path) is not None


@dataclass
class CachedResponse:
    fingerprint: tuple[str, str, Any]
    status: int
    body: bytes
    content_type: str
    request_id: str


@dataclass
class EmulatorState:
    idempotency: dict[tuple[str, str], CachedResponse | None] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)

    async def take_fault(self, request: web.Request) -> Fault | None:
        if not self.faults:
            return None
        # Percent-decoded, so a match reads as the values the client sent.
        body = unquote_plus((await request.read()).decode(errors="replace"))
        for fault in self.faults:
            if fault.matches(request, body):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self.idempotency.clear()
        self.faults.clear()
        self.requests.clear()
        _patches().SETTINGS.search_lag = 0.0
        _patches().DECLINE_RULES.clear()


STATE_KEY = web.AppKey("azora_emulator_state", EmulatorState)


def _patches() -> ModuleType:
    from azora_payments.devstack import localstripe_patches

    return localstripe_patches


def _stripe_error(status: int, type_: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message, **extra}}, status=status)


# -------------------------------------------------------------- middlewares


@web.middleware
async def outer_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids and counts; our control routes skip localstripe's auth; data reset (k)."""
    state = request.app[STATE_KEY]
    if request.path.startswith("/_azora/"):
        return await request.match_info.handler(request)
    state.requests[f"{request.method} {request.path}"] += 1
    if request.method == "DELETE" and request.path == "/_config/data":
        state.clear()
    request_id = "req_" + secrets.token_hex(7)
    token = _patches().REQUEST_CONTEXT.set((request_id, request.headers.get("Idempotency-Key")))
    try:
        response = await handler(request)
    finally:
        _patches().REQUEST_CONTEXT.reset(token)
    response.headers.setdefault("Request-Id", request_id)
    return response


STRIPE_JS = "/js.stripe.com/v3/"


@web.middleware
async def stripe_js_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gap m: localstripe's Stripe.js with our additions; payment methods made by the browser
    with a publishable key (localstripe wants a secret key there)."""
    if request.method == "GET" and request.path == STRIPE_JS:
        return web.Response(text=_stripe_js(), content_type="application/javascript")
    if (
        request.method == "POST"
        and request.path == "/v1/payment_methods"
        and "authorization" not in request.headers
    ):
        from localstripe import resources, server
        from localstripe.errors import UserError

        data = server.unflatten_data(await request.post())
        key = data.pop("key", None)
        if not (isinstance(key, str) and key.startswith("pk_")):
            return await handler(request)  # localstripe refuses it (the body is cached)
        data.pop("payment_user_agent", None)
        try:
            method = resources.PaymentMethod._api_create(**data)
        except UserError as exc:
            response: web.StreamResponse = exc.to_response()
            return response
        return web.json_response(method._export())
    return await handler(request)


_STRIPE_JS: list[str] = []


def _stripe_js() -> str:
    if not _STRIPE_JS:
        from importlib import resources

        import localstripe

        shipped = resources.files(localstripe).joinpath("localstripe-v3.js").read_text()
        ours = resources.files(__package__).joinpath("stripe_js_extension.js").read_text()
        _STRIPE_JS.append(shipped + "\n" + ours)
    return _STRIPE_JS[0]


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gap k: answers Stripe cannot be made to give on demand."""
    fault = await request.app[STATE_KEY].take_fault(request)
    if fault is None:
        return await handler(request)
    if fault.after or fault.status == 200:
        # Like Stripe, finish the work even if the client goes away during the delay: read the
        # body now (aiohttp caches it), as a lost connection makes later reads raise.
        await request.read()
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    if fault.status == 200 and not fault.after:
        return await handler(request)  # a slow Stripe: the real answer, late
    if fault.after:
        # The work is done; whatever it answered is what gets "lost".
        with contextlib.suppress(web.HTTPException):
            await handler(request)
    if fault.status == 0:
        if request.transport is not None:
            request.transport.abort()
        # Nothing can be sent any more; aiohttp discards this once it sees the closed transport.
        return web.Response(status=500)
    if fault.body is not None:
        return web.json_response(fault.body, status=fault.status)
    if fault.status >= 500:
        return _stripe_error(fault.status, "api_error", "An unknown error occurred (injected).")
    code = fault.code or ("rate_limit" if fault.status == 429 else "injected_fault")
    return _stripe_error(
        fault.status, "invalid_request_error", f"Injected refusal ({code}).", code=code
    )


def _fingerprint(request: web.Request, body: bytes) -> tuple[str, str, Any]:
    params: Any = body
    if request.content_type == "application/x-www-form-urlencoded":
        params = tuple(sorted(parse_qsl(body.decode(), keep_blank_values=True)))
    return (request.method, request.path, params)


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gap b: Stripe's Idempotency-Key semantics for POST requests."""
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or not request.path.startswith("/v1/"):
        return await handler(request)
    cache = request.app[STATE_KEY].idempotency
    scope = (request.headers.get("Authorization", ""), key)
    fingerprint = _fingerprint(request, await request.read())
    if scope in cache:
        cached = cache[scope]
        if cached is None:
            return _stripe_error(
                409,
                "idempotency_error",
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                "going through): " + key + ". Please try again later.",
            )
        if cached.fingerprint != fingerprint:
            return _stripe_error(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
            )
        replay = web.Response(
            body=cached.body, status=cached.status, content_type=cached.content_type
        )
        replay.headers["Idempotent-Replayed"] = "true"
        replay.headers["Original-Request"] = cached.request_id
        replay.headers["Idempotency-Key"] = key
        return replay
    cache[scope] = None
    try:
        response = await handler(request)
    except BaseException:
        del cache[scope]
        raise
    # Stripe saves a result once the endpoint ran (successes, declines, server errors), not
    # when the request was refused up front (validation, auth, not found).
    saved = response.status < 400 or response.status == 402 or response.status >= 500
    if saved and isinstance(response, web.Response) and isinstance(response.body, bytes):
        request_id, _ = _patches().REQUEST_CONTEXT.get()
        cache[scope] = CachedResponse(
            fingerprint,
            response.status,
            response.body,
            response.content_type,
            request_id or "",
        )
    else:
        del cache[scope]
    response.headers["Idempotency-Key"] = key
    return response


# ------------------------------------------------------------ control routes


async def add_fault(request: web.Request) -> web.Response:
    try:
        data = await request.json()
        fault = Fault(
            path=str(data["path"]),
            status=int(data.get("status", 500)),
            method=data.get("method"),
            times=int(data.get("times", 1)),
            delay=float(data.get("delay", 0.0)),
            after=bool(data.get("after", False)),
            code=str(data["code"]) if data.get("code") else None,
            body=dict(data["body"]) if data.get("body") is not None else None,
            match=str(data["match"]) if data.get("match") else None,
        )
        re.compile(fault.path)
        re.compile(fault.match or "")
    except (ValueError, KeyError, TypeError, re.error) as e:
        return _stripe_error(400, "invalid_request_error", f"Bad fault: {e!r}")
    request.app[STATE_KEY].faults.append(fault)
    return web.json_response(asdict(fault), status=201)


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response([asdict(f) for f in request.app[STATE_KEY].faults])


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return web.json_response({})


async def set_search(request: web.Request) -> web.Response:
    """Gap m: how far Stripe's search index lags behind writes (seconds)."""
    try:
        lag = float((await request.json())["lag"])
    except (ValueError, KeyError, TypeError) as e:
        return _stripe_error(400, "invalid_request_error", f"Bad search settings: {e!r}")
    _patches().SETTINGS.search_lag = max(lag, 0.0)
    return web.json_response({"lag": _patches().SETTINGS.search_lag})


async def request_counts(request: web.Request) -> web.Response:
    return web.json_response(dict(sorted(request.app[STATE_KEY].requests.items())))


async def clear_request_counts(request: web.Request) -> web.Response:
    request.app[STATE_KEY].requests.clear()
    return web.json_response({})


# ---------------------------------------------------------------- the server


def build_app(*, webhook_delay: float = 1.0) -> web.Application:
    """localstripe's aiohttp app with every gap filled (a process holds only one)."""
    patches = _patches()
    # Patches first: localstripe.server turns resource methods into routes when imported.
    patches.apply(webhook_delay=webhook_delay)
    from localstripe import server

    app: web.Application = server.app
    if STATE_KEY in app:
        return app
    app[STATE_KEY] = EmulatorState()
    for middleware in (
        stripe_js_middleware,
        idempotency_middleware,
        fault_middleware,
        outer_middleware,
    ):
        app.middlewares.insert(0, middleware)
    patches.register_routes(app)
    app.router.add_post("/_azora/faults", add_fault)
    app.router.add_get("/_azora/faults", list_faults)
    app.router.add_delete("/_azora/faults", clear_faults)
    app.router.add_post("/_azora/search", set_search)
    app.router.add_get("/_azora/requests", request_counts)
    app.router.add_delete("/_azora/requests", clear_request_counts)

    async def close_webhooks(_app: web.Application) -> None:
        await patches.shutdown()

    app.on_cleanup.append(close_webhooks)
    return app


async def serve(
    host: str,
    port: int,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_delay: float = 1.0,
) -> None:
    app = build_app(webhook_delay=webhook_delay)
    if webhook_url:
        from localstripe.webhooks import register_webhook

        register_webhook("azora", webhook_url, webhook_secret or "", None)
    # localstripe.server.start() binds to every interface; a dev tool listens where told.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Only once a SIGTERM would stop us cleanly.
        print(f"{READY_PREFIX}http://{shown}:{bound}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--webhook-url")
    parser.add_argument("--webhook-secret")
    parser.add_argument("--webhook-delay", type=float, default=1.0, help="seconds")
    args = parser.parse_args(argv)
    if bool(args.webhook_url) != bool(args.webhook_secret):
        parser.error("--webhook-url and --webhook-secret go together")
    asyncio.run(
        serve(
            args.host,
            args.port,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            webhook_delay=args.webhook_delay,
        )
    )


# ------------------------------------------------------------- client helpers


def configure_webhook(base_url: str, *, url: str, secret: str, name: str = "azora") -> None:
    """(Re-)point the emulator's webhook ``name`` at ``url``, signed with ``secret``."""
    response = httpx.post(
        f"{base_url}/_config/webhooks/{name}", data={"url": url, "secret": secret}, timeout=10
    )
    response.raise_for_status()


class EmulatorProcess:
    """Runs the emulator CLI as a subprocess; a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_delay: float = 1.0,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.webhook_delay = webhook_delay
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not running")
        return self._base_url

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "azora_payments.devstack.emulator"]
        cmd += ["--host", self.host, "--port", str(self.port)]
        cmd += ["--webhook-delay", str(self.webhook_delay)]
        if self.webhook_url:
            cmd += [
                "--webhook-url",
                self.webhook_url,
                "--webhook-secret",
                self.webhook_secret or "",
            ]
        return cmd

    def start(self) -> str:
        if self._process is not None:
            raise RuntimeError("already started")
        # Fixed argv built from our own settings, never a shell.
        process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, text=True, bufsize=1)
        self._process = process
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            # Keeps reading so the pipe never fills, whatever the server prints later.
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        self._pump = threading.Thread(target=pump, name="emulator-stdout", daemon=True)
        self._pump.start()
        deadline = time.monotonic() + self.startup_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith(READY_PREFIX):
                self._base_url = line[len(READY_PREFIX) :].strip()
                return self._base_url
        self.stop()
        raise RuntimeError(f"the emulator did not start within {self.startup_timeout} s")

    def stop(self) -> None:
        process, self._process, self._base_url = self._process, None, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # The reader thread ends at EOF; closing under it would raise in that thread.
        if self._pump is not None:
            self._pump.join(self.stop_timeout)
            self._pump = None
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
