"""No secret reaches a log line: every endpoint is driven (payments that succeed, are declined
and need 3-D Secure, saved cards, receipts and their re-send, refunds, webhooks from the
emulator and forged ones, notifications, errors of every kind), against real `serve` and
`worker` processes logging at DEBUG, and every line either process wrote is scanned for card
numbers, bearer tokens, our secrets, client secrets and e-mail addresses."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from azora_payments.config import Settings
from azora_payments.devstack.emulator import EmulatorProcess, configure_webhook
from azora_payments.devstack.processes import start_server, start_worker
from tests.conftest import (
    JWT_SECRET,
    STRIPE_KEY,
    WEBHOOK_SECRET,
    bearer,
    make_settings,
    make_token,
    server_env,
)
from tests.receipts.conftest import SmtpServer
from tests.webhooks.test_end_to_end import card, stripe_post

pytestmark = pytest.mark.slow

NOTIFY_SECRET = "ntf-" + "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
CUSTOMER_EMAIL = "ada.lovelace@shop.example"
OTHER_EMAIL = "accounts@buyer.example"
CARD_IN_TEXT = "4242 4242 4242 4242"
THREE_D_SECURE_CARD = "4000002760003184"

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
CLIENT_SECRET = re.compile(r"_secret_[A-Za-z0-9]+")
# 13 to 19 digits, spaced or not, standing alone (not the middle of an id): then Luhn decides.
DIGITS = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")


def luhn(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return total % 10 == 0


def leaks(line: str, secrets: list[str]) -> list[str]:
    """What in `line` must never be logged."""
    found = [f"secret {s[:6]}…" for s in secrets if s in line]
    found += [f"e-mail {m}" for m in EMAIL.findall(line)]
    found += [f"token {m[:12]}…" for m in JWT.findall(line)]
    found += [f"client secret {m[:12]}…" for m in CLIENT_SECRET.findall(line)]
    found += [f"card number {m}" for m in DIGITS.findall(line) if luhn(m)]
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    token = make_token("u")
    for line, what in (
        (f"paid with {CARD_IN_TEXT}", "card number"),
        ("card=4000002760003184", "card number"),
        (f"to {CUSTOMER_EMAIL}", "e-mail"),
        (f"Authorization: Bearer {token}", "token"),
        ("pi_123_secret_abcDEF", "client secret"),
        (f"key {STRIPE_KEY}", "secret"),
    ):
        assert any(found.startswith(what) for found in leaks(line, [STRIPE_KEY])), line
    quiet = "payment pay_01jc 2000 usd at 2026-12-01T10:00:00Z, 1733047200, pi_4242424242424242x"
    assert leaks(quiet, []) == []


# ---------------------------------------------------------------- the processes


class Backend:
    """The product's backend: takes notifications."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                backend.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/azora"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stack(sqlite_template: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    database = tmp_path / "leaks.db"
    shutil.copy(sqlite_template, database)
    emulator = EmulatorProcess(webhook_delay=0.0)
    emulator.start()
    smtp = SmtpServer()
    smtp.start()
    backend = Backend()
    settings: Settings = make_settings(
        f"sqlite:///{database}",
        receipt_storage=str(tmp_path / "receipts"),
        stripe_api_base=emulator.base_url,
        stripe_max_network_retries=1,
    )
    env = server_env(
        settings,
        LOG_LEVEL="DEBUG",
        SMTP_URL=smtp.url,
        RECEIPT_FROM_EMAIL="receipts@shop.example",
        NOTIFY_URL=backend.url,
        NOTIFY_SECRET=NOTIFY_SECRET,
        RATE_LIMIT_IP="100000/minute",
        WORKER_POLL_SECONDS="0.1",
    )
    server = start_server(env, tmp_path / "serve.log", wait=False)
    worker = start_worker(env, tmp_path / "worker.log", wait=False)
    processes = [server, worker]
    base = server.url
    try:
        server.wait_http()
        worker.wait_started()
        configure_webhook(
            emulator.base_url, url=f"{base}/api/webhooks/stripe", secret=WEBHOOK_SECRET
        )
        yield {
            "base": base,
            "emulator": emulator.base_url,
            "smtp": smtp,
            "backend": backend,
            "processes": processes,
        }
    finally:
        for process in processes:
            process.stop()
        backend.close()
        smtp.stop()
        emulator.stop()


async def wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen")


# ---------------------------------------------------------------- driving every endpoint


