"""Final means final, as a property over interleavings (issue 9, item 1), in one process.

Hypothesis draws a card and a schedule of steps — the request (first try or retry of the same
key, with Stripe down, Stripe's answer lost, or a crash at a recovery point), a reconciliation
pass (possibly crashing at one of its recovery points), a webhook delivery, the job queue, the
expiry of abandoned 3-D Secure, the customer at Stripe.js — and after every step checks:

- at most one PaymentIntent exists for the payment (so at most one can succeed);
- once the payment was reported `failed` or `canceled` while nothing was charged, nothing is
  ever charged for it later (final means final);
and at the end, once everything is settled: our status is Stripe's truth, and the key answers
the same final answer to every try.

A crash is `faults.crashing_at`: the work stops at the point as if its process died and its
lock expired. Stripe is the emulator (module-scoped, emptied for each example); each example
gets a fresh SQLite database (the rules do not depend on the engine; the process tests cover
PostgreSQL). Real SIGKILLs: test_final_means_final_processes.py.
"""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from azora_payments.db.models import IdempotencyKey, Payment
from azora_payments.db.types import utcnow
from azora_payments.domain import intents, reconcile
from azora_payments.domain.outcomes import CLOSE_INTENT
from azora_payments.faults import SimulatedCrash, crashing_at
from azora_payments.jobs.registry import get_kind, import_kind_modules
from azora_payments.jobs.worker import Worker, WorkerOptions
from azora_payments.services import Services
from tests.conftest import (
    STRIPE_KEY,
    asgi_client,
    bearer,
    emulator_clear_faults,
    emulator_faults,
    emulator_intents_for,
    emulator_settings,
    make_token,
    open_services,
)
from tests.test_payments import payment_body

PROCESS = "/api/payments/process"
CARDS = ("pm_card_visa", "pm_card_chargeDeclined", "pm_card_threeDSecure2Required")
_examples = itertools.count()

