"""Issue 11, item 3: `/openapi.json` documents every answer — each success with a named model
of API.md's objects, each error as the RFC 9457 Problem under `application/problem+json` — and
the real answers of a payment's whole life (paid, 3-D Secure, declined, receipt, refund, saved
card, notifications, audit, checkout) match it, with the exact JSON the domain renders."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from azora_payments.api.schemas import NotifiedPayment, NotifiedRefund
from azora_payments.app import create_app
from azora_payments.auth import User
from azora_payments.config import Settings
from azora_payments.domain import history, notifications, receipts
from azora_payments.services import Services
from tests.conftest import (
    bearer,
    emulator_settings,
    make_settings,
    make_token,
    stack_fixtures,
    unique_user,
)
from tests.receipts.conftest import SmtpServer, run_receipt_jobs
from tests.receipts.conftest import smtp as smtp  # a fixture

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

    # What the product's backend receives at NOTIFY_URL is documented too.
    delivery = schema["webhooks"]["notification"]["post"]
    posted = delivery["requestBody"]["content"]["application/json"]["schema"]
    assert posted == {"$ref": "#/components/schemas/Notification"}
    assert [p["name"] for p in delivery["parameters"]] == ["Azora-Signature"]

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


# API.md's response headers. The routes that answer a stored answer again (API.md, Idempotency):
# their successes and the problems they store carry `Idempotent-Replayed` on a replay.
REPLAYING = {
    ("post", "/api/payments/process"),
    ("post", "/api/payments/refund"),
    ("post", "/api/checkout/sessions"),
    ("post", "/api/checkout/sessions/{checkout_id}/pay"),
}
STORED_PROBLEMS = {"402", "409", "422"}
CONTRACT_HEADERS = {"x-request-id", "retry-after", "www-authenticate", "idempotent-replayed"}


def test_response_headers_are_documented(tmp_path: Path) -> None:
    schema = openapi(tmp_path)
    seen: set[tuple[str, str]] = set()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert not [k for k in operation if k.startswith("x-")], f"{method} {path}"
            replays = (method, path) in REPLAYING
            seen |= {(method, path)} if replays else set()
            for status, answer in operation["responses"].items():
                where = f"{method.upper()} {path} {status}"
                headers = answer.get("headers", {})
                # Every response carries X-Request-Id.
                assert headers.get("X-Request-Id", {}).get("required") is True, where
                assert headers["X-Request-Id"]["schema"]["type"] == "string", where
                problem = "application/problem+json" in answer.get("content", {})
                if status in {"429", "503"} and problem:
                    assert headers.get("Retry-After", {}).get("required") is True, where
                    assert headers["Retry-After"]["schema"]["type"] == "integer", where
                elif replays and status == "409":
                    # Only the key still in progress says when to try again.
                    assert headers.get("Retry-After", {}).get("required") is False, where
                else:
                    assert "Retry-After" not in headers, where
                if status == "401":
                    assert headers.get("WWW-Authenticate", {}).get("required") is True, where
                else:
                    assert "WWW-Authenticate" not in headers, where
                if replays and (status.startswith("2") or status in STORED_PROBLEMS):
                    replayed = headers.get("Idempotent-Replayed", {})
                    assert replayed.get("required") is False, where
                    assert replayed["schema"] == {"type": "string", "enum": ["true"]}, where
                else:
                    assert "Idempotent-Replayed" not in headers, where
    assert seen == REPLAYING


# --------------------------------------------------------------- real answers match the schema


@pytest.fixture
def answer_settings(
    database_url: str, tmp_path: Path, stripe_emulator: str, smtp: SmtpServer
) -> Settings:
    return emulator_settings(
        database_url,
        tmp_path,
        stripe_emulator,
        smtp_url=smtp.url,
        receipt_from_email="receipts@shop.example",
        checkout_enabled=True,
        stripe_publishable_key="pk_test_answers",
    )


answer_services, answer_api = stack_fixtures(
    "answer_settings", services="answer_services", client="answer_api"
)


class Contract:
    """Checks each answer against the operation `/openapi.json` documents for it."""

    def __init__(self, api: httpx.AsyncClient, schema: dict[str, Any]) -> None:
        self.api = api
        self.document = schema
        self.schema = schemathesis.openapi.from_dict(schema)
        self.checked: set[tuple[str, str, int]] = set()

    async def call(
        self, method: str, path: str, template: str, status: int, **kwargs: Any
    ) -> httpx.Response:
        response = await self.api.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        self.schema[template][method].validate_response(response)
        # The API.md headers it carries are documented for it, and the required ones are there.
        answers = self.document["paths"][template][method.lower()]["responses"]
        documented = answers.get(str(status), answers.get("default", {})).get("headers", {})
        names = {name.lower() for name in documented}
        assert CONTRACT_HEADERS & set(response.headers) <= names, (template, status)
        for name, header in documented.items():
            assert name in response.headers or not header["required"], (template, status, name)
        self.checked.add((method, template, status))
        return response


def compact(value: Any) -> bytes:
    """The JSON text the domain's values make (what a replay stores, byte for byte)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def with_key(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": uuid.uuid4().hex}


