"""What applying webhook events costs, counted rather than timed: SQL statements, transactions
and round trips per applied event, and process CPU per event, for one worker in this process
draining a pre-filled queue of `payment_intent.succeeded` events on a fresh PostgreSQL database.
The counts do not depend on the machine's load; the CPU figure does, a little (cache misses).

    .venv/bin/python bench/apply_counts.py [--events 400] [--batch-sizes 10,25,50]

Run by `webhooks_apply_bench.py` too. A round trip is a statement (an executemany is one: asyncpg
pipelines it), a BEGIN or a COMMIT/ROLLBACK.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from azora_payments.config import load_settings  # noqa: E402
from azora_payments.db.models import WebhookEvent  # noqa: E402
from azora_payments.domain import events  # noqa: E402
from azora_payments.jobs.registry import get_kind, import_kind_modules  # noqa: E402
from azora_payments.jobs.worker import Worker, WorkerOptions  # noqa: E402
from azora_payments.services import Services  # noqa: E402
from webhooks_apply_bench import add_payments  # noqa: E402
from webhooks_bench import database, service_env, signed_event  # noqa: E402


@dataclass(frozen=True, slots=True)
class Counts:
    events: int
    applied: int
    statements: int
    begins: int
    ends: int
    cpu_seconds: float

    def per_event(self, value: float) -> float:
        return value / max(self.applied, 1)

    def line(self, batch_size: int) -> str:
        trips = self.statements + self.begins + self.ends
        return (
            f"batch {batch_size:3d}: {self.applied}/{self.events} applied; per event: "
            f"{self.per_event(self.statements):5.2f} statements, "
            f"{self.per_event(self.begins):5.3f} transactions, "
            f"{self.per_event(trips):5.2f} round trips, "
            f"{self.per_event(self.cpu_seconds) * 1000:5.2f} ms CPU (in process)"
        )


def _event(n: int) -> dict[str, Any]:
    # The bench's own event (a line: signature, tab, JSON), without its signature.
    event: dict[str, Any] = json.loads(signed_event(n, int(time.time())).split("\t", 1)[1])
    return event


async def _drain(url: str, count: int, batch_size: int) -> Counts:
    env = service_env(url)
    settings = load_settings(
        AZORA_ENV="test",
        database_url=url,
        stripe_secret_key=env["STRIPE_SECRET_KEY"],
        stripe_webhook_secret=env["STRIPE_WEBHOOK_SECRET"],
        jwt_secret=env["JWT_SECRET"],
        stripe_api_base=env["STRIPE_API_BASE"],
        receipt_storage="",
    )
    services = Services(settings)
    try:
        async with services.db.transaction() as session:
            for n in range(count):
                await events.record_event(session, _event(n), source="webhook")
        import_kind_modules()
        kind = get_kind(events.APPLY_KIND)
        options = WorkerOptions(once=True, poll_seconds=0.05, **_batch_option(batch_size))
        worker = Worker(services, options=options, kinds={kind.name: kind})
        seen = {"statements": 0, "begins": 0, "ends": 0}

        def on_statement(*_: Any) -> None:
            seen["statements"] += 1

        def on_begin(*_: Any) -> None:
            seen["begins"] += 1

        def on_end(*_: Any) -> None:
            seen["ends"] += 1

        engine = services.db.engine.sync_engine
        listeners = [
            ("before_cursor_execute", on_statement),
            ("begin", on_begin),
            ("commit", on_end),
            ("rollback", on_end),
        ]
        for name, fn in listeners:
            sa_event.listen(engine, name, fn)
        cpu = time.process_time()
        try:
            await worker.run()
        finally:
            cpu = time.process_time() - cpu
            for name, fn in listeners:
                sa_event.remove(engine, name, fn)
        async with services.db.transaction() as session:
            applied = await session.scalar(
                select(func.count()).where(WebhookEvent.status == "applied")
            )
        return Counts(count, int(applied or 0), cpu_seconds=cpu, **seen)
    finally:
        await services.close()


def _batch_option(size: int) -> dict[str, int]:
    # Before `kind_batch_size` (main), the batched kinds' claims took `batch_size`.
    if "kind_batch_size" in WorkerOptions.__dataclass_fields__:
        return {"kind_batch_size": size}
    return {"batch_size": size}


def measure(count: int, batch_size: int) -> Counts:
    with database() as url:
        add_payments(url, count)
        return asyncio.run(_drain(url, count, batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--batch-sizes", default="10,25,50")
    args = parser.parse_args()
    for size in (int(x) for x in args.batch_sizes.split(",")):
        print(measure(args.events, size).line(size))
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