REQUEST_FAULTS = st.sampled_from(
    [None, "down", "lost", "payment.before_stripe", "payment.after_stripe"]
)
STEP = st.one_of(
    st.tuples(st.just("request"), REQUEST_FAULTS),
    st.tuples(
        st.just("reconcile"),
        st.sampled_from([None, "reconcile.key_taken", "reconcile.after_asking"]),
    ),
    st.tuples(st.just("webhook"), st.none()),
    st.tuples(st.just("jobs"), st.none()),
    st.tuples(st.just("expire"), st.none()),
    st.tuples(st.just("customer"), st.sampled_from(["authenticate", "other_card"])),
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    from azora_payments.devstack.emulator import EmulatorProcess

    with EmulatorProcess(webhook_delay=0.0) as running:
        yield running.base_url


def crashed(exc: BaseException) -> bool:
    """A simulated crash, possibly wrapped by the ASGI stack's task groups."""
    if isinstance(exc, SimulatedCrash):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(crashed(inner) for inner in exc.exceptions)
    return False


@dataclass
class World:
    """One example: its services and client, the buyer, and what has been seen so far."""

    services: Services
    client: httpx.AsyncClient
    emulator: str
    user: str = field(default_factory=lambda: f"user_{uuid.uuid4().hex[:10]}")
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    body: dict[str, Any] = field(default_factory=dict)
    answers: list[httpx.Response] = field(default_factory=list)
    client_secret: str | None = None
    passes: int = 0
    failed_uncharged: bool = False  # told failed/canceled while Stripe had charged nothing
    log: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {**bearer(make_token(self.user)), "Idempotency-Key": self.key}

    async def request(self, fault: str | None) -> None:
        if fault == "down":
            await emulator_faults(
                self.emulator, method="POST", path="^/v1/payment_intents$", status=503, times=2
            )
        elif fault == "lost":
            await emulator_faults(
                self.emulator,
                method="POST",
                path="^/v1/payment_intents$",
                status=500,
                times=2,
                after=True,
            )
        crash = fault if fault and fault.startswith("payment.") else None
        try:
            with crashing_at(crash) if crash else nullcontext():
                answer = await self.client.post(PROCESS, json=self.body, headers=self.headers)
        except BaseException as exc:
            if not crashed(exc):
                raise
            self.log.append(f"request crashed at {crash}")
            return
        finally:
            await emulator_clear_faults(self.emulator)
        self.answers.append(answer)
        self.log.append(f"request -> {answer.status_code} {answer.text[:120]}")
        if answer.status_code == 201 and answer.json().get("client_secret"):
            self.client_secret = answer.json()["client_secret"]

    async def reconcile(self, crash: str | None) -> None:
        # Each pass an hour later than the last: every unsettled payment is stale for it.
        self.passes += 1
        now = utcnow() + timedelta(hours=self.passes)
        try:
            with crashing_at(crash) if crash else nullcontext():
                report = await reconcile.reconcile(self.services, now=now)
        except SimulatedCrash:
            self.log.append(f"reconcile crashed at {crash}")
            return
        self.log.append(f"reconcile: {report.lines()}")

    async def webhook(self) -> None:
        """Stripe's deliveries so far (recorded and applied exactly as webhooks are)."""
        report = reconcile.Report()
        await reconcile.catch_up_events(self.services, report=report, now=utcnow())
        self.log.append(f"webhooks: {report.changes}")

    async def jobs(self) -> None:
        import_kind_modules()
        options = WorkerOptions(once=True, poll_seconds=0.02, concurrency=1)
        worker = Worker(
            self.services, options=options, kinds={CLOSE_INTENT: get_kind(CLOSE_INTENT)}
        )
        await worker.run()
        self.log.append(f"jobs: {worker.runs}")

    async def expire(self) -> None:
        changes = await intents.expire_requires_action(
            db=self.services.db,
            stripe=self.services.stripe,
            after_hours=24,
            now=utcnow() + timedelta(hours=25),
        )
        self.log.append(f"expire: {changes}")

    async def customer(self, action: str) -> None:
        """The customer (or whoever holds the `client_secret` we returned) at Stripe.js."""
        if self.client_secret is None:
            return
        intent_id = self.client_secret.split("_secret_")[0]
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
            if action == "authenticate":
                done = await http.post(
                    f"{self.emulator}/v1/payment_intents/{intent_id}/_authenticate",
                    data={"client_secret": self.client_secret, "success": "true"},
                )
            else:
                done = await http.post(
                    f"{self.emulator}/v1/payment_intents/{intent_id}/confirm",
                    data={"payment_method": "pm_card_visa"},
                )
        self.log.append(f"customer {action} -> {done.status_code}")

    async def payment(self) -> Payment | None:
        async with self.services.db.read() as session:
            found: Payment | None = await session.scalar(
                select(Payment).where(Payment.user_id == self.user)
            )
            return found

    async def check(self) -> None:
        """The invariants that hold after every step."""
        at_stripe = await emulator_intents_for(self.emulator, self.user)
        assert len(at_stripe) <= 1, ("two PaymentIntents for one payment", self.log)
        charged = any(i["status"] == "succeeded" for i in at_stripe)
        if self.failed_uncharged:
            assert not charged, ("charged after being told failed/canceled", self.log)
        payment = await self.payment()
        told = payment is not None and payment.status in ("failed", "canceled")
        told = told or any(a.status_code in (402, 409) for a in self.answers[-1:])
        if told and not charged:
            self.failed_uncharged = True


@asynccontextmanager
async def world(template: Path, tmp: Path, emulator: str, card: str) -> AsyncIterator[World]:
    n = next(_examples)
    path = tmp / f"example-{n}.db"
    shutil.copy(template, path)
    async with httpx.AsyncClient() as http:
        (await http.delete(f"{emulator}/_config/data")).raise_for_status()
    settings_ = emulator_settings(f"sqlite:///{path}", tmp, emulator)
    async with open_services(settings_) as services:
        # A crashed attempt's lock counts as expired at once, as after IDEMPOTENCY_LOCK_SECONDS.
        services.idempotency.lock_seconds = 0
        async with asgi_client(settings_, services, client_addr=("203.0.113.50", 4321)) as client:
            yield World(services, client, emulator, body=payment_body(payment_method_id=card))


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("final-means-final")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    card=st.sampled_from(CARDS),
    first=REQUEST_FAULTS,
    steps=st.lists(STEP, min_size=1, max_size=7),
)
async def test_no_schedule_charges_twice_or_charges_what_was_told_failed(
    sqlite_template: Path,
    example_dir: Path,
    emulator: str,
    card: str,
    first: str | None,
    steps: list[tuple[str, str | None]],
) -> None:
    async with world(sqlite_template, example_dir, emulator, card) as w:
        for kind, arg in [("request", first), *steps]:
            if kind == "request":
                await w.request(arg)
            elif kind == "reconcile":
                await w.reconcile(arg)
            elif kind == "customer":
                await w.customer(str(arg))
            else:
                await getattr(w, kind)()
            await w.check()

        # Everything settles: webhooks, a clean pass, the queue; then the key is tried again.
        await w.webhook()
        await w.reconcile(None)
        await w.jobs()
        await w.check()
        await w.request(None)
        await w.request(None)
        await w.check()

        payment = await w.payment()
        assert payment is not None, w.log
        at_stripe = await emulator_intents_for(emulator, w.user)
        charged = any(i["status"] == "succeeded" for i in at_stripe)
        # Stripe is the truth about money.
        assert (payment.status == "succeeded") == charged, (payment.status, at_stripe, w.log)
        last, again = w.answers[-2:]
        assert again.content == last.content, w.log
        assert again.headers.get("idempotent-replayed") == "true", w.log
        if payment.status in ("failed", "canceled"):
            assert not (last.status_code == 201 and last.json()["status"] == "succeeded")
        async with w.services.db.read() as session:
            key = await session.scalar(
                select(IdempotencyKey).where(IdempotencyKey.user_id == w.user)
            )
        assert key is not None, w.log
        assert key.response_body == last.text, w.log


