"""SIGTERM on real processes: a server lets the request in flight finish (its Stripe call
included) and exits 0; a worker finishes or releases its jobs (tests/jobs/test_jobs_processes.py
covers the worker: `test_sigterm_lets_the_job_in_hand_finish_and_exits_0`,
`test_sigterm_releases_a_job_that_outlasts_the_grace_period`)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import httpx

from tests.conftest import bearer, emulator_faults, emulator_settings, make_token
from tests.test_payments import payment_body
from tests.test_payments_processes import Server


async def test_sigterm_lets_a_payment_in_flight_finish_then_exits_0(
    sqlite_database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    settings = emulator_settings(sqlite_database_url, tmp_path, stripe_emulator)
    server = Server(settings, tmp_path / "server.log")
    try:
        await asyncio.to_thread(server.wait_ready)
        # Stripe takes 2 s to create the PaymentIntent: the payment is in flight when the
        # server is told to stop.
        await emulator_faults(
            stripe_emulator, method="POST", path="^/v1/payment_intents$", status=200, delay=2.0
        )
        headers = {**bearer(make_token("user_sigterm")), "Idempotency-Key": uuid.uuid4().hex}
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            paying = asyncio.create_task(
                http.post("/api/payments/process", json=payment_body(), headers=headers)
            )
            await asyncio.sleep(1.0)
            server.proc.send_signal(signal.SIGTERM)
            response = await paying
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "succeeded"
        code = await asyncio.to_thread(server.proc.wait, 30)
        # uvicorn exits 0, or re-raises the SIGTERM it handled once it has shut down (-15).
        assert code in (0, -signal.SIGTERM), server.output()
    finally:
        server.stop()
