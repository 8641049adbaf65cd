"""JSON logs: scrubbed of e-mails, card numbers, tokens and secrets; carrying the request id;
and a real request leaves neither its token nor its e-mail in any log line."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Request

from azora_payments.app import create_app
from azora_payments.logs import JsonFormatter, configure_logging, log_fields, request_id_var, scrub
from azora_payments.services import Services
from tests.conftest import JWT_SECRET, asgi_client, bearer, make_token


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


JWT = make_token("user_1", email="buyer@shop.example", secret=JWT_SECRET)


@pytest.mark.parametrize(
    ("text", "secret", "replacement"),
    [
        ("mail to buyer+tag@shop.example now", "buyer+tag@shop.example", "[email]"),
        ("card 4242424242424242 declined", "4242424242424242", "[card]"),
        ("card 4242 4242 4242 4242 declined", "4242 4242 4242 4242", "[card]"),
        ("amex 3782-822463-10005", "3782-822463-10005", "[card]"),
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl", "Bearer [token]"),
        ("authorization: bearer opaque~token+/=", "opaque~token+/=", "Bearer [token]"),
        (f"token={JWT}", JWT.split(".")[1], "[jwt]"),
        ("key sk_live_51HxYzAbCdEf0123", "sk_live_51HxYzAbCdEf0123", "[secret]"),
        ("key sk_test_abc123", "sk_test_abc123", "[secret]"),
        ("key rk_live_abc123", "rk_live_abc123", "[secret]"),
        ("whsec_0123456789abcdef verified", "whsec_0123456789abcdef", "[secret]"),
        ("pi_3Nx_secret_AbC123 leaked", "pi_3Nx_secret_AbC123", "[secret]"),
        ("smtp://mailer:hunter2@localhost:587", "hunter2", "smtp://mailer:[redacted]@"),
        ("smtps://mailer:p!ss#w0rd@mail.example.com", "p!ss#w0rd", "[redacted]@"),
        ("postgresql://app:s3cr3t/x@db:5432/pay", "s3cr3t/x", "postgresql://app:[redacted]@"),
        ("redis://:hunter2@cache:6379/0", "hunter2", "redis://:[redacted]@"),
        ("login password=hunter2&user=x", "hunter2", "password=[redacted]"),
        ("cvc=123 cvv=456", "123", "cvc=[redacted]"),
    ],
)
def test_scrub(text: str, secret: str, replacement: str) -> None:
    cleaned = scrub(text)
    assert secret not in cleaned
    assert replacement in cleaned


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "payment pay_01jb3k succeeded: 2000 usd for user_1 (req abc-123) at 12:30"
    assert scrub(text) == text


def format_record(
    msg: str, *args: Any, exc: BaseException | None = None, **fields: Any
) -> dict[str, Any]:
    record = logging.LogRecord("azora_payments.test", logging.WARNING, __file__, 1, msg, args, None)
    if fields:
        record.fields = fields
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_formatter_writes_one_json_object() -> None:
    entry = format_record("charged %s for %d", "buyer@shop.example", 2000)
    assert entry["msg"] == "charged [email] for 2000"
    assert entry["level"] == "warning"
    assert entry["logger"] == "azora_payments.test"
    assert entry["ts"].endswith("Z")
    assert "request_id" not in entry


def test_formatter_carries_the_request_id() -> None:
    token = request_id_var.set("req-77")
    try:
        assert format_record("hello")["request_id"] == "req-77"
    finally:
        request_id_var.reset(token)
    assert "request_id" not in format_record("hello")


def test_formatter_scrubs_fields_at_any_depth() -> None:
    entry = format_record(
        "event",
        payment_id="pay_1",
        amount=2000,
        ok=True,
        note=None,
        email="buyer@shop.example",
        details={"receipt_email": "buyer@shop.example", "items": ["4242424242424242", 3]},
        smtp_password="hunter2",
        headers={"Authorization": "Bearer abc"},
        obj=ValueError("for buyer@shop.example"),
    )
    assert entry["payment_id"] == "pay_1"
    assert entry["amount"] == 2000
    assert entry["ok"] is True
    assert entry["note"] is None
    assert entry["email"] == "[email]"
    assert entry["details"] == {"receipt_email": "[email]", "items": ["[card]", 3]}
    assert entry["smtp_password"] == "[redacted]"
    assert entry["headers"] == {"Authorization": "[redacted]"}
    assert entry["obj"] == "for [email]"


def test_formatter_scrubs_tracebacks() -> None:
    try:
        raise RuntimeError(f"declined for buyer@shop.example with {JWT}")
    except RuntimeError as exc:
        entry = format_record("failed", exc=exc)
    assert "Traceback" in entry["exc"]
    assert "buyer@shop.example" not in entry["exc"]
    assert JWT not in entry["exc"]


def test_log_fields_shape() -> None:
    assert log_fields(a=1) == {"fields": {"a": 1}}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    named = {
        name: (lg.handlers[:], lg.propagate, lg.disabled, lg.level)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "stripe")
        for lg in [logging.getLogger(name)]
    }
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, (handlers, propagate, disabled, level) in named.items():
        lg = logging.getLogger(name)
        lg.handlers[:], lg.propagate, lg.disabled = handlers, propagate, disabled
        lg.setLevel(level)


def test_configure_logging(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug")
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert len(root.handlers) == 1
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    assert getattr(root.handlers[0], "stream", None) is sys.stderr
    assert logging.getLogger("uvicorn.access").disabled
    assert logging.getLogger("uvicorn.error").propagate
    assert logging.getLogger("stripe").level == logging.WARNING
    logging.getLogger("azora_payments.x").info("to buyer@shop.example")
    assert json.loads(capsys.readouterr().err)["msg"] == "to [email]"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line the process writes, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_requests_leave_no_token_or_email_in_logs(
    settings: Any, services: Services, log_lines: io.StringIO
) -> None:
    email = "buyer.secret-person@shop.example"
    token = make_token("ops_1", roles=["admin"], email=email)
    app = create_app(settings, services=services)

    @app.get("/api/_test/fail")
    async def fail(request: Request) -> None:
        # The worst case: an exception message built from the request.
        raise RuntimeError(f"failed for {email} with {request.headers['authorization']}")

    async with asgi_client(settings, services, app=app, base_url="http://t") as http:
        ok = await http.get(f"/api/audit?actor={email}", headers=bearer(token))
        assert ok.status_code == 200
        assert (await http.get("/api/audit?limit=0", headers=bearer(token))).status_code == 422
        assert (await http.get("/api/audit", headers=bearer(token + "x"))).status_code == 401
        failed = await http.get("/api/_test/fail", headers=bearer(token))
        assert failed.status_code == 500
    output = log_lines.getvalue()
    lines = output.splitlines()
    # The requests were logged (with their routes), and the failure with its traceback...
    entries = [json.loads(line) for line in lines]
    assert [e["route"] for e in entries if e.get("msg") == "request"] == [
        "/api/audit",
        "/api/audit",
        "/api/audit",
        "/api/_test/fail",
    ]
    assert any("RuntimeError" in e.get("exc", "") for e in entries)
    # ...and none of the lines holds the token, any part of it, or the e-mail.
    for secret in (token, *token.split("."), email, "buyer.secret-person"):
        assert secret not in output
