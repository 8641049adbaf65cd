"""Idempotency on real `azora-payments serve` processes (issue 5).

The in-process tests (test_payments.py) share one event loop and one engine; these start real
server processes on one database, so races go through the database's own locking, and a crash
is a real SIGKILL: no `finally`, no rollback by us, no answer. Every process started here is
stopped in a `finally` (SIGTERM, so coverage writes its data; SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from azora_payments.config import Settings
from azora_payments.db.session import create_engine
from azora_payments.devstack.processes import ServiceProcess, running_servers
from tests.conftest import (
    bearer,
    emulator_clear_faults,
    emulator_faults,
    emulator_intents_for,
    free_port,
    make_settings,
    make_token,
    server_env,
    unique_user,
)
from tests.test_payments import payment_body

pytestmark = pytest.mark.slow

PROCESS = "/api/payments/process"
CREATE_INTENT = "POST /v1/payment_intents"


class Buyer:
    def __init__(self) -> None:
        self.id = unique_user()
        self.headers = bearer(make_token(self.id))

    def with_key(self, idem: str) -> dict[str, str]:
        return {**self.headers, "Idempotency-Key": idem}


# ---------------------------------------------------------------- server processes


class Server(ServiceProcess):
    """One `azora-payments serve` process on `settings` (and `env`), its output in `log`."""

    def __init__(self, settings: Settings, log: Path, **env: str) -> None:
        port = free_port()
        super().__init__(
            ["serve", "--port", str(port)], env=server_env(settings, **env), log=log, port=port
        )

    def wait_ready(self) -> None:
        self.wait_http()


@contextlib.contextmanager
def servers(
    settings: Settings, tmp_path: Path, count: int = 1, **env: str
) -> Iterator[list[ServiceProcess]]:
    """`count` servers on the same settings, started side by side; always stopped."""
    with running_servers(server_env(settings, **env), tmp_path, count) as started:
        yield started


def process_settings(database_url: str, stripe_emulator: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        receipt_storage=str(tmp_path / "receipts"),
        stripe_api_base=stripe_emulator,
        stripe_max_network_retries=1,
    )


@pytest.fixture
def pg_url(pg_template_url: str) -> str:
    """PostgreSQL only (the shared per-worker database; every test uses its own users)."""
    return pg_template_url


# ---------------------------------------------------------------- database look-ups


async def rows(database_url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql), params)
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


async def payments_of(database_url: str, user_id: str) -> list[dict[str, Any]]:
    return await rows(
        database_url,
        "SELECT id, status, stripe_payment_intent_id FROM payments WHERE user_id = :u",
        u=user_id,
    )


async def keys_of(database_url: str, user_id: str) -> list[dict[str, Any]]:
    return await rows(
        database_url,
        "SELECT key, recovery_point, response_status, response_body, payment_id, locked_at"
        " FROM idempotency_keys WHERE user_id = :u",
        u=user_id,
    )


async def emulator_count(base_url: str, name: str) -> int:
    async with httpx.AsyncClient() as http:
        counts = (await http.get(f"{base_url}/_azora/requests")).json()
    return int(counts.get(name, 0))


async def wait_for(predicate: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- 1. two servers, one database


async def test_same_keys_on_two_servers_at_once_charge_once(
    pg_url: str, stripe_emulator: str, tmp_path: Path
) -> None:
    """10 keys x 2 servers x 3 requests, all at once: one PaymentIntent per key, every answer
    for a key byte-identical, and all but the first replays."""
    settings = process_settings(pg_url, stripe_emulator, tmp_path)
    buyers = {uuid.uuid4().hex: Buyer() for _ in range(10)}
    body = payment_body()
    with servers(settings, tmp_path, count=2) as (one, two):
        async with httpx.AsyncClient(timeout=60.0) as http:
            calls = [
                (idem, http.post(f"{server.url}{PROCESS}", json=body, headers=buyer.with_key(idem)))
                for idem, buyer in buyers.items()
                for server in (one, two)
                for _ in range(3)
            ]
            answers = await asyncio.gather(*(call for _, call in calls))
        logs = one.output() + two.output()

    by_key: dict[str, list[httpx.Response]] = {}
    for (idem, _), response in zip(calls, answers, strict=True):
        by_key.setdefault(idem, []).append(response)
    payment_ids = set()
    for idem, responses in by_key.items():
        assert [r.status_code for r in responses] == [201] * 6, (
            [r.text for r in responses if r.status_code != 201][:2],
            logs,
        )
        assert len({r.content for r in responses}) == 1, "answers for one key differ"
        firsts = [r for r in responses if "idempotent-replayed" not in r.headers]
        assert len(firsts) == 1, f"{len(firsts)} first answers for key {idem}"
        assert all(
            r.headers["idempotent-replayed"] == "true" for r in responses if r is not firsts[0]
        )
        payment = responses[0].json()
        assert payment["status"] == "succeeded"
        payment_ids.add(payment["id"])

        buyer = buyers[idem]
        intents = await emulator_intents_for(stripe_emulator, buyer.id)
        assert [i["id"] for i in intents] == [payment["stripe_payment_intent_id"]]
        assert intents[0]["metadata"]["azora_payment_id"] == payment["id"]
        stored = await payments_of(pg_url, buyer.id)
        assert [(p["id"], p["status"]) for p in stored] == [(payment["id"], "succeeded")]
    assert len(payment_ids) == 10


# ---------------------------------------------------------------- 2. crash after Stripe answered


async def test_crash_after_stripe_answered_is_finished_by_the_next_process(
    database_url: str, stripe_emulator: str, tmp_path: Path
) -> None:
    """SQLite and PostgreSQL: the process dies (SIGKILL) right after Stripe charged, before
    our commit; the next process finishes the same payment and Stripe holds one PaymentIntent."""
    url = database_url
    settings = process_settings(url, stripe_emulator, tmp_path)
    buyer = Buyer()
    headers = buyer.with_key(uuid.uuid4().hex)

    with servers(
        settings,
        tmp_path,
        AZORA_CRASH_AT="payment.after_stripe",
        IDEMPOTENCY_LOCK_SECONDS="1",
    ) as (doomed,):
        async with httpx.AsyncClient(timeout=30.0) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(f"{doomed.url}{PROCESS}", json=payment_body(), headers=headers)
        assert doomed.proc.wait(10) == -signal.SIGKILL, doomed.output()
    crashed_at = time.monotonic()

    # Stripe charged; we committed nothing after that: the payment is `processing`, the key
    # is at its recovery point, held by the dead process, with no answer.
    (payment,) = await payments_of(url, buyer.id)
    assert payment["status"] == "processing"
    assert payment["stripe_payment_intent_id"] is None
    (held,) = await keys_of(url, buyer.id)
    assert held["recovery_point"] == "payment_created"
    assert held["payment_id"] == payment["id"]
    assert held["response_status"] is None
    assert held["response_body"] is None
    assert held["locked_at"] is not None
    intents = await emulator_intents_for(stripe_emulator, buyer.id)
    assert len(intents) == 1
    assert intents[0]["status"] == "succeeded"

    with servers(settings, tmp_path, IDEMPOTENCY_LOCK_SECONDS="1") as (healthy,):
        await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - crashed_at)))  # past the lock
        async with httpx.AsyncClient(timeout=30.0) as http:
            again = await http.post(f"{healthy.url}{PROCESS}", json=payment_body(), headers=headers)
            replay = await http.post(
                f"{healthy.url}{PROCESS}", json=payment_body(), headers=headers
            )
        logs = healthy.output()

    assert again.status_code == 201, (again.text, logs)
    finished = again.json()
    assert finished["id"] == payment["id"]
    assert finished["status"] == "succeeded"
    assert finished["stripe_payment_intent_id"] == intents[0]["id"]
    assert "idempotent-replayed" not in again.headers  # finished now, not a replay
    assert replay.status_code == 201
    assert replay.content == again.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert [i["id"] for i in await emulator_intents_for(stripe_emulator, buyer.id)] == [
        intents[0]["id"]
    ]
    (done,) = await keys_of(url, buyer.id)
    assert done["recovery_point"] == "finished"
    assert done["response_status"] == 201
    assert done["response_body"] == again.text


# ---------------------------------------------------------------- 3. SIGKILL with Stripe in flight


@pytest.mark.parametrize(
    "retry_while_stripe_works",
    [
        pytest.param(False, id="stripe-finishes-first"),
        pytest.param(True, id="retry-while-stripe-works"),
    ],
)
async def test_sigkill_while_stripe_call_in_flight(
    pg_url: str, stripe_emulator: str, tmp_path: Path, retry_while_stripe_works: bool
) -> None:
    """Stripe is slow to create the PaymentIntent (it does the work only after `delay`, even if
    the caller has gone); the server is SIGKILLed while waiting for it. A retry on another
    process gives the original payment, succeeded, and Stripe holds one PaymentIntent, whether
    Stripe finished the killed call before the retry or only after the retry charged."""
    delay = 5.0 if retry_while_stripe_works else 1.0
    settings = process_settings(pg_url, stripe_emulator, tmp_path)
    buyer = Buyer()
    headers = buyer.with_key(uuid.uuid4().hex)
    body = payment_body(amount=4200)
    before = await emulator_count(stripe_emulator, CREATE_INTENT)
    await emulator_faults(
        stripe_emulator,
        method="POST",
        path="^/v1/payment_intents$",
        delay=delay,
        after=True,  # Stripe does the work after the delay ...
        status=0,  # ... and the answer is lost (nobody is left to read it anyway)
    )
    try:
        # Both started up front, so the retry's timing does not depend on start-up time.
        with servers(settings, tmp_path, count=2, IDEMPOTENCY_LOCK_SECONDS="1") as (
            victim,
            successor,
        ):
            async with httpx.AsyncClient(timeout=30.0) as http:
                pending = asyncio.ensure_future(
                    http.post(f"{victim.url}{PROCESS}", json=body, headers=headers)
                )

                async def in_flight() -> bool:
                    if pending.done():
                        raise AssertionError(f"answered early: {pending.result().text}")
                    return await emulator_count(stripe_emulator, CREATE_INTENT) > before

                await wait_for(in_flight, timeout=20.0, what="the PaymentIntent call")
                in_flight_at = time.monotonic()
                victim.kill()
                with pytest.raises(httpx.TransportError):
                    await pending
                assert victim.proc.returncode == -signal.SIGKILL

                (payment,) = await payments_of(pg_url, buyer.id)
                assert payment["status"] == "processing"
                (held,) = await keys_of(pg_url, buyer.id)
                assert (held["recovery_point"], held["response_status"]) == (
                    "payment_created",
                    None,
                )

                if not retry_while_stripe_works:

                    async def charged() -> bool:
                        return len(await emulator_intents_for(stripe_emulator, buyer.id)) == 1

                    await wait_for(charged, timeout=delay + 10, what="Stripe to do the late call")
                # The successor waits for the dead request's lock (1 s) to expire, then resumes.
                again = await http.post(f"{successor.url}{PROCESS}", json=body, headers=headers)
                answered_at = time.monotonic()
                replay = await http.post(f"{successor.url}{PROCESS}", json=body, headers=headers)
            logs = successor.output()
    finally:
        await emulator_clear_faults(stripe_emulator)

    assert again.status_code == 201, (again.text, logs)
    assert again.json()["id"] == payment["id"]
    assert again.json()["status"] == "succeeded"
    assert again.json()["amount"] == 4200
    assert "idempotent-replayed" not in again.headers
    assert replay.content == again.content
    assert replay.headers["idempotent-replayed"] == "true"
    if retry_while_stripe_works:
        # The retry charged before Stripe got to the killed call; let that call finish now:
        # with the same Stripe idempotency key it must be a replay, not a second charge.
        assert answered_at < in_flight_at + delay, "the retry came too late for this case"
        await asyncio.sleep(max(0.0, in_flight_at + delay + 0.5 - time.monotonic()))
    intents = await emulator_intents_for(stripe_emulator, buyer.id)
    assert [i["id"] for i in intents] == [again.json()["stripe_payment_intent_id"]]
    assert intents[0]["status"] == "succeeded"
    assert intents[0]["amount"] == 4200
    (payment_row,) = await payments_of(pg_url, buyer.id)
    assert payment_row["status"] == "succeeded"
