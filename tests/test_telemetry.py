"""Traces (OpenTelemetry, official instrumentations) into an in-memory exporter: a payment's
request span carries the request id and the payment id, and has the SQL statements and the
Stripe calls beneath it; a job run is a span with its payment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from azora_payments import telemetry
from tests.conftest import app_client, bearer, emulator_settings, make_token, open_services
from tests.test_payments import payment_body


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert telemetry.setup(exporter=exporter) is not None
    try:
        yield exporter
    finally:
        telemetry.shutdown()


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.ENDPOINT_ENV, raising=False)
    assert telemetry.setup() is None
    assert not telemetry.enabled()
    telemetry.annotate(payment_id="pay_x")  # a no-op span: nothing to do, nothing raised
    with telemetry.job_span("receipt.issue", 1, 1, {}):
        pass


def test_an_endpoint_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.ENDPOINT_ENV, "http://127.0.0.1:9")
    try:
        provider = telemetry.setup()
        assert provider is not None
        assert telemetry.setup() is provider  # once per process
    finally:
        telemetry.shutdown()
    assert not telemetry.enabled()


async def test_a_payment_is_traced_with_its_request_id_and_payment_id(
    spans: InMemorySpanExporter,
    sqlite_database_url: str,
    tmp_path: Path,
    stripe_emulator: str,
) -> None:
    settings = emulator_settings(sqlite_database_url, tmp_path, stripe_emulator)
    async with app_client(settings) as http:
        response = await http.post(
            "/api/payments/process",
            json=payment_body(),
            headers={
                **bearer(make_token("user_traced")),
                "Idempotency-Key": uuid.uuid4().hex,
                "X-Request-Id": "trace-me-42",
            },
        )
    assert response.status_code == 201, response.text
    payment_id = response.json()["id"]
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.name == "POST /api/payments/process"]
    assert server.attributes is not None
    assert server.attributes[telemetry.REQUEST_ID] == "trace-me-42"
    assert server.attributes[telemetry.PAYMENT_ID] == payment_id
    trace_id = server.context.trace_id
    same_trace = [s for s in finished if s.context.trace_id == trace_id]
    sql = [s for s in same_trace if (s.attributes or {}).get("db.system") == "sqlite"]
    stripe_calls = [s for s in same_trace if "/v1/payment_intents" in str(s.attributes)]
    assert sql, "no SQL span under the request"
    assert stripe_calls, "no Stripe call span under the request"


async def test_a_job_run_is_a_span_with_its_payment(
    spans: InMemorySpanExporter, sqlite_database_url: str, tmp_path: Path
) -> None:
    from azora_payments.jobs.registry import get_kind, import_kind_modules
    from azora_payments.jobs.worker import Worker, WorkerOptions
    from tests.conftest import make_settings
    from tests.receipts.conftest import seed_succeeded

    import_kind_modules()
    settings = make_settings(sqlite_database_url, receipt_storage=str(tmp_path / "receipts"))
    async with open_services(settings) as services:
        payment_id = await seed_succeeded(services)
        worker = Worker(
            services,
            options=WorkerOptions(once=True, poll_seconds=0.02),
            kinds={"receipt.issue": get_kind("receipt.issue")},
        )
        await worker.run()
    (job,) = [s for s in spans.get_finished_spans() if s.name == "job receipt.issue"]
    assert job.attributes is not None
    assert job.attributes[telemetry.PAYMENT_ID] == payment_id
    assert job.attributes["azora.job_attempt"] == 1
