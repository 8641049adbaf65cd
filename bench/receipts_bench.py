"""Receipt figures: PDFs rendered per second per core (CPU time of one thread, so one core),
for a Latin receipt, the sample "Café crème — ₹ test 東京" (a CJK slice and the Latin faces),
varied CJK descriptions, and every script at once; then the time from a payment's success to
its receipt e-mail arriving at an SMTP server (median, p99) and the worker's CPU per receipt at
several rates, through a real worker process on PostgreSQL with the receipts stored in a
folder. Prints figures; asserts nothing.

    .venv/bin/python bench/receipts_bench.py [--renders 60] [--payments 100] [--rates 5,20,50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from azora_payments.db.migrate import upgrade
from azora_payments.db.models import Payment
from azora_payments.db.session import Database
from azora_payments.db.types import utcnow
from azora_payments.devstack.processes import start_worker
from azora_payments.domain import receipts
from azora_payments.domain.receipt_content import ReceiptDocument
from azora_payments.ids import new_id
from azora_payments.pdf import render_receipt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from machine import ADMIN_URL, admin, cpu_seconds, free_port, header, loadavg  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.receipts.sample import SAMPLE  # noqa: E402

EVERY_SCRIPT = (
    "Café crème · Καλημέρα · Привет · مرحبا بالعالم · שלום · नमस्ते · สวัสดี"
    " · 你好 · こんにちは · 안녕하세요 € £ ¥ ₹ ₩ ₺ ₽ ₪ ₫"
)
# Common ideographs and Hangul from across the CJK blocks: each description touches new slices.
CJK_POOL = "東京大阪名古屋北京上海香港台北首尔서울부산釜山漢字日本語中文한국어學校電話會社銀行"


def rate(docs: list[ReceiptDocument]) -> tuple[float, float]:
    """(PDFs per CPU second of this thread, per wall second)."""
    render_receipt(docs[0])  # fonts read once per thread
    cpu, wall = time.thread_time(), time.perf_counter()
    for doc in docs:
        render_receipt(doc)
    return len(docs) / (time.thread_time() - cpu), len(docs) / (time.perf_counter() - wall)


def renders(count: int) -> None:
    rng = random.Random(12)
    cases = {
        "Latin only": [replace(SAMPLE, description=f"Annual plan #{n}") for n in range(count)],
        "sample (Latin + ₹ + 東京)": [SAMPLE] * count,
        "varied CJK (4 ideographs)": [
            replace(SAMPLE, description="Order " + "".join(rng.sample(CJK_POOL, 4)))
            for _ in range(count)
        ],
        "every script at once": [replace(SAMPLE, description=EVERY_SCRIPT)] * max(count // 3, 5),
    }
    print("PDFs rendered per second, one thread (per core: CPU time; wall: with the load)")
    for name, docs in cases.items():
        per_cpu, per_wall = rate(docs)
        size = len(render_receipt(docs[0]))
        print(
            f"  {name:28} {per_cpu:6.1f} PDFs/s per core   {per_wall:6.1f} wall   "
            f"{1000 / per_cpu:6.1f} ms CPU each   {size / 1024:5.1f} KiB"
        )


class Arrivals:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            self.at[rcpt.split("@")[0]] = time.perf_counter()
        return "250 OK"


async def seed(db: Database, payment_id: str) -> None:
    """A payment turning succeeded, and its receipt queued, in one transaction: what
    `outcomes.payment_status_changed` commits whichever path learnt of the success."""
    now = utcnow()
    payment = Payment(
        id=payment_id,
        user_id="bench",
        status="succeeded",
        amount=2500,
        currency="eur",
        amount_refunded=0,
        metadata_={},
        save_payment_method=False,
        receipt_email=f"{payment_id}@bench.example",
        description="Café crème — ₹ test 東京",
        card_brand="visa",
        card_last4="4242",
        disputed=False,
        created_at=now,
        updated_at=now,
    )
    async with db.transaction() as session:
        session.add(payment)
        await receipts.enqueue_issue(session, payment)


async def e_mail_latency(url: str, *, payments: int, per_second: float) -> float | None:
    """The e-mail wait at `per_second` payments a second; returns the worker's CPU ms per
    receipt (rendered, stored, e-mailed), or None when no e-mail arrived."""
    arrivals = Arrivals()
    port = free_port()
    controller = Controller(arrivals, hostname="127.0.0.1", port=port)
    controller.start()
    db = Database(url, pool_size=4)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "AZORA_ENV": "dev",
            "DATABASE_URL": url,
            "SMTP_URL": f"smtp://127.0.0.1:{port}",
            "RECEIPT_STORAGE": str(Path(tmp) / "receipts"),
            "WORKER_POLL_SECONDS": "0.05",
            "LOG_LEVEL": "INFO",
        }
        worker = start_worker(env, Path(tmp) / "worker.log", args=["--concurrency", "4"])
        cpu_before = cpu_seconds(worker.pid)
        cpu = 0.0
        try:
            committed: dict[str, float] = {}
            for _ in range(payments):
                payment_id = new_id("pay")
                await seed(db, payment_id)
                committed[payment_id] = time.perf_counter()
                await asyncio.sleep(1 / per_second)
            deadline = time.monotonic() + 120
            while len(arrivals.at) < payments and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu = cpu_seconds(worker.pid) - cpu_before
        finally:
            worker.stop()
            controller.stop()
            await db.dispose()
    waits = sorted((arrivals.at[p] - t) * 1000 for p, t in committed.items() if p in arrivals.at)
    print(
        f"payment success -> receipt e-mail received: {payments} payments at {per_second}/s, "
        "one worker process (concurrency 4, polling every 50 ms), PostgreSQL, folder storage"
    )
    if not waits:
        print("  no e-mail arrived")
        return None
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    per_receipt = cpu / len(waits) * 1000
    print(
        f"  {len(waits)}/{payments} arrived; median {statistics.median(waits):.0f} ms, "
        f"p99 {p99:.0f} ms, max {waits[-1]:.0f} ms; worker CPU {per_receipt:.1f} ms per "
        f"receipt; load average {loadavg()}"
    )
    return per_receipt


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=60)
    parser.add_argument("--payments", type=int, default=100)
    parser.add_argument("--rates", default="5,20,50", help="payments per second, one measure each")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    await asyncio.to_thread(header, "receipts")
    await asyncio.to_thread(renders, args.renders)
    name = f"azora_receipts_bench_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        await asyncio.to_thread(upgrade, url)
        costs = [
            (rate, await e_mail_latency(url, payments=args.payments, per_second=rate))
            for rate in rates
        ]
        first = costs[0][1]
        print("# worker CPU ms per receipt by rate (flat is the goal), and against the first rate")
        for rate, cost in costs:
            ratio = f"{cost / first:.2f}" if cost is not None and first else "-"
            shown = f"{cost:.1f}" if cost is not None else "-"
            print(f"  {rate:>6g}/s  {shown:>7} ms  x{ratio}")
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
