"""Receipts kept in an S3-compatible bucket: a real S3 HTTP server (moto's server mode, its own
process on a free port), reached through obstore with the usual AWS_* settings. Write, read
back, versions, a missing bucket refused at start-up in one line, and the store down: the job
retried, nothing lost."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from sqlalchemy import select, update

from azora_payments.config import Settings
from azora_payments.db.models import Job, Receipt
from azora_payments.db.repositories import receipts as receipts_repo
from azora_payments.db.types import utcnow
from azora_payments.domain import receipts
from azora_payments.services import Services
from azora_payments.storage import S3Storage, StorageUnavailable, parse_s3_url
from tests.conftest import (
    asgi_client,
    bearer,
    free_port,
    make_settings,
    make_token,
    open_services,
    server_env,
)
from tests.receipts.conftest import SmtpServer, pay, pdf_text, run_receipt_jobs, seed_succeeded

BUCKET = "azora-receipts"
PREFIX = "eu/prod"
OPERATOR = bearer(make_token("ops_1", roles=["admin"], lifetime=6 * 3600))


class MotoServer:
    """moto's S3 in server mode, in its own process; stop() and start() again on the same
    port model the store going down and coming back (empty: moto keeps state in memory)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, bucket: str | None = BUCKET) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.endpoint + "/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        if bucket:
            self.client().create_bucket(Bucket=bucket)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=BUCKET)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        data: bytes = self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return data


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    for name, value in {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()


@pytest.fixture
def s3_settings(receipt_settings: Settings, moto: MotoServer) -> Settings:
    return receipt_settings.model_copy(update={"receipt_storage": f"s3://{BUCKET}/{PREFIX}"})


@pytest.fixture
async def s3_services(s3_settings: Settings) -> AsyncIterator[Services]:
    async with open_services(s3_settings) as svc:
        assert isinstance(svc.storage, S3Storage)
        yield svc


async def test_storage_writes_reads_back_and_checks_the_bucket(moto: MotoServer) -> None:
    storage = S3Storage(parse_s3_url(f"s3://{BUCKET}/{PREFIX}"))
    await storage.check()
    await storage.put("receipts/2026/R-1/v1.pdf", b"%PDF-one")
    assert await storage.get("receipts/2026/R-1/v1.pdf") == b"%PDF-one"
    assert await storage.get("receipts/2026/R-1/v9.pdf") is None
    assert moto.keys() == [f"{PREFIX}/receipts/2026/R-1/v1.pdf"]
    missing = S3Storage(parse_s3_url("s3://no-such-bucket"))
    with pytest.raises(StorageUnavailable, match=r"bucket 'no-such-bucket' does not exist"):
        await missing.check()
    moto.stop()
    with pytest.raises(StorageUnavailable, match=r"unavailable"):
        await storage.get("receipts/2026/R-1/v1.pdf")


async def test_versions_in_the_bucket_end_to_end(
    s3_settings: Settings, s3_services: Services, moto: MotoServer, smtp: SmtpServer
) -> None:
    async with asgi_client(s3_settings, s3_services) as api:
        user = "user_s3"
        headers = bearer(make_token(user))
        paid = await pay(api, user)
        await run_receipt_jobs(s3_services)
        receipt = (await api.get(f"/api/payments/{paid['id']}/receipt", headers=headers)).json()
        year = receipt["number"].split("-")[1]
        base = f"{PREFIX}/receipts/{year}/{receipt['number']}"
        assert moto.keys() == [f"{base}/v1.pdf"]
        first = await api.get(receipt["pdf_url"], headers=headers)
        assert first.headers["x-receipt-version"] == "1"
        assert first.content == moto.read(f"{base}/v1.pdf")
        # The e-mail attached the stored version.
        [message] = smtp.inbox.messages
        [attachment] = list(message.iter_attachments())
        assert attachment.get_content() == first.content

        refund = await api.post(
            "/api/payments/refund",
            json={"payment_id": paid["id"], "amount": 2500},
            headers={**OPERATOR, "Idempotency-Key": "rf-s3-" + paid["id"]},
        )
        assert refund.status_code == 201, refund.text
        await run_receipt_jobs(s3_services, receipts.RENDER)
        assert moto.keys() == [f"{base}/v1.pdf", f"{base}/v2.pdf"]
        second = await api.get(receipt["pdf_url"], headers=headers)
        assert second.headers["x-receipt-version"] == "2"
        assert second.content == moto.read(f"{base}/v2.pdf")
        assert "REFUNDED" in pdf_text(second.content)
        assert "Net paid €0.00" in pdf_text(second.content)
        assert "Refund" not in pdf_text(moto.read(f"{base}/v1.pdf"))


async def test_the_store_down_delays_the_receipt_and_loses_nothing(
    s3_services: Services, moto: MotoServer, smtp: SmtpServer
) -> None:
    moto.stop()
    payment_id = await seed_succeeded(s3_services)
    await run_receipt_jobs(s3_services, receipts.ISSUE)
    async with s3_services.db.read() as session:
        job = await session.scalar(select(Job).where(Job.kind == receipts.ISSUE))
        receipt = await session.scalar(select(Receipt).where(Receipt.payment_id == payment_id))
    assert job is not None
    assert receipt is not None
    assert (job.status, job.attempts) == ("ready", 1)  # failed, to be tried again
    assert job.last_error is not None
    assert "unavailable" in job.last_error
    assert receipt.pdf_key is None  # numbered, not yet stored

    moto.start()
    async with s3_services.db.transaction() as session:
        await session.execute(update(Job).where(Job.kind == receipts.ISSUE).values(run_at=utcnow()))
    await run_receipt_jobs(s3_services)
    async with s3_services.db.read() as session:
        versions = await receipts_repo.versions_of(session, receipt.id)
    assert [v.version for v in versions] == [1]
    assert moto.keys() == [f"{PREFIX}/{versions[0].storage_key}"]
    [message] = smtp.inbox.messages
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content() == moto.read(f"{PREFIX}/{versions[0].storage_key}")


def test_a_missing_bucket_stops_start_up_in_one_line(
    sqlite_template: Path, tmp_path: Path, moto: MotoServer
) -> None:
    db = tmp_path / "s3.db"
    shutil.copy(sqlite_template, db)
    settings = make_settings(f"sqlite:///{db}", receipt_storage="s3://no-such-bucket/receipts")
    env = {**server_env(settings), "AWS_ENDPOINT_URL": moto.endpoint}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for command in (["worker", "--once"], ["serve", "--port", str(free_port())]):
        done = subprocess.run(
            [sys.executable, "-m", "azora_payments.cli", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [
            "azora-payments: RECEIPT_STORAGE: bucket 'no-such-bucket' does not exist"
            f" (s3://no-such-bucket at {moto.endpoint})"
        ]
