"""The benchmark's no-op job kind, imported by its worker processes."""

from __future__ import annotations

from typing import Any

from azora_payments.jobs import JobContext, job_kind


@job_kind("bench.noop", max_attempts=3, timeout=30.0)
async def noop(ctx: JobContext, payload: dict[str, Any]) -> None:
    return None
