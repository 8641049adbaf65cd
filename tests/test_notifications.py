"""Notifications to the product's backend: told in the change's transaction, signed as Stripe
signs, delivered until a 2xx from the durable queue, and listed for catching up."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import select, update

from azora_payments.config import Settings
from azora_payments.db.models import Job, Notification
from azora_payments.db.types import utcnow
from azora_payments.domain.notifications import DELIVER
from azora_payments.jobs.registry import get_kind, import_kind_modules
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services
from tests.conftest import (
    bearer,
    emulator_settings,
    make_token,
    stack_fixtures,
    unique_user,
)

NOTIFY_SECRET = "ntf-secret-" + "4f1c9a7e2b8d3065" * 3


class Backend:
    """The product's backend: records what it is sent, answers the statuses it is told to."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.statuses: list[int] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                backend.received.append((body, self.headers["Azora-Signature"]))
                self.send_response(backend.statuses.pop(0) if backend.statuses else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/azora"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for body, signature in self.received:
            # Stripe's own verification code accepts it: the same scheme.
            stripe.WebhookSignature.verify_header(body.decode(), signature, NOTIFY_SECRET, 300)
            out.append(json.loads(body))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    receiver = Backend()
    yield receiver
    receiver.close()


@pytest.fixture
def notify_settings(
    database_url: str, tmp_path: Path, stripe_emulator: str, backend: Backend
) -> Settings:
    return emulator_settings(
        database_url,
        tmp_path,
        stripe_emulator,
        notify_url=backend.url,
        notify_secret=NOTIFY_SECRET,
    )


notify_services, notify_api = stack_fixtures(
    "notify_settings", services="notify_services", client="notify_api"
)


async def deliver_due(services: Services) -> int:
    import_kind_modules()
    worker = Worker(
        services,
        options=WorkerOptions(once=True, poll_seconds=0.05),
        kinds={DELIVER: get_kind(DELIVER)},
    )
    await worker.run()
    return worker.runs


async def pay(api: httpx.AsyncClient, method: str = "pm_card_visa") -> httpx.Response:
    return await api.post(
        "/api/payments/process",
        json={"amount": 2500, "currency": "eur", "payment_method_id": method},
        headers={**bearer(make_token(unique_user())), "Idempotency-Key": uuid.uuid4().hex},
    )


OPERATOR = bearer(make_token("ops_1", roles=["admin"], lifetime=3600))


async def test_success_is_told_signed_once(
    notify_api: httpx.AsyncClient, notify_services: Services, backend: Backend
) -> None:
    payment = (await pay(notify_api)).json()
    assert await deliver_due(notify_services) == 1
    assert await deliver_due(notify_services) == 0  # delivered: nothing left to send
    [told] = backend.events()
    assert told["id"].startswith("ntf_")
    assert told["type"] == "payment.succeeded"
    assert told["created_at"].endswith("Z")
    assert told["data"]["id"] == payment["id"]
    assert told["data"]["status"] == "succeeded"
    assert told["data"]["user_id"]
    async with notify_services.db.read() as session:
        row = await session.get(Notification, told["id"])
    assert row is not None
    assert row.delivered_at is not None
    assert row.attempts == 1


async def test_every_outcome_has_its_type(
    notify_api: httpx.AsyncClient, notify_services: Services, backend: Backend
) -> None:
    declined = (await pay(notify_api, "pm_card_chargeDeclined")).json()
    action = (await pay(notify_api, "pm_card_threeDSecure2Required")).json()
    paid = (await pay(notify_api)).json()
    refund = await notify_api.post(
        "/api/payments/refund",
        json={"payment_id": paid["id"], "amount": 500},
        headers={**OPERATOR, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert refund.status_code == 201
    await deliver_due(notify_services)
    told = {(e["type"], e["data"].get("payment_id", e["data"]["id"])) for e in backend.events()}
    assert told == {
        ("payment.failed", declined["payment_id"]),
        ("payment.requires_action", action["id"]),
        ("payment.succeeded", paid["id"]),
        ("refund.succeeded", paid["id"]),
    }


async def test_a_failing_backend_is_retried_until_2xx(
    notify_api: httpx.AsyncClient, notify_services: Services, backend: Backend
) -> None:
    backend.statuses = [500, 503]
    await pay(notify_api)
    assert await deliver_due(notify_services) == 1
    async with notify_services.db.read() as session:
        job = await session.scalar(select(Job).where(Job.kind == DELIVER))
    assert job is not None
    assert (job.status, job.attempts) == ("ready", 1)
    assert job.run_at > utcnow() + timedelta(seconds=30)  # backed off, not hammered
    for _ in range(2):
        async with notify_services.db.transaction() as session:
            await session.execute(update(Job).where(Job.kind == DELIVER).values(run_at=utcnow()))
        await deliver_due(notify_services)
    events = backend.events()
    assert len(events) == 3
    assert len({e["id"] for e in events}) == 1  # the same notification, until taken
    async with notify_services.db.read() as session:
        row = await session.scalar(select(Notification))
    assert row is not None
    assert (row.attempts, row.delivered_at is not None) == (3, True)


async def test_the_list_lets_a_backend_catch_up(
    notify_api: httpx.AsyncClient, notify_services: Services
) -> None:
    first = (await pay(notify_api)).json()
    second = (await pay(notify_api)).json()
    listed = await notify_api.get("/api/notifications", params={"limit": 1}, headers=OPERATOR)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert [n["data"]["id"] for n in page["data"]] == [first["id"]]
    assert page["has_more"] is True
    rest = (
        await notify_api.get(
            "/api/notifications", params={"cursor": page["next_cursor"]}, headers=OPERATOR
        )
    ).json()
    assert [n["data"]["id"] for n in rest["data"]] == [second["id"]]
    assert rest["has_more"] is False
    assert rest["next_cursor"]  # a feed's last page still says where to come back from
    third = (await pay(notify_api)).json()
    later = (
        await notify_api.get(
            "/api/notifications", params={"cursor": rest["next_cursor"]}, headers=OPERATOR
        )
    ).json()
    assert [n["data"]["id"] for n in later["data"]] == [third["id"]]
    empty = (
        await notify_api.get(
            "/api/notifications", params={"cursor": later["next_cursor"]}, headers=OPERATOR
        )
    ).json()
    assert (empty["data"], empty["next_cursor"]) == ([], later["next_cursor"])


async def test_only_operators_list(notify_api: httpx.AsyncClient) -> None:
    response = await notify_api.get("/api/notifications", headers=bearer(make_token("user_9")))
    assert response.status_code == 403
    assert (await notify_api.get("/api/notifications")).status_code == 401


async def test_without_a_backend_nothing_is_sent(
    api: httpx.AsyncClient, stripe_services: Services, backend: Backend
) -> None:
    await pay(api)
    assert await deliver_due(stripe_services) == 1  # the job runs and finds nowhere to send
    assert backend.received == []
    listed = (await api.get("/api/notifications", headers=OPERATOR)).json()
    assert [n["type"] for n in listed["data"]] == ["payment.succeeded"]
