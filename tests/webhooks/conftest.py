"""Helpers for the webhook suites: Stripe-shaped objects and events (from Stripe's own example
objects), signing as Stripe signs, payments seeded in the database, and running apply jobs."""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from azora_payments.config import Settings
from azora_payments.db.models import Payment, WebhookEvent
from azora_payments.db.types import utcnow
from azora_payments.domain.events import APPLY_KIND
from azora_payments.ids import new_id
from azora_payments.jobs.registry import get_kind, import_kind_modules
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services
from tests.conftest import WEBHOOK_SECRET, make_settings, stack_fixtures

SHAPES: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "stripe_shapes.json").read_text()
)["resources"]
WEBHOOK_PATH = "/api/webhooks/stripe"
_seq = itertools.count(1)


def _uid(prefix: str) -> str:
    return f"{prefix}_{next(_seq):06d}{new_id('x')[2:14]}"


# ------------------------------------------------------------------ Stripe-shaped objects


def intent_obj(
    pi_id: str,
    *,
    status: str,
    amount: int = 2000,
    payment_id: str | None = None,
    charge_id: str | None = None,
    error_code: str | None = None,
    customer: str | None = "cus_test",
) -> dict[str, Any]:
    pi = copy.deepcopy(SHAPES["payment_intent"])
    pi.update(
        id=pi_id,
        status=status,
        amount=amount,
        customer=customer,
        amount_received=amount if status == "succeeded" else 0,
        canceled_at=None,
        client_secret=f"{pi_id}_secret_x",
        latest_charge=charge_id,
        metadata={"azora_payment_id": payment_id} if payment_id else {},
        next_action={"type": "use_stripe_sdk"} if status == "requires_action" else None,
        last_payment_error=(
            {"type": "card_error", "code": error_code, "decline_code": "generic_decline"}
            if error_code
            else None
        ),
    )
    return pi


def refund_obj(
    re_id: str,
    *,
    amount: int,
    status: str,
    pi_id: str | None,
    charge_id: str,
    azora_refund_id: str | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    refund = copy.deepcopy(SHAPES["refund"])
    refund.update(
        id=re_id,
        amount=amount,
        status=status,
        payment_intent=pi_id,
        charge=charge_id,
        metadata={"azora_refund_id": azora_refund_id} if azora_refund_id else {},
        failure_reason=failure_reason,
    )
    return refund


def charge_obj(
    ch_id: str, *, pi_id: str, amount: int = 2000, refunds: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    charge = copy.deepcopy(SHAPES["charge"])
    counted = [r for r in refunds or [] if r["status"] in ("pending", "succeeded")]
    charge.update(
        id=ch_id,
        payment_intent=pi_id,
        amount=amount,
        amount_captured=amount,
        amount_refunded=sum(r["amount"] for r in counted),
        refunded=sum(r["amount"] for r in counted) == amount,
        refunds={
            "object": "list",
            "data": refunds or [],
            "has_more": False,
            "url": f"/v1/charges/{ch_id}/refunds",
        },
    )
    return charge


def dispute_obj(dp_id: str, *, status: str, charge_id: str, pi_id: str | None) -> dict[str, Any]:
    dispute = copy.deepcopy(SHAPES["dispute"])
    dispute.update(id=dp_id, status=status, charge=charge_id, payment_intent=pi_id)
    return dispute


def method_obj(pm_id: str, *, customer: str | None, exp_year: int = 2030) -> dict[str, Any]:
    pm = copy.deepcopy(SHAPES["payment_method"])
    pm.update(id=pm_id, customer=customer)
    pm["card"].update(exp_year=exp_year)
    return pm


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    evt = copy.deepcopy(SHAPES["event"])
    evt.update(
        id=event_id or _uid("evt"),
        type=event_type,
        created=created if created is not None else int(time.time()),
        livemode=livemode,
        api_version="2026-10-28.endive",
        data={"object": obj},
    )
    return evt


# ------------------------------------------------------------------ signing and sending


def sign(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """`Stripe-Signature` as Stripe makes it: t=<ts>,v1=<hex HMAC-SHA256(secret, "t.body")>."""
    t = timestamp if timestamp is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def send(
    client: httpx.AsyncClient,
    evt: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    body = json.dumps(evt).encode()
    return await client.post(
        WEBHOOK_PATH,
        content=body,
        headers={
            "Stripe-Signature": sign(body, secret=secret, timestamp=timestamp),
            "Content-Type": "application/json",
        },
    )


# ------------------------------------------------------------------ database and jobs


async def seed_payment(
    services: Services,
    *,
    status: str = "processing",
    pi_id: str | None = None,
    charge_id: str | None = None,
    amount: int = 2000,
    user_id: str = "user_1",
    **fields: Any,
) -> Payment:
    now = utcnow()
    fields.setdefault("stripe_customer_id", "cus_test")
    payment = Payment(
        id=new_id("pay"),
        user_id=user_id,
        status=status,
        amount=amount,
        currency="usd",
        amount_refunded=0,
        metadata_={},
        save_payment_method=False,
        stripe_payment_intent_id=pi_id,
        stripe_charge_id=charge_id,
        disputed=False,
        created_at=now,
        updated_at=now,
        **fields,
    )
    async with services.db.transaction() as session:
        session.add(payment)
    return payment


async def reload(services: Services, model: Any, ident: str) -> Any:
    async with services.db.transaction() as session:
        return await session.get(model, ident)


async def event_row(services: Services, event_id: str) -> WebhookEvent | None:
    row: WebhookEvent | None = await reload(services, WebhookEvent, event_id)
    return row


APPLY_ONLY = WorkerOptions(once=True, poll_seconds=0.02, concurrency=4)


async def run_apply_jobs(services: Services) -> int:
    """Run every due `stripe.event.apply` job (and nothing else, e.g. no reconcile) once."""
    import_kind_modules()
    worker = Worker(services, options=APPLY_ONLY, kinds={APPLY_KIND: get_kind(APPLY_KIND)})
    await worker.run()
    return worker.runs


@pytest.fixture
def hook_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, receipt_storage=str(tmp_path / "receipts"))


# The app over ASGI, with Stripe unreachable: ingest must not need it.
hook_services, hook_client = stack_fixtures(
    "hook_settings",
    services="hook_services",
    client="hook_client",
    client_addr=("198.51.100.4", 443),
)


@pytest.fixture(scope="module")
def own_emulator() -> Iterator[str]:
    """An emulator for this module alone: its webhook target and event list are ours."""
    from azora_payments.devstack.emulator import EmulatorProcess

    with EmulatorProcess(webhook_delay=0.0) as emulator:
        yield emulator.base_url