# ---------------------------------------------------------------- giving up, and Stripe winning


async def give_up_pass(services: Services) -> reconcile.Report:
    """Reconciliation's payment step alone, an hour on (every unsettled payment is stale)."""
    report = reconcile.Report()
    now = utcnow() + timedelta(hours=1)
    await reconcile.settle_stale_payments(
        services, report=report, older_than=now - timedelta(minutes=15), now=now
    )
    return report


class Unreachable(NamedTuple):
    user: str
    headers: dict[str, str]
    payment_id: str


async def unreachable(api: httpx.AsyncClient, base: str) -> Unreachable:
    """A new user's payment answered 503 (Stripe unreachable): who, their key, the payment."""
    user = f"user_{uuid.uuid4().hex[:10]}"
    headers = {**bearer(make_token(user)), "Idempotency-Key": uuid.uuid4().hex}
    await emulator_faults(base, method="POST", path="^/v1/payment_intents$", status=503, times=2)
    try:
        down = await api.post(PROCESS, json=payment_body(), headers=headers)
    finally:
        await emulator_clear_faults(base)
    assert down.status_code == 503, down.text
    return Unreachable(user, headers, str(down.json()["payment_id"]))


async def stored_payment(services: Services, payment_id: str) -> Payment:
    async with services.db.read() as session:
        row = await session.get(Payment, payment_id)
    assert row is not None
    return row