async def test_no_log_line_of_any_process_leaks(stack: dict[str, Any]) -> None:
    customer = make_token("leak_customer", email=CUSTOMER_EMAIL, name="Ada Lovelace")
    stranger = make_token("leak_stranger", email="stranger@else.example")
    operator = make_token("leak_ops", roles=["admin"], email="ops@azora.example")
    forged = make_token("leak_ops", roles=["admin"], secret="k" * 40)
    tokens = [customer, stranger, operator, forged]
    me, ops = bearer(customer), bearer(operator)
    client_secrets: list[str] = []

    def key() -> dict[str, str]:
        return {"Idempotency-Key": uuid.uuid4().hex}

    async with httpx.AsyncClient(base_url=stack["base"], timeout=30) as http:
        # Saved cards.
        saved = await http.post(
            "/api/payments/methods/save",
            json={"payment_method_id": "pm_card_visa", "set_default": True},
            headers=me,
        )
        assert saved.status_code in (200, 201), saved.text
        assert (await http.get("/api/payments/methods/list", headers=me)).status_code == 200

        # A payment that succeeds, with card-like text and an address of the payer's choosing.
        body = {
            "amount": 2500,
            "currency": "eur",
            "payment_method_id": saved.json()["id"],
            "description": f"Course, paid with {CARD_IN_TEXT}",
            "metadata": {"order_id": "ord_42", "note": CARD_IN_TEXT},
            "receipt_email": CUSTOMER_EMAIL,
        }
        paid = await http.post("/api/payments/process", json=body, headers={**me, **key()})
        assert paid.status_code == 201, paid.text
        payment = paid.json()

        # A decline, and a card that needs 3-D Secure, completed in the emulator.
        declined = await http.post(
            "/api/payments/process",
            json={"amount": 2000, "currency": "usd", "payment_method_id": "pm_card_chargeDeclined"},
            headers={**me, **key()},
        )
        assert declined.status_code == 402, declined.text
        secure = await http.post(
            "/api/payments/process",
            json={
                "amount": 3000,
                "currency": "usd",
                "payment_method_id": await card(stack["emulator"], THREE_D_SECURE_CARD),
            },
            headers={**me, **key()},
        )
        assert secure.status_code == 201, secure.text
        assert secure.json()["status"] == "requires_action"
        client_secrets.append(secure.json()["client_secret"])
        await stripe_post(
            stack["emulator"],
            f"/v1/payment_intents/{secure.json()['stripe_payment_intent_id']}/_authenticate",
            {"client_secret": secure.json()["client_secret"], "success": "true"},
        )

        async def settled() -> bool:
            got = await http.get(f"/api/payments/{secure.json()['id']}", headers=me)
            return bool(got.json()["status"] == "succeeded")

        await wait_until(settled, "the 3-D Secure payment settling by webhook")

        # Reading: the payment, history, receipt, its PDF; a re-send, one to another address.
        async def receipt_ready() -> bool:
            got = await http.get(f"/api/payments/{payment['id']}/receipt", headers=me)
            return got.status_code == 200 and got.json()["emailed_at"] is not None

        await wait_until(receipt_ready, "the receipt being issued and e-mailed")
        for path in (
            f"/api/payments/{payment['id']}",
            "/api/payments/history?limit=5",
            f"/api/payments/{payment['id']}/receipt.pdf",
        ):
            assert (await http.get(path, headers=me)).status_code == 200, path
        resend = f"/api/payments/{payment['id']}/receipt/email"
        assert (await http.post(resend, headers=me)).status_code == 202
        assert (
            await http.post(resend, headers=ops, json={"email": OTHER_EMAIL})
        ).status_code == 202

        # An operator's refund, the audit log, notifications.
        refund = await http.post(
            "/api/payments/refund",
            json={"payment_id": payment["id"], "amount": 500, "reason": "requested_by_customer"},
            headers={**ops, **key()},
        )
        assert refund.status_code == 201, refund.text
        assert (await http.get("/api/audit?limit=50", headers=ops)).status_code == 200
        assert (await http.get("/api/notifications", headers=ops)).status_code == 200

        # Errors of every kind, several carrying what must not be logged.
        errors = [
            await http.get("/api/payments/history"),
            await http.get("/api/payments/history", headers=bearer(forged)),
            await http.get("/api/payments/history", headers={"Authorization": f"Basic {customer}"}),
            await http.get("/api/audit", headers=me),
            await http.get(f"/api/payments/{payment['id']}", headers=bearer(stranger)),
            await http.post(
                "/api/payments/process",
                content=f'{{"amount": 1, "card": "{CARD_IN_TEXT}", "email": "{CUSTOMER_EMAIL}"',
                headers={**me, **key(), "Content-Type": "application/json"},
            ),
            await http.post(
                "/api/payments/process",
                json={**body, "receipt_email": f"{CUSTOMER_EMAIL},root", "card": CARD_IN_TEXT},
                headers={**me, **key()},
            ),
            await http.post("/api/payments/process", json=body, headers=me),  # no key
            await http.get("/api/payments/process", headers=me),
            await http.post(
                "/api/webhooks/stripe",
                content=json.dumps({"id": "evt_x", "email": CUSTOMER_EMAIL}).encode(),
                headers={"Stripe-Signature": f"t=1,v1={'0' * 64}"},
            ),
        ]
        assert [e.status_code for e in errors] == [401, 401, 401, 403, 404, 400, 422, 400, 405, 400]

        # Saved card removed.
        deleted = await http.delete(
            "/api/payments/methods/delete",
            params={"payment_method_id": saved.json()["id"]},
            headers=me,
        )
        assert deleted.status_code == 204

        async def quiet() -> bool:  # the worker has sent what the queue held
            sent = stack["smtp"].inbox.recipients
            return len(sent) >= 4 and len(stack["backend"].bodies) >= 3

        await wait_until(quiet, "the worker sending e-mails and notifications")

    for process in stack["processes"]:
        process.stop()
    secrets = [STRIPE_KEY, WEBHOOK_SECRET, JWT_SECRET, NOTIFY_SECRET, *tokens, *client_secrets]
    lines = 0
    found: list[str] = []
    for process in stack["processes"]:
        text = process.output()
        for line in text.splitlines():
            lines += 1
            found += [
                f"{process.log_path.name}: {what}: {line[:300]}" for what in leaks(line, secrets)
            ]
    assert lines > 50, "the processes logged (almost) nothing: the scan would prove nothing"
    assert found == [], "\n".join(found[:40])
