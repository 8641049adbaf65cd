"""A modest load on the stack (payments with unique keys, refunds, signed webhooks) from clients
that behave as the API asks: a `503` or a `409` is retried after its `Retry-After` with the
same `Idempotency-Key`, a server that does not answer is replaced by another. Everything the
clients saw is tallied, and `check_invariants` compares it with the database, the emulator
and the SMTP server's inbox."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from tests.conftest import STRIPE_KEY, bearer, make_token
from tests.webhooks.conftest import WEBHOOK_PATH, sign

# A request is given this long to reach a final answer through retries, however slow the machine.
FINAL_WITHIN_SECONDS = 120.0
OPERATOR = bearer(make_token("ops_faults", roles=["admin"], lifetime=3600))


@dataclass
class Paid:
    user_id: str
    key: str
    status: int
    payment: dict[str, Any]


@dataclass
class Tally:
    """What the clients saw during one scenario."""

    name: str
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    paid: list[Paid] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    fault_at: float | None = None
    healed_at: float | None = None
    recovered_at: float | None = None
    # Servers may be killed in this scenario: a request may then go unanswered (and is retried).
    drops_allowed: bool = False
    # The database is stopped in this scenario: API.md answers a webhook that cannot be
    # recorded with 500, so that Stripe delivers it again (counted apart, and re-delivered).
    webhook_500_allowed: bool = False

    def saw(self, kind: str, response: httpx.Response | None, started: float) -> bool:
        """Count one answer; True if it is final (not to be retried)."""
        if response is None:
            self.answers["no answer"] += 1
            if not self.drops_allowed:
                self.failures.append(f"{kind}: no answer from a server that was not killed")
            return False
        status = response.status_code
        if (
            kind == "webhook"
            and status == 500
            and self.webhook_500_allowed
            and "could not be recorded" in response.text
        ):
            self.answers["webhook 500, re-delivered"] += 1
            return False
        self.answers[str(status)] += 1
        retry_after = response.headers.get("retry-after")
        if status in (503, 409) and retry_after is not None and int(retry_after) > 0:
            return False
        if status >= 500 or status == 503:
            self.failures.append(f"{kind}: {status} {response.text[:300]}")
            return True
        if (
            status < 300
            and self.healed_at is not None
            and self.recovered_at is None
            and started >= self.healed_at
        ):
            self.recovered_at = time.monotonic()
        return True

    @property
    def requests(self) -> int:
        return sum(self.answers.values())

    @property
    def recovery_seconds(self) -> float | None:
        if self.healed_at is None or self.recovered_at is None:
            return None
        return self.recovered_at - self.healed_at

    def p99(self) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Load:
    """`run()` until `stop()`: `payers` clients paying, one refunding, one replaying webhooks."""

    def __init__(self, servers: list[str], stripe_url: str, tally: Tally, *, payers: int = 3):
        self.servers = servers
        self.stripe_url = stripe_url
        self.tally = tally
        self.payers = payers
        self._stop = asyncio.Event()
        self._rr = itertools.count()
        self._refundable: list[str] = []

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
            tasks = [self._payer(http) for _ in range(self.payers)]
            tasks += [self._refunder(http), self._webhooks(http)]
            await asyncio.gather(*tasks)

    def _server(self) -> str:
        return self.servers[next(self._rr) % len(self.servers)]

    async def _until_final(
        self, http: httpx.AsyncClient, kind: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request, retried as a client should until it has a final answer."""
        deadline = time.monotonic() + FINAL_WITHIN_SECONDS
        first = time.monotonic()
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response: httpx.Response | None = await http.request(
                    method, self._server() + path, **kwargs
                )
            except httpx.TransportError:
                response = None
            if self.tally.saw(kind, response, started):
                assert response is not None
                self.tally.latencies.append(time.monotonic() - first)
                return response
            wait = 0.2 if response is None else float(response.headers.get("retry-after", 1))
            await asyncio.sleep(min(wait, 1.0) * random.uniform(0.5, 1.0))
        self.tally.failures.append(f"{kind}: no final answer within {FINAL_WITHIN_SECONDS:g} s")
        return None

    async def _payer(self, http: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            user = f"user_f{uuid.uuid4().hex[:12]}"
            key = uuid.uuid4().hex
            headers = {
                **bearer(make_token(user, email=f"{user}@shop.example", lifetime=3600)),
                "Idempotency-Key": key,
            }
            body = {
                "amount": 2000,
                "currency": "eur",
                "payment_method_id": "pm_card_visa",
                "description": "Fault suite",
            }
            response = await self._until_final(
                http, "payment", "POST", "/api/payments/process", json=body, headers=headers
            )
            if response is not None:
                payment = response.json() if response.status_code < 300 else {}
                self.tally.paid.append(Paid(user, key, response.status_code, payment))
                if payment.get("status") == "succeeded":
                    self._refundable.append(payment["id"])
            await asyncio.sleep(0.05)

    async def _refunder(self, http: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            if not self._refundable:
                await asyncio.sleep(0.2)
                continue
            payment_id = self._refundable.pop(0)
            headers = {**OPERATOR, "Idempotency-Key": uuid.uuid4().hex}
            response = await self._until_final(
                http,
                "refund",
                "POST",
                "/api/payments/refund",
                json={"payment_id": payment_id, "amount": 500},
                headers=headers,
            )
            if response is not None and response.status_code < 300:
                self.tally.refunds.append(response.json())
            await asyncio.sleep(0.5)

    async def _webhooks(self, http: httpx.AsyncClient) -> None:
        """Stripe's events, fetched from the emulator and delivered (some twice) signed."""
        auth = {"Authorization": f"Bearer {STRIPE_KEY}"}
        while not self._stop.is_set():
            await asyncio.sleep(0.5)
            try:
                page = await http.get(f"{self.stripe_url}/v1/events?limit=5", headers=auth)
                events = page.json()["data"]
            except (httpx.HTTPError, ValueError, KeyError):
                continue
            for event in events:
                body = json.dumps(event).encode()
                headers = {"Stripe-Signature": sign(body), "Content-Type": "application/json"}
                response = await self._until_final(
                    http, "webhook", "POST", WEBHOOK_PATH, content=body, headers=headers
                )
                if response is not None and response.status_code == 200:
                    self.tally.acknowledged.add(event["id"])


# ---------------------------------------------------------------- the invariants


@dataclass
class Snapshot:
    """What the inbox held when a scenario began, to judge its share of e-mails."""

    copies: Counter[str] = field(default_factory=Counter)


def message_counts(messages: list[Any]) -> Counter[str]:
    return Counter(str(message["Message-ID"]) for message in messages)


async def rows(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def bring_forward(url: str) -> None:
    """Make the jobs waiting out a retry backoff due now: time passing, without the wait."""
    await rows(
        url,
        "UPDATE jobs SET run_at = now() WHERE status = 'ready' AND run_at > now() "
        "AND (unique_key IS NULL OR unique_key NOT LIKE 'schedule:%')",
    )


async def settle(url: str, *, timeout: float) -> float:
    """Wait until every job due is done and every receipt/refund e-mail is recorded."""
    started = time.monotonic()
    while True:
        await bring_forward(url)
        (state,) = await rows(
            url,
            "SELECT"
            " (SELECT count(*) FROM jobs WHERE status = 'running' OR (status = 'ready'"
            "   AND (unique_key IS NULL OR unique_key NOT LIKE 'schedule:%'))) AS busy,"
            " (SELECT count(*) FROM payments p WHERE p.status = 'succeeded' AND NOT EXISTS"
            "   (SELECT 1 FROM receipts r WHERE r.payment_id = p.id)) AS unreceipted,"
            " (SELECT count(*) FROM receipts WHERE emailed_at IS NULL) AS unmailed,"
            " (SELECT count(*) FROM refunds WHERE status = 'succeeded'"
            "   AND emailed_at IS NULL) AS refunds_unmailed,"
            " (SELECT count(*) FROM webhook_events WHERE status = 'received') AS unapplied",
        )
        if not any(state.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"the stack did not settle in {timeout:g} s: {dict(state)}")
        await asyncio.sleep(0.5)


async def emulator_intents(stripe_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    # The emulator serialises every page on one event loop that the settling stack still
    # shares; on a loaded 2-core CI machine a page of 100 took longer than httpx's default 5 s.
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {STRIPE_KEY}"}, timeout=httpx.Timeout(60.0, connect=5.0)
    ) as http:
        while True:
            page = (await http.get(f"{stripe_url}/v1/payment_intents", params=params)).json()
            found += page["data"]
            if not page.get("has_more") or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]


@dataclass
class Figures:
    scenario: str
    requests: int
    answers: dict[str, int]
    failures: int
    recovery_seconds: float | None
    settle_seconds: float
    payments: int
    intents: int
    succeeded: int
    receipts: int
    webhooks_acknowledged: int
    refunds: int
    emails: int
    extra_copies: int
    kills: int
    p99_seconds: float

    def line(self) -> str:
        recovery = "n/a" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f} s"
        return (
            f"FAULTS {self.scenario}: requests={self.requests} answers={self.answers} "
            f"503={self.answers.get('503', 0)} 500={self.answers.get('500', 0)} "
            f"failures={self.failures} recovery={recovery} settled_in={self.settle_seconds:.1f} s "
            f"payments={self.payments} intents={self.intents} succeeded={self.succeeded} "
            f"receipts={self.receipts} refunds={self.refunds} "
            f"webhooks_acked={self.webhooks_acknowledged} emails={self.emails} "
            f"extra_copies={self.extra_copies} kills={self.kills} p99={self.p99_seconds:.2f} s"
        )


async def check_invariants(
    *,
    tally: Tally,
    database_url: str,
    stripe_url: str,
    inbox: Callable[[], list[Any]],
    before: Snapshot,
    kills: int,
    settle_timeout: float = 240.0,
) -> Figures:
    """Assert every promise for what this scenario's clients did; return its figures."""
    print(
        f"FAULTS {tally.name} (clients): requests={tally.requests} answers={dict(tally.answers)}"
        f" failures={len(tally.failures)} recovery={tally.recovery_seconds}"
    )
    settled = await settle(database_url, timeout=settle_timeout)
    assert not tally.failures, "\n".join(tally.failures[:20])

    # Same-key retries: one payment per key, one PaymentIntent per payment.
    users = [p.user_id for p in tally.paid]
    payments = await rows(
        database_url,
        "SELECT id, user_id, status, stripe_payment_intent_id FROM payments"
        " WHERE user_id = ANY($1::text[])",
        users,
    )
    by_user = Counter(row["user_id"] for row in payments)
    assert all(by_user[user] == 1 for user in users), "a key made more (or less) than one payment"
    answered = {p.payment["id"]: p.payment["status"] for p in tally.paid if p.payment}
    stored = {row["id"]: row["status"] for row in payments}
    for payment_id, status in answered.items():
        assert stored.get(payment_id) is not None, f"answered payment {payment_id} not stored"
        if status == "succeeded":
            assert stored[payment_id] == "succeeded", payment_id
    intents = [
        pi
        for pi in await emulator_intents(stripe_url)
        if pi.get("metadata", {}).get("azora_user_id") in set(users)
    ]
    per_user = Counter(pi["metadata"]["azora_user_id"] for pi in intents)
    assert all(count == 1 for count in per_user.values()), "a payment made two PaymentIntents"
    assert set(per_user) == set(users), "a payment without its PaymentIntent"
    stored_pis = {row["stripe_payment_intent_id"] for row in payments}
    assert {pi["id"] for pi in intents} == stored_pis

    # Every acknowledged webhook applied once (one event row, settled, by one job that is done).
    acked = sorted(tally.acknowledged)
    events = await rows(
        database_url,
        "SELECT e.id, e.status, count(j.id) AS jobs, bool_and(j.status = 'done') AS done"
        " FROM webhook_events e LEFT JOIN jobs j ON j.unique_key = e.id"
        " WHERE e.id = ANY($1::text[]) GROUP BY e.id, e.status",
        acked,
    )
    assert len(events) == len(acked), "an acknowledged webhook was not recorded"
    for row in events:
        assert row["status"] in ("applied", "ignored"), dict(row)
        assert row["jobs"] == 1, dict(row)
        assert row["done"], dict(row)

    # Every succeeded payment has exactly one receipt; nothing else has one.
    receipts = await rows(
        database_url,
        "SELECT r.id, r.payment_id, p.status, r.emailed_at FROM receipts r"
        " JOIN payments p ON p.id = r.payment_id WHERE p.user_id = ANY($1::text[])",
        users,
    )
    succeeded = {row["id"] for row in payments if row["status"] == "succeeded"}
    receipt_of = Counter(row["payment_id"] for row in receipts)
    assert set(receipt_of) == succeeded, "a succeeded payment without a receipt, or a receipt extra"
    assert all(count == 1 for count in receipt_of.values()), "a payment with two receipts"

    # No job lost: none dead, none left running or due. A scheduled job may have started its
    # slot since the stack settled (CI saw one): running is fine for it while its lease holds.
    (jobs,) = await rows(
        database_url,
        "SELECT count(*) FILTER (WHERE status = 'dead') AS dead,"
        " count(*) FILTER (WHERE status = 'running' AND (unique_key IS NULL"
        "   OR unique_key NOT LIKE 'schedule:%' OR locked_until < now())) AS running FROM jobs",
    )
    assert jobs["dead"] == 0, "a job died"
    assert jobs["running"] == 0, "a job was left running"

    # E-mails: one per receipt and per succeeded refund; with workers killed, a second copy
    # only with the same Message-ID, and never more extra copies than kills.
    refund_rows = await rows(
        database_url,
        "SELECT f.id FROM refunds f JOIN payments p ON p.id = f.payment_id"
        " WHERE f.status = 'succeeded' AND p.user_id = ANY($1::text[])",
        users,
    )
    domain = "shop.example"
    expected = {f"<{row['id']}.issued@{domain}>" for row in receipts}
    expected |= {f"<{row['id']}.refunded@{domain}>" for row in refund_rows}
    now = message_counts(inbox())  # read once the stack has settled
    copies = Counter({mid: now[mid] - before.copies.get(mid, 0) for mid in now})
    copies = +copies
    missing = expected - set(copies)
    assert not missing, f"{len(missing)} e-mails never sent, e.g. {sorted(missing)[:3]}"
    extra = sum(count - 1 for count in copies.values())
    strangers = set(copies) - expected
    assert not strangers, f"e-mails nobody asked for: {sorted(strangers)[:3]}"
    assert extra <= kills, f"{extra} extra copies for {kills} killed workers"

    figures = Figures(
        scenario=tally.name,
        requests=tally.requests,
        answers=dict(tally.answers),
        failures=len(tally.failures),
        recovery_seconds=tally.recovery_seconds,
        settle_seconds=settled,
        payments=len(payments),
        intents=len(intents),
        succeeded=len(succeeded),
        receipts=len(receipts),
        webhooks_acknowledged=len(acked),
        refunds=len(refund_rows),
        emails=sum(copies.values()),
        extra_copies=extra,
        kills=kills,
        p99_seconds=tally.p99(),
    )
    return figures
