"""OpenTelemetry traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set: every request (the official
FastAPI instrumentation), every SQL statement (SQLAlchemy's), every Stripe call (httpx's, which
the stripe SDK uses), every job run; the request id and the payment id on the spans.

Off by default and costless then: `annotate()` only touches the current span, which is a no-op
span when tracing is off. The exporter, sampler and service name follow the standard OTEL_*
environment variables (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS…).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACER = "azora_payments"
# Span attribute names: ours, namespaced, so they never collide with the semantic conventions.
REQUEST_ID = "azora.request_id"
PAYMENT_ID = "azora.payment_id"

_provider: TracerProvider | None = None


def enabled() -> bool:
    return _provider is not None


def setup(*, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Start tracing for this process: with `exporter` (tests), or OTLP over HTTP when
    OTEL_EXPORTER_OTLP_ENDPOINT is set; None (and nothing done) otherwise. Idempotent."""
    global _provider
    if _provider is not None:
        return _provider
    if exporter is None and not os.environ.get(ENDPOINT_ENV):
        return None
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", TRACER)})
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    # Every engine created from now on (`db.session` calls create_async_engine through its
    # module for this) traces its statements.
    # Its metadata says SQLAlchemy < 2.1; the engine events it uses are unchanged in 2.1, and
    # tests/test_telemetry.py proves the spans come.
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    _provider = provider
    logger.info("tracing on: spans are exported over OTLP")
    return provider


def instrument_app(app: FastAPI) -> None:
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_provider, excluded_urls="/healthz,/readyz,/metrics"
    )


def annotate(**attributes: str | int | None) -> None:
    """Put `payment_id=…` (and the like) on the current span, as `azora.payment_id`."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for name, value in attributes.items():
        if value is not None:
            span.set_attribute(f"azora.{name}", value)


@contextmanager
def job_span(kind: str, job_id: int, attempt: int, payload: dict[str, Any]) -> Iterator[None]:
    """A span for one run of a job, with the payment it is about when its payload says."""
    if _provider is None:
        yield
        return
    tracer = _provider.get_tracer(TRACER)
    with tracer.start_as_current_span(f"job {kind}", kind=trace.SpanKind.CONSUMER) as span:
        span.set_attribute("azora.job_id", job_id)
        span.set_attribute("azora.job_kind", kind)
        span.set_attribute("azora.job_attempt", attempt)
        payment_id = payload.get("payment_id")
        if isinstance(payment_id, str):
            span.set_attribute(PAYMENT_ID, payment_id)
        yield


def shutdown() -> None:
    """Flush and stop (tests, and processes on their way out)."""
    global _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    _provider.shutdown()
    _provider = None