async def test_real_answers_match_the_schema(
    answer_api: httpx.AsyncClient, answer_services: Services, tmp_path: Path
) -> None:
    contract = Contract(answer_api, (await answer_api.get("/openapi.json")).json())
    call = contract.call
    user = unique_user()
    customer = bearer(make_token(user, email="buyer@shop.example"))
    operator = bearer(make_token("ops_contract", roles=["admin"]))
    service = bearer(make_token("shop-backend", roles=["service"], email=None))
    process, one = "/api/payments/process", "/api/payments/{payment_id}"
    body = {"amount": 2500, "currency": "eur", "payment_method_id": "pm_card_visa",
            "description": "Café — 東京", "metadata": {"order_id": "ord_1"}}  # fmt: skip

    headers = with_key(customer)
    paid = await call("POST", process, process, 201, json=body, headers=headers)
    replay = await call("POST", process, process, 201, json=body, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == paid.content
    payment_id = paid.json()["id"]
    pending = {**body, "payment_method_id": "pm_card_threeDSecure2Required"}
    action = await call("POST", process, process, 201, json=pending, headers=with_key(customer))
    assert action.json()["client_secret"]
    declined = {**body, "payment_method_id": "pm_card_chargeDeclined"}
    await call("POST", process, process, 402, json=declined, headers=with_key(customer))
    await call(
        "POST", process, process, 422, json={**body, "amount": "1"}, headers=with_key(customer)
    )
    await call("POST", process, process, 400, json=body, headers=customer)

    await run_receipt_jobs(answer_services)
    refund_path = "/api/payments/refund"
    refund = {"payment_id": payment_id, "amount": 500, "reason": "requested_by_customer"}
    await call("POST", refund_path, refund_path, 201, json=refund, headers=with_key(operator))
    too_much = {"payment_id": payment_id, "amount": 5000}
    await call("POST", refund_path, refund_path, 422, json=too_much, headers=with_key(operator))
    await call("POST", refund_path, refund_path, 403, json=refund, headers=with_key(customer))

    # The reads: typed by the models, and still exactly the JSON the domain renders.
    mine = User(id=user, email="buyer@shop.example")
    ops = User(id="ops_contract", roles=("admin",))
    for who, headers in ((mine, customer), (ops, operator)):
        got = await call("GET", f"/api/payments/{payment_id}", one, 200, headers=headers)
        view = await history.get_payment(db=answer_services.db, user=who, payment_id=payment_id)
        assert got.content == compact(view)
        history_path = "/api/payments/history"
        await call("GET", history_path, history_path, 200, headers=headers, params={"limit": 2})
    await call("GET", "/api/payments/pay_00000000000000000000000000", one, 404, headers=customer)
    receipt_path = "/api/payments/{payment_id}/receipt"
    got = await call(
        "GET", f"/api/payments/{payment_id}/receipt", receipt_path, 200, headers=customer
    )
    view = await receipts.get_receipt(db=answer_services.db, user=mine, payment_id=payment_id)
    assert got.content == compact(view)
    email_path = receipt_path + "/email"
    await call(
        "POST", f"/api/payments/{payment_id}/receipt/email", email_path, 202, headers=customer
    )
    await call(
        "GET", f"/api/payments/{action.json()['id']}/receipt", receipt_path, 404, headers=customer
    )

    feed = "/api/notifications"
    got = await call("GET", feed, feed, 200, headers=operator, params={"limit": 100})
    page = await notifications.listing(db=answer_services.db, limit=100, cursor=None)
    listed = got.json()
    assert listed == {"data": page.data, "has_more": page.has_more, "next_cursor": page.next_cursor}
    # Stored as JSONB on PostgreSQL (whose key order is its own), answered in API.md's order.
    for notice in listed["data"]:
        model = NotifiedPayment if notice["type"].startswith("payment.") else NotifiedRefund
        assert list(notice["data"]) == list(model.model_fields), notice["type"]
    assert {"payment.succeeded", "payment.failed", "refund.succeeded"} <= {
        n["type"] for n in got.json()["data"]
    }
    await call("GET", feed, feed, 403, headers=customer)
    await call("GET", "/api/audit", "/api/audit", 200, headers=operator, params={"limit": 100})
    await call("GET", "/api/audit", "/api/audit", 400, headers=operator, params={"cursor": "x"})

    methods = "/api/payments/methods"
    save = {"payment_method_id": "pm_card_mastercard"}
    saved = await call(
        "POST", f"{methods}/save", f"{methods}/save", 201, json=save, headers=customer
    )
    await call("POST", f"{methods}/save", f"{methods}/save", 200, json=save, headers=customer)
    await call("GET", f"{methods}/list", f"{methods}/list", 200, headers=customer)
    gone = {"payment_method_id": saved.json()["id"]}
    await call(
        "DELETE", f"{methods}/delete", f"{methods}/delete", 204, headers=customer, params=gone
    )

    sessions = "/api/checkout/sessions"
    order = {"customer": {"sub": unique_user(), "email": "ada@shop.example", "name": "Ada"},
             "amount": 4900, "currency": "eur", "metadata": {"order_id": "ord_42"},
             "return_url": "https://shop.example/orders/42"}  # fmt: skip
    created = await call("POST", sessions, sessions, 201, json=order, headers=with_key(service))
    one_session = sessions + "/{checkout_id}"
    checkout_id = created.json()["id"]
    await call("GET", f"{sessions}/{checkout_id}", one_session, 200, headers=service)
    pay = {"payment_method_id": "pm_card_visa"}
    await call("POST", f"{sessions}/{checkout_id}/pay", one_session + "/pay", 201, json=pay)
    await call("POST", f"{sessions}/{checkout_id}/pay", one_session + "/pay", 409, json=pay)

    await call("GET", "/healthz", "/healthz", 200)
    await call("GET", "/readyz", "/readyz", 200)
    # Every documented success was seen at least once.
    assert {
        (method.upper(), path, int(status))
        for path, item in contract.schema.raw_schema["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
        if status.startswith("2")
    } - contract.checked <= {
        ("GET", "/api/payments/{payment_id}/receipt.pdf", 200),
        ("POST", "/api/webhooks/stripe", 200),
        ("POST", "/api/checkout/sessions/{checkout_id}/pay", 200),
    }
