"""Final means final, through real `azora-payments serve` and `reconcile` processes, on SQLite
and PostgreSQL (issue 9, item 1).

The double-charge story: Stripe unreachable (503) -> reconciliation gives up on the payment ->
the client retries the same key, as the 503 told it to: no new PaymentIntent, and the final
`409 payment_failed` is replayed. And its mirror: Stripe charged but our request died before
recording it, while Stripe's search still lags -> reconciliation finds it by the customer's
intents and marks it succeeded, never failed. Beside the in-process property test
(test_final_means_final.py), a few schedules where a process is SIGKILLed at a recovery point.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from azora_payments.config import Settings
from azora_payments.devstack.processes import run_command
from tests.conftest import (
    emulator_clear_faults,
    emulator_faults,
    emulator_intents_for,
    server_env,
)
from tests.test_payments import payment_body
from tests.test_payments_processes import (
    CREATE_INTENT,
    PROCESS,
    Buyer,
    emulator_count,
    keys_of,
    payments_of,
    process_settings,
    servers,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FAST = {"IDEMPOTENCY_LOCK_SECONDS": "1"}
PAST_THRESHOLDS = 1.2  # seconds: past the lock (1 s) and the reconciliation threshold (1 s)


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """An emulator for this module alone: reconciliation lists its every event."""
    from azora_payments.devstack.emulator import EmulatorProcess

    with EmulatorProcess(webhook_delay=0.0) as running:
        yield running.base_url


def reconcile_process(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    """One `azora-payments reconcile` pass in its own process."""
    return run_command(
        ["reconcile"],
        server_env(settings, RECONCILE_AFTER_SECONDS="1", **FAST, **env),
        timeout=120,
    )


async def events_unlisted(base_url: str) -> None:
    """Stripe's event list fails for now, so reconciliation cannot learn the outcome from the
    events and must find the intent itself (cleared with the other faults)."""
    await emulator_faults(base_url, method="GET", path="^/v1/events$", status=500, times=1000)


async def search_lag(base_url: str, seconds: float) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(f"{base_url}/_azora/search", json={"lag": seconds})).raise_for_status()


async def stripe_unreachable_503(
    server_url: str, emulator: str, body: dict[str, Any], headers: dict[str, str]
) -> str:
    """Stripe down for every try of the gateway: the 503 with the payment's id."""
    await emulator_faults(
        emulator, method="POST", path="^/v1/payment_intents$", status=503, times=2
    )
    try:
        async with httpx.AsyncClient(timeout=30.0) as http:
            down = await http.post(f"{server_url}{PROCESS}", json=body, headers=headers)
    finally:
        await emulator_clear_faults(emulator)
    assert down.status_code == 503, down.text
    assert down.json()["retryable"] is True
    return str(down.json()["payment_id"])


async def die_after_stripe(
    settings: Settings, tmp_path: Path, body: dict[str, Any], headers: dict[str, str]
) -> None:
    """A server SIGKILLed right after Stripe charged, before anything of it was recorded."""
    with servers(settings, tmp_path, AZORA_CRASH_AT="payment.after_stripe", **FAST) as (doomed,):
        with pytest.raises(httpx.TransportError):
            await post(doomed.url, body, headers)
        assert doomed.proc.wait(10) == -signal.SIGKILL


async def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30.0) as http:
        return await http.post(f"{url}{PROCESS}", json=body, headers=headers)


async def test_503_reconcile_retry_never_charges_and_replays_the_final_answer(
    database_url: str, emulator: str, tmp_path: Path
) -> None:
    settings = process_settings(database_url, emulator, tmp_path)
    buyer = Buyer()
    headers = buyer.with_key(uuid.uuid4().hex)
    body = payment_body()
    with servers(settings, tmp_path, **FAST) as (server,):
        payment_id = await stripe_unreachable_503(server.url, emulator, body, headers)
        await asyncio.sleep(PAST_THRESHOLDS)
        passed = reconcile_process(settings)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert f"{payment_id}: processing -> failed" in passed.stdout, passed.stdout

        intents_before = await emulator_count(emulator, CREATE_INTENT)
        again = await post(server.url, body, headers)
        replay = await post(server.url, body, headers)
        logs = server.output()

    assert again.status_code == 409, (again.text, logs)
    problem = again.json()
    assert problem["code"] == "payment_failed"
    assert (problem["payment_id"], problem["retryable"]) == (payment_id, False)
    assert problem["failure"]["code"] == "stripe_unreachable"
    assert again.headers["idempotent-replayed"] == "true"  # reconciliation's stored answer
    assert replay.content == again.content
    # No charge was started for it: no PaymentIntent call at all, none at Stripe.
    assert await emulator_count(emulator, CREATE_INTENT) == intents_before
    assert await emulator_intents_for(emulator, buyer.id) == []
    (payment,) = await payments_of(database_url, buyer.id)
    assert (payment["id"], payment["status"]) == (payment_id, "failed")
    (key,) = await keys_of(database_url, buyer.id)
    assert (key["recovery_point"], key["response_status"]) == ("finished", 409)
    assert key["response_body"] == again.text


