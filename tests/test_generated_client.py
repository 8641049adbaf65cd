"""Issue 11, item 3: a product team can generate a typed client from `/openapi.json`.

openapi-python-client (a real generator, pinned in the dev dependencies) writes a client from the
schema, and `mypy --strict` checks a small program written against it that uses a Payment's and
a Refund's fields; the same program with one wrong use of a field must fail, so the check cannot
pass on a client typed `Any`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_openapi import openapi

BIN = Path(sys.executable).parent

PROGRAM = '''
"""What a product's backend writes: pay, refund, and read back what it got."""

from __future__ import annotations

import datetime

from azora_client import AuthenticatedClient
from azora_client.api.payments import get_payment, process_payment
from azora_client.api.refunds import refund_payment
from azora_client.models import (
    OperatorPayment,
    Payment,
    PaymentStatus,
    Problem,
    ProcessIn,
    Refund,
    RefundIn,
    RefundStatus,
)

COUNTED = (RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED)


def still_refundable(payment: Payment | OperatorPayment) -> int:
    return payment.amount - sum(r.amount for r in payment.refunds if r.status in COUNTED)


def card_line(payment: Payment) -> str:
    card = payment.payment_method
    last4: str | None = card.last4 if card is not None else None
    paid_at: datetime.datetime = payment.created_at
    return f"{payment.currency} {payment.amount} **** {last4} on {paid_at:%Y-%m-%d}"


def why_failed(payment: Payment) -> str | None:
    if payment.status is not PaymentStatus.FAILED or payment.failure is None:
        return None
    return payment.failure.decline_code or payment.failure.code


def refund_line(refund: Refund) -> str:
    created: datetime.datetime = refund.created_at
    return f"{refund.id} of {refund.payment_id}: {refund.amount} {refund.status.value} {created}"


def pay_and_refund(client: AuthenticatedClient, order: str) -> str:
    body = ProcessIn(amount=2000, currency="usd", payment_method_id="pm_card_visa")
    paid = process_payment.sync(client=client, body=body, idempotency_key=f"order:{order}")
    if isinstance(paid, Problem):
        return f"{paid.status} {paid.code}: {paid.detail}"
    if paid is None:
        return "no answer"
    refund = refund_payment.sync(
        client=client,
        body=RefundIn(payment_id=paid.id, amount=still_refundable(paid)),
        idempotency_key=f"refund:{order}",
    )
    again = get_payment.sync(paid.id, client=client)
    seen = still_refundable(again) if isinstance(again, Payment | OperatorPayment) else None
    if isinstance(refund, Refund):
        return f"{card_line(paid)}; {refund_line(refund)}; {seen} left"
    return card_line(paid)
'''

# One wrong use of a field each: a client whose objects were untyped would let every one pass.
MISTAKES = {
    "an amount is an int": "def wrong(p: Payment) -> str:\n    return p.amount\n",
    "a refund has no card": "def wrong(r: Refund) -> object:\n    return r.payment_method\n",
    "a status is an enum": "def wrong(p: Payment) -> bool:\n    return p.status == 3\n",
}


@pytest.fixture(scope="module")
def client_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("client")
    (folder / "openapi.json").write_text(json.dumps(openapi(folder)), encoding="utf-8")
    # No post hooks: the generator would otherwise run ruff over what it wrote.
    (folder / "config.yaml").write_text(
        "package_name_override: azora_client\npost_hooks: []\n", encoding="utf-8"
    )
    generated = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            "openapi.json",
            "--config",
            "config.yaml",
            "--meta",
            "none",
            "--output-path",
            "azora_client",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    # Only the PDF is left out (the generator reads no binary answers); every JSON call is there.
    said = (generated.stdout + generated.stderr).splitlines()
    warnings = [line for line in said if line.startswith("WARNING")]
    assert warnings == [
        "WARNING parsing GET /api/payments/{payment_id}/receipt.pdf within receipts."
    ]
    return folder


def mypy(folder: Path, source: str, name: str) -> subprocess.CompletedProcess[str]:
    program = folder / f"{name}.py"
    program.write_text(source, encoding="utf-8")
    return subprocess.run(
        [
            str(BIN / "mypy"),
            "--strict",
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            "--config-file",
            os.devnull,
            program.name,
        ],
        cwd=folder,
        env={**os.environ, "MYPYPATH": str(folder)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_generated_client_types_payments_and_refunds(client_folder: Path) -> None:
    checked = mypy(client_folder, PROGRAM, "backend")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The mistakes all at once, in one run of mypy: each must be reported.
    wrong = (
        PROGRAM
        + "\n\n"
        + "\n\n".join(
            source.replace("def wrong", f"def wrong_{n}")
            for n, source in enumerate(MISTAKES.values())
        )
    )
    rejected = mypy(client_folder, wrong, "mistaken")
    assert rejected.returncode == 1, rejected.stdout
    errors = [line for line in rejected.stdout.splitlines() if ": error:" in line]
    assert len(errors) == len(MISTAKES), rejected.stdout
