"""Every error the app produces is RFC 9457 problem+json with a stable code, its `type` URL and
the request id of the response; request ids and security headers follow API.md."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

from azora_payments.app import create_app
from azora_payments.config import Settings
from azora_payments.errors import CardError, ServiceUnavailable
from azora_payments.services import Services
from tests.conftest import ASGI_DEFAULT_CLIENT, asgi_client, make_settings, over_asgi

LIMIT = 2048
SECRET_IN_EXCEPTION = "sk_live_" + "leakedkey0123456789"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, max_body_bytes=LIMIT)


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    amount: int
    note: str | None = None


def add_test_routes(app: FastAPI) -> None:
    @app.post("/api/_test/order")
    async def order(body: Order) -> dict[str, Any]:
        return body.model_dump()

    @app.post("/api/_test/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/api/_test/boom")
    async def boom() -> None:
        raise RuntimeError(
            f"connection to postgresql://app:hunter2@db failed {SECRET_IN_EXCEPTION}"
        )

    @app.get("/api/_test/declined")
    async def declined() -> None:
        raise CardError(
            "Your card has insufficient funds.",
            code="insufficient_funds_test",
            decline_code="insufficient_funds",
            payment_id="pay_123",
        )

    @app.get("/api/_test/unavailable")
    async def unavailable() -> None:
        raise ServiceUnavailable(retry_after=7)

    @app.get("/api/_test/http/{status}")
    async def http_exception(status: int) -> None:
        raise HTTPException(status_code=status)

    @app.get("/api/_test/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first,"
            raise RuntimeError("broke mid-stream")

        return StreamingResponse(chunks(), media_type="text/plain")


@pytest.fixture
async def http(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, services=services)
    add_test_routes(app)
    async with asgi_client(settings, services, app=app) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://docs.azora.dev/errors/{code}"
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# ---------------------------------------------------------------- routing errors


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/payments/../audit/x"])
async def test_unknown_route_is_404(http: httpx.AsyncClient, path: str) -> None:
    assert_problem(await http.get(path), 404, "not_found")


async def test_wrong_method_is_405_with_allow(
    http: httpx.AsyncClient, operator_headers: dict[str, str]
) -> None:
    body = assert_problem(
        await http.delete("/api/audit", headers=operator_headers), 405, "method_not_allowed"
    )
    assert body["title"] == "This method is not allowed here."
    response = await http.post("/healthz")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


# ---------------------------------------------------------------- bodies


async def test_body_over_the_limit_by_content_length_is_413_before_routing(
    http: httpx.AsyncClient,
) -> None:
    big = b"x" * (LIMIT + 1)
    # Not even the route (405 here) or authentication (401) is looked at.
    for path in ("/api/audit", "/api/_test/raw", "/nope"):
        response = await http.post(path, content=big)
        assert_problem(response, 413, "payload_too_large")
        assert response.headers["connection"] == "close"
    ok = await http.post("/api/_test/raw", content=b"x" * LIMIT)
    assert ok.status_code == 200
    assert ok.json() == {"bytes": LIMIT}


async def chunked(total: int, size: int = 500) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"1" * piece


@pytest.mark.parametrize("path", ["/api/_test/raw", "/api/_test/order"])
async def test_streamed_body_over_the_limit_is_413(http: httpx.AsyncClient, path: str) -> None:
    response = await http.post(
        path, content=chunked(LIMIT + 600), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert response.headers["cache-control"] == "no-store"


async def test_streamed_body_within_the_limit_is_read(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/_test/raw", content=chunked(LIMIT))
    assert response.status_code == 200
    assert response.json() == {"bytes": LIMIT}


async def test_413_is_counted_in_metrics(http: httpx.AsyncClient) -> None:
    def count() -> float:
        labels = {"method": "POST", "route": "/api/_test/raw", "status": "413"}
        return REGISTRY.get_sample_value("azora_http_requests_total", labels) or 0.0

    before = count()
    await http.post("/api/_test/raw", content=chunked(LIMIT + 1))
    assert count() == before + 1


async def test_invalid_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/_test/order", content=b'{"amount": 5', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid_json")


async def test_body_validation_names_the_dotted_field(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/_test/order", json={"amount": "5", "extra": 1})
    body = assert_problem(response, 422, "validation_error")
    errors = {e["field"]: e["message"] for e in body["errors"]}
    assert set(errors) == {"amount", "extra"}
    assert errors["extra"] == "is not a known field"
    missing = await http.post("/api/_test/order", json={})
    assert [e["field"] for e in assert_problem(missing, 422, "validation_error")["errors"]] == [
        "amount"
    ]


# ---------------------------------------------------------------- query parameters


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("cursor=" + "c" * 600, "cursor"),
    ],
)
async def test_bad_query_parameter_is_422_naming_it(
    http: httpx.AsyncClient, operator_headers: dict[str, str], query: str, field: str
) -> None:
    response = await http.get(f"/api/audit?{query}", headers=operator_headers)
    body = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in body["errors"]] == [field]
    assert all(e["message"] for e in body["errors"])


@pytest.mark.parametrize("cursor", ["garbage", "eyJrIjoxfQ", "WyJrMSIsIm5vdyIsMV0", "%00"])
async def test_foreign_cursor_is_400(
    http: httpx.AsyncClient, operator_headers: dict[str, str], cursor: str
) -> None:
    response = await http.get(f"/api/audit?cursor={cursor}", headers=operator_headers)
    assert_problem(response, 400, "invalid_cursor")


# ---------------------------------------------------------------- errors raised by routes


async def test_unexpected_exception_is_500_without_internals(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await http.get("/api/_test/boom", headers={"X-Request-Id": "req-500"})
    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "req-500"
    assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}
    for leak in ("Traceback", "RuntimeError", "hunter2", SECRET_IN_EXCEPTION, "postgresql", "boom"):
        assert leak not in response.text
    # It is logged for us, once, with the traceback.
    records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert len(records) == 1


async def test_domain_error_carries_its_extra_members(http: httpx.AsyncClient) -> None:
    body = assert_problem(await http.get("/api/_test/declined"), 402, "insufficient_funds_test")
    assert body["decline_code"] == "insufficient_funds"
    assert body["payment_id"] == "pay_123"
    assert body["detail"] == "Your card has insufficient funds."


async def test_service_unavailable_has_retry_after(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/_test/unavailable")
    body = assert_problem(response, 503, "service_unavailable")
    assert body["retryable"] is True
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_request"), (401, "unauthenticated"), (403, "forbidden"), (418, "internal_error")],
)
async def test_framework_http_exceptions_become_problems(
    http: httpx.AsyncClient, status: int, code: str
) -> None:
    response = await http.get(f"/api/_test/http/{status}")
    assert_problem(response, 500 if status == 418 else status, code)


async def test_failure_after_the_response_started_aborts_the_response(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {"method": "GET", "route": "/api/_test/stream", "status": "500"}
    before = REGISTRY.get_sample_value("azora_http_requests_total", labels) or 0.0
    # The status line is out: no second response, the error goes up to the server, which drops
    # the connection (httpx's in-process transport re-raises it).
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="mid-stream"):
        await http.get("/api/_test/stream")
    assert REGISTRY.get_sample_value("azora_http_requests_total", labels) == before + 1
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert len(logged) == 1


# ---------------------------------------------------------------- request ids


ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@pytest.mark.parametrize("incoming", ["abc", "A.b-c:9_Z", "x" * 128, "0"])
async def test_valid_request_id_is_echoed(http: httpx.AsyncClient, incoming: str) -> None:
    response = await http.get("/nope", headers={"X-Request-Id": incoming})
    assert response.headers["x-request-id"] == incoming
    assert response.json()["request_id"] == incoming
    ok = await http.get("/healthz", headers={"X-Request-Id": incoming})
    assert ok.headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["x" * 129, "has space", "semi;colon", "<script>", "é"])
async def test_invalid_request_id_is_replaced(http: httpx.AsyncClient, incoming: str) -> None:
    response = await http.get("/nope", headers=[("X-Request-Id", incoming.encode("utf-8"))])
    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert ID.match(generated)
    assert response.json()["request_id"] == generated
    assert len(response.headers.get_list("x-request-id")) == 1


@pytest.mark.parametrize("incoming", [b"abc\n", b"abc\r\n", b"abc\nInjected: 1", b"\nabc"])
async def test_request_id_must_match_whole(settings: Settings, incoming: bytes) -> None:
    # `$` also matches before a trailing newline; a log line or header must not get one. httpx
    # refuses to send such a header, so the ASGI message is built by hand.
    from azora_payments.api.middleware import EdgeMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    edge = EdgeMiddleware(app, max_body_bytes=LIMIT, trusted_proxies=[])
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/healthz",
        "headers": [(b"x-request-id", incoming)],
        "client": ("203.0.113.7", 1),
    }
    await edge(scope, receive, send)
    [request_id] = [v for k, v in sent[0]["headers"] if k == b"x-request-id"]
    assert request_id != incoming
    assert re.fullmatch(rb"[0-9a-f]{32}", request_id)


async def test_generated_request_ids_differ(http: httpx.AsyncClient) -> None:
    ids = {(await http.get("/healthz")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(ID.match(i) for i in ids)


# ---------------------------------------------------------------- security headers


async def test_security_headers(http: httpx.AsyncClient, user_headers: dict[str, str]) -> None:
    for response in (
        await http.get("/api/audit", headers=user_headers),
        await http.get("/api/audit"),
        await http.get("/healthz"),
        await http.post("/api/_test/raw", content=b"x" * (LIMIT + 1)),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
    api = await http.get("/api/audit", headers=user_headers)
    assert api.headers["cache-control"] == "no-store"
    assert "no-store" not in (await http.get("/healthz")).headers.get("cache-control", "")
    docs = await http.get("/docs")
    assert docs.headers["content-security-policy"].startswith("default-src 'self'")
    assert docs.headers["x-frame-options"] == "DENY"


async def test_lifespan_refuses_an_unmigrated_database(tmp_path: Any) -> None:
    from azora_payments.app import SchemaNotCurrent

    settings = make_settings(f"sqlite:///{tmp_path / 'empty.db'}")
    app = create_app(settings)
    with pytest.raises(SchemaNotCurrent):
        async with app.router.lifespan_context(app):
            pass


async def test_lifespan_builds_and_closes_its_services(database_url: str) -> None:
    settings = make_settings(database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        assert isinstance(services, Services)
        async with over_asgi(app, client_addr=ASGI_DEFAULT_CLIENT, base_url="http://t") as client:
            assert (await client.get("/readyz")).json()["database"] == "ok"


async def test_lifespan_with_given_services_leaves_them_open(
    settings: Settings, services: Services
) -> None:
    app = create_app(settings, services=services)
    async with app.router.lifespan_context(app):
        assert app.state.services is services
    # Still usable: the caller owns them.
    assert await services.redis_status() == "not_configured"
    async with services.db.transaction() as session:
        assert session.is_active


async def test_cors_when_configured(database_url: str) -> None:
    from tests.conftest import app_client

    settings = make_settings(database_url, cors_origins="https://shop.example")
    async with app_client(settings) as http:
        preflight = await http.options(
            "/api/audit",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        assert preflight.headers["x-request-id"]
        other = await http.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_readiness_ignores_redis_but_not_the_database(database_url: str) -> None:
    from tests.conftest import app_client, free_port

    dead_redis = make_settings(database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with app_client(dead_redis) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "database": "ok", "redis": "unavailable"}
    dead_db = make_settings(f"postgresql://app@127.0.0.1:{free_port()}/nope")
    async with app_client(dead_db) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "unavailable"
        assert (await http.get("/healthz")).status_code == 200


async def test_readiness_reports_an_old_schema(tmp_path: Any) -> None:
    from tests.conftest import app_client

    settings = make_settings(f"sqlite:///{tmp_path / 'empty.db'}")
    async with app_client(settings) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "schema_not_current"


def test_error_tree_renders_consistently() -> None:
    from azora_payments import errors

    def subclasses(cls: type[errors.AzoraError]) -> list[type[errors.AzoraError]]:
        out = [cls]
        for sub in cls.__subclasses__():
            out += subclasses(sub)
        return out

    tree = [c for c in subclasses(errors.AzoraError) if c.__module__ == errors.__name__]
    assert len(tree) >= 25
    for cls in tree:
        # A subclass narrows the condition, never the status.
        for base in cls.__mro__[1:]:
            if isinstance(base, type) and issubclass(base, errors.AzoraError):
                assert cls.status == base.status or base is errors.AzoraError, cls
        assert cls.__name__ in (errors.__doc__ or ""), cls
        assert cls.code in (errors.__doc__ or "") or cls is errors.AzoraError, cls
    error = errors.ValidationFailed(title="Custom title.")
    body = error.problem("r1")
    assert body["title"] == "Custom title."
    assert body["detail"] == "Custom title."
    assert "errors" not in body
    assert errors.RateLimited(0).headers == {"Retry-After": "1"}