async def test_stripe_taking_the_money_overturns_a_given_up_payment(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Given up (409 stored), then Stripe reports the charge after all: the payment succeeds,
    the key's stored answer becomes the 201, an audit record and payment.succeeded say so."""
    from tests.test_intents_closed import audited, deliver_events_of, told

    _user, headers, payment_id = await unreachable(api, stripe_emulator)
    report = await give_up_pass(stripe_services)
    assert f"{payment_id}: processing -> failed (no PaymentIntent at Stripe)" in report.changes
    given_up = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert (given_up.status_code, given_up.json()["code"]) == (409, "payment_failed")

    # The lost request's call reaches Stripe after all (same Stripe idempotency key).
    row = await stored_payment(stripe_services, payment_id)
    late = await stripe_services.stripe.create_payment_intent(
        payment_id=row.id,
        user_id=row.user_id,
        amount=row.amount,
        currency=row.currency,
        customer_id=row.stripe_customer_id or "",
        payment_method_id="pm_card_visa",
        description=row.description,
        metadata=dict(row.metadata_),
        save_payment_method=False,
    )
    assert late.status == "succeeded"
    assert await deliver_events_of(stripe_services, stripe_emulator, late.id) >= 1

    overturned = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert overturned.status_code == 201, overturned.text
    assert overturned.headers["idempotent-replayed"] == "true"
    assert (overturned.json()["status"], overturned.json()["stripe_payment_intent_id"]) == (
        "succeeded",
        late.id,
    )
    assert "payment.failure_overturned" in await audited(stripe_services, payment_id)
    assert (await told(stripe_services, payment_id))[-1] == "payment.succeeded"
    assert "payment.failed" in await told(stripe_services, payment_id)


async def test_an_unconfirmed_intent_found_is_canceled_and_the_payment_given_up(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """Stripe holds an intent for the payment that never got confirmed: reconciliation cancels
    it before giving up, so nothing can be charged on it afterwards."""
    from tests.test_intents_closed import at_stripe, intent

    user, headers, payment_id = await unreachable(api, stripe_emulator)
    row = await stored_payment(stripe_services, payment_id)
    made = await at_stripe(
        stripe_emulator,
        "POST",
        "/v1/payment_intents",
        amount=str(row.amount),
        currency=row.currency,
        customer=row.stripe_customer_id or "",
        **{"metadata[azora_payment_id]": row.id, "metadata[azora_user_id]": user},
    )
    assert made.status_code == 200, made.text
    unconfirmed = made.json()
    assert unconfirmed["status"] == "requires_payment_method"

    report = await give_up_pass(stripe_services)
    assert f"{payment_id}: processing -> failed (intent canceled)" in report.changes
    assert (await intent(stripe_emulator, unconfirmed["id"]))["status"] == "canceled"
    answer = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (409, "payment_failed")
    assert answer.headers["idempotent-replayed"] == "true"


async def test_a_retry_holding_the_key_is_never_raced(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """While a request holds the payment's key, reconciliation leaves the payment alone."""
    _user, _headers, payment_id = await unreachable(api, stripe_emulator)
    async with stripe_services.db.transaction() as session:
        key = await session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.payment_id == payment_id)
        )
        assert key is not None
        key.locked_at = utcnow() + timedelta(hours=1)  # held for as long as the test takes
    report = await give_up_pass(stripe_services)
    assert report.deferred == 1
    assert report.changes == []
    row = await stored_payment(stripe_services, payment_id)
    assert row.status == "processing"


async def test_stripe_unavailable_while_asking_gives_nothing_up(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """ "No PaymentIntent" is declared only once Stripe answered both questions."""
    _user, headers, payment_id = await unreachable(api, stripe_emulator)
    await emulator_faults(
        stripe_emulator, method="GET", path="^/v1/payment_intents$", status=503, times=2
    )
    try:
        report = await give_up_pass(stripe_services)
    finally:
        await emulator_clear_faults(stripe_emulator)
    assert report.errors == [f"{payment_id}: StripeUnavailable"]
    async with stripe_services.db.read() as session:
        row = await session.get(Payment, payment_id)
        key = await session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.payment_id == payment_id)
        )
    assert row is not None
    assert row.status == "processing"
    assert key is not None
    assert (key.locked_at, key.response_status) == (None, None)  # given back, unanswered
    # The retry still finishes the payment, charging it once.
    again = await api.post(PROCESS, json=payment_body(), headers=headers)
    assert (again.status_code, again.json()["status"]) == (201, "succeeded")


async def test_an_intent_for_another_amount_is_not_ours(
    api: httpx.AsyncClient, stripe_emulator: str, stripe_services: Services
) -> None:
    """An intent carrying our payment id but not its amount is audited, not applied."""
    from tests.test_intents_closed import at_stripe, audited

    _user, _headers, payment_id = await unreachable(api, stripe_emulator)
    row = await stored_payment(stripe_services, payment_id)
    made = await at_stripe(
        stripe_emulator,
        "POST",
        "/v1/payment_intents",
        amount="1",
        currency=row.currency,
        customer=row.stripe_customer_id or "",
        payment_method="pm_card_visa",
        confirm="true",
        **{"metadata[azora_payment_id]": row.id},
    )
    assert made.json()["status"] == "succeeded"
    report = await give_up_pass(stripe_services)
    assert f"{payment_id}: processing -> failed (no PaymentIntent at Stripe)" in report.changes
    assert "payment.intent_mismatch" in await audited(stripe_services, payment_id)
