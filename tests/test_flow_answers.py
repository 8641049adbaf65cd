"""HTTP stays in api/: flows end with outcomes, `api/answers.py` renders them, the keys store
that rendering. The bytes are pinned here: replays stored before any change must stay equal to
what a fresh request answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import azora_payments
from azora_payments.api import answers
from azora_payments.domain import idempotency
from azora_payments.domain.flow_outcomes import (
    Charged,
    Declined,
    Outcome,
    PaymentGivenUp,
    Refunded,
    RefundRefused,
    Rejected,
    SessionCreated,
    TooMuch,
    UnderWay,
)
from azora_payments.logs import request_id_var

E = "https://docs.azora.dev/errors/"
REJECTED = "The payment could not be made with this payment method."
GIVEN_UP = "This payment failed. You were not charged; try again with a new request."

RENDERED: list[tuple[Outcome, int, str]] = [
    (Charged({"id": "pay_1", "amount": 2000}), 201, '{"id":"pay_1","amount":2000}'),
    (
        UnderWay({"id": "pay_1", "status": "processing"}),
        200,
        '{"id":"pay_1","status":"processing"}',
    ),
    (Refunded({"id": "rf_1", "amount": 300}), 201, '{"id":"rf_1","amount":300}'),
    (SessionCreated({"id": "cs_1", "name": "Zoë"}), 201, '{"id":"cs_1","name":"Zoë"}'),
    (
        Declined(
            "pay_1", "card_declined", "insufficient_funds", "Your card has insufficient funds."
        ),
        402,
        f'{{"type":"{E}card_declined","title":"Your card has insufficient funds.","status":402,'
        '"detail":"Your card has insufficient funds.","code":"card_declined","request_id":null,'
        '"decline_code":"insufficient_funds","payment_id":"pay_1","retryable":false}',
    ),
    (
        Declined("pay_1", None, None, "Your card was declined."),
        402,
        f'{{"type":"{E}card_declined","title":"Your card was declined.","status":402,'
        '"detail":"Your card was declined.","code":"card_declined","request_id":null,'
        '"decline_code":null,"payment_id":"pay_1","retryable":false}',
    ),
    (
        Rejected("pay_1", None, REJECTED),
        404,
        f'{{"type":"{E}payment_method_not_found","title":"Payment method not found.",'
        '"status":404,"detail":"Payment method not found.","code":"payment_method_not_found",'
        '"request_id":null,"payment_id":"pay_1"}',
    ),
    (
        Rejected("pay_1", "amount", REJECTED),
        422,
        f'{{"type":"{E}validation_error","title":"The request is not valid.","status":422,'
        f'"detail":"{REJECTED}","code":"validation_error","request_id":null,'
        f'"payment_id":"pay_1","errors":[{{"field":"amount","message":"{REJECTED}"}}]}}',
    ),
    (
        PaymentGivenUp("pay_1", {"code": "card_declined"}),
        409,
        f'{{"type":"{E}payment_failed","title":"{GIVEN_UP}","status":409,"detail":"{GIVEN_UP}",'
        '"code":"payment_failed","request_id":null,"payment_id":"pay_1","retryable":false,'
        '"failure":{"code":"card_declined"}}',
    ),
    (
        TooMuch("pay_1", 300),
        422,
        f'{{"type":"{E}amount_exceeds_refundable",'
        '"title":"The amount exceeds what can still be refunded.","status":422,'
        '"detail":"At most 300 can still be refunded.","code":"amount_exceeds_refundable",'
        '"request_id":null,"payment_id":"pay_1",'
        '"errors":[{"field":"amount","message":"must be at most 300"}]}',
    ),
    (
        RefundRefused("pay_1", "charge_disputed"),
        409,
        f'{{"type":"{E}charge_disputed","title":"Stripe refused the refund.","status":409,'
        '"detail":"Stripe refused the refund.","code":"charge_disputed","request_id":null,'
        '"payment_id":"pay_1","retryable":false}',
    ),
]


@pytest.mark.parametrize(("outcome", "status", "body"), RENDERED)
def test_each_outcome_renders_the_answer_api_md_shows(
    outcome: Outcome, status: int, body: str
) -> None:
    rendered = answers.render(outcome)
    assert (rendered.status, rendered.body) == (status, body)


def test_a_problem_carries_the_request_that_ended_the_flow() -> None:
    token = request_id_var.set("req_42")
    try:
        rendered = answers.render(RefundRefused("pay_1", "refund_refused"))
    finally:
        request_id_var.reset(token)
    assert json.loads(rendered.body)["request_id"] == "req_42"


def test_the_keys_store_what_api_renders() -> None:
    answers.install()
    outcome = TooMuch("pay_1", 0)
    assert idempotency.render(outcome) == answers.render(outcome)


DOMAIN = Path(azora_payments.__file__).parent / "domain"
# The HTTP words no domain module may use: the request id, status codes, rendered problems.
HTTP_WORDS = ("request_id_var", "status_code", ".problem(", "Stored.of(", "fastapi", "starlette")
# The flows, which name no route either (the key's request path comes from api/).
FLOWS = (
    "payment_flow.py",
    "refund_flow.py",
    "refunds.py",
    "final_answers.py",
    "outcomes.py",
    "idempotency.py",
    "checkout.py",
    "refund_approvals.py",
    "flow_outcomes.py",
)


@pytest.mark.parametrize("module", sorted(p.name for p in DOMAIN.glob("*.py")))
def test_no_http_in_the_domain(module: str) -> None:
    text = (DOMAIN / module).read_text()
    found = [word for word in HTTP_WORDS if word in text]
    if module in FLOWS and '"/api/' in text:
        found.append('"/api/')
    assert found == [], f"domain/{module} speaks HTTP: {found}"