async def test_charged_but_never_recorded_is_found_and_succeeds(
    database_url: str, emulator: str, tmp_path: Path
) -> None:
    """The request dies (SIGKILL) right after Stripe charged; Stripe's search does not see the
    intent yet: the customer's intents do. Succeeded, never failed, and the key answers 201."""
    settings = process_settings(database_url, emulator, tmp_path)
    buyer = Buyer()
    headers = buyer.with_key(uuid.uuid4().hex)
    body = payment_body(amount=3100)
    await search_lag(emulator, 3600)
    try:
        await die_after_stripe(settings, tmp_path, body, headers)
        (charged,) = await emulator_intents_for(emulator, buyer.id)
        assert charged["status"] == "succeeded"
        await asyncio.sleep(PAST_THRESHOLDS)
        await events_unlisted(emulator)
        passed = reconcile_process(settings)
    finally:
        await search_lag(emulator, 0)
        await emulator_clear_faults(emulator)
    assert "Stripe unavailable while listing events" in passed.stdout, passed.stdout
    (payment,) = await payments_of(database_url, buyer.id)
    assert f"{payment['id']}: processing -> succeeded" in passed.stdout, passed.stdout
    assert (payment["status"], payment["stripe_payment_intent_id"]) == ("succeeded", charged["id"])
    (key,) = await keys_of(database_url, buyer.id)
    assert (key["recovery_point"], key["response_status"]) == ("finished", 201)

    with servers(settings, tmp_path, **FAST) as (healthy,):
        again = await post(healthy.url, body, headers)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert (again.json()["status"], again.json()["stripe_payment_intent_id"]) == (
        "succeeded",
        charged["id"],
    )
    assert [i["id"] for i in await emulator_intents_for(emulator, buyer.id)] == [charged["id"]]
    assert "payment.failed" not in await audit_actions(database_url, payment["id"])


async def audit_actions(database_url: str, payment_id: str) -> list[str]:
    from tests.test_payments_processes import rows

    found = await rows(
        database_url, "SELECT action FROM audit_log WHERE payment_id = :p", p=payment_id
    )
    return [str(r["action"]) for r in found]


# ---------------------------------------------------------------- SIGKILL schedules


SCHEDULES = {
    # 503, reconciliation dies holding the key; the retry (after the lock) charges: it was never
    # reported failed, so charging is right. A later pass changes nothing.
    "reconcile-killed-then-retry-charges": ("down", "reconcile.key_taken", "retry", "succeeded"),
    # 503, reconciliation dies after asking Stripe; the next pass gives up; the retry replays.
    "reconcile-killed-then-gives-up": ("down", "reconcile.after_asking", "reconcile", "failed"),
    # Charged, the request died; reconciliation dies after asking; the retry finishes it.
    "charged-reconcile-killed-then-retry": (
        "charged",
        "reconcile.after_asking",
        "retry",
        "succeeded",
    ),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES), ids=list(SCHEDULES))
async def test_sigkill_schedules(
    database_url: str, emulator: str, tmp_path: Path, schedule: str
) -> None:
    start, killed_at, then, final = SCHEDULES[schedule]
    settings = process_settings(database_url, emulator, tmp_path)
    buyer = Buyer()
    headers = buyer.with_key(uuid.uuid4().hex)
    body = payment_body(amount=2600)
    answers: list[httpx.Response] = []
    with servers(settings, tmp_path, **FAST) as (server,):
        if start == "down":
            await stripe_unreachable_503(server.url, emulator, body, headers)
        else:
            await die_after_stripe(settings, tmp_path, body, headers)
        await asyncio.sleep(PAST_THRESHOLDS)
        await events_unlisted(emulator)
        try:
            dying = reconcile_process(settings, AZORA_CRASH_AT=killed_at)
            assert dying.returncode == -signal.SIGKILL, dying.stdout + dying.stderr
            await asyncio.sleep(PAST_THRESHOLDS)  # the dead pass's lock on the key expires
            if then == "retry":
                answers.append(await post(server.url, body, headers))
            passed = reconcile_process(settings)
        finally:
            await emulator_clear_faults(emulator)
        assert not passed.stderr.strip() or "Traceback" not in passed.stderr, passed.stderr
        answers.append(await post(server.url, body, headers))
        answers.append(await post(server.url, body, headers))

    (payment,) = await payments_of(database_url, buyer.id)
    assert payment["status"] == final
    intents = await emulator_intents_for(emulator, buyer.id)
    if final == "succeeded":
        assert [i["id"] for i in intents] == [payment["stripe_payment_intent_id"]]
        assert {a.status_code for a in answers} == {201}
        assert {a.json()["status"] for a in answers} == {"succeeded"}
        assert "payment.failed" not in await audit_actions(database_url, payment["id"])
    else:
        assert intents == []
        assert {a.status_code for a in answers} == {409}
        assert {a.json()["code"] for a in answers} == {"payment_failed"}
    # Every answer after the first final one is its replay, byte for byte.
    assert len({a.content for a in answers[-2:]}) == 1
    assert all(a.headers.get("idempotent-replayed") == "true" for a in answers[-2:])
