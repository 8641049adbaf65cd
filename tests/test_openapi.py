"""Issue 11, item 3: `/openapi.json` documents every answer — each success with a named model
of API.md's objects, each error as the RFC 9457 Problem under `application/problem+json` — and
the real answers of a payment's whole life (paid, 3-D Secure, declined, receipt, refund, saved
card, notifications, audit, checkout) match it, with the exact JSON the domain renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azora_payments.app import create_app
from tests.conftest import make_settings

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
OBJECTS = (
    "Payment", "OperatorPayment", "PaymentPage", "Refund", "Receipt", "PaymentMethod",
    "PaymentMethodList", "AuditRecord", "AuditPage", "Notification", "NotificationPage",
    "CheckoutSession", "Problem",
)  # fmt: skip
EXTENSIONS = {"decline_code", "retryable", "payment_id", "errors", "failure"}


def openapi(folder: Path) -> dict[str, Any]:
    """The schema of an app with every router on (checkout included); no database is opened."""
    settings = make_settings(
        f"sqlite:///{folder / 'unused.db'}",
        checkout_enabled=True,
        stripe_publishable_key="pk_test_x",
    )
    schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def test_every_answer_is_documented(tmp_path: Path) -> None:
    schema = openapi(tmp_path)
    components = schema["components"]["schemas"]
    assert set(OBJECTS) <= set(components)
    # FastAPI's own 422 shape is never what this API answers.
    assert "HTTPValidationError" not in components
    problem = components["Problem"]
    assert problem["additionalProperties"] is False
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code", "request_id"}
    assert set(problem["properties"]) >= EXTENSIONS
    for name in OBJECTS:
        assert components[name].get("additionalProperties") is False, name

    for path, item in schema["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            answers = operation["responses"]
            successes = [status for status in answers if status.startswith("2")]
            assert successes, where
            for status in successes:
                content = answers[status].get("content", {})
                if status == "204" or "application/pdf" in content:
                    continue
                documented = content["application/json"]["schema"]
                refs = [documented, *documented.get("anyOf", [])]
                assert any("$ref" in ref for ref in refs), f"{where} {status}: {documented}"
            errors = [s for s in answers if s[0] in "45" or s == "default"]
            assert "default" in errors, where
            for status in errors:
                if (path, status) == ("/readyz", "503"):
                    continue  # readiness says why in its own body, for load balancers
                assert answers[status]["content"] == {
                    "application/problem+json": {"schema": PROBLEM_REF}
                }, f"{where} {status}"
