"""Property: any shuffle, duplication or delay of one payment's events ends where the ordered
sequence ends. SQLite only: the rules under test do not depend on the engine."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from azora_payments.db.models import Payment, Refund
from azora_payments.domain.events import apply_recorded
from azora_payments.services import Services
from tests.webhooks.conftest import (
    charge_obj,
    dispute_obj,
    event,
    intent_obj,
    reload,
    run_apply_jobs,
    seed_payment,
    send,
)

_run = itertools.count()


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


def story(n: int, payment_id: str) -> list[dict[str, Any]]:
    """One payment's life as Stripe tells it, in order: paid, two partial refunds, a refund that
    succeeds then fails at the bank, a dispute that is lost."""
    from tests.webhooks.conftest import refund_obj

    pi, ch = f"pi_p{n}", f"ch_p{n}"

    def refund(k: int, amount: int, status: str, **extra: Any) -> dict[str, Any]:
        return refund_obj(
            f"re_p{n}_{k}", amount=amount, status=status, pi_id=pi, charge_id=ch, **extra
        )

    r1p, r1, r2, r3, r3f = (
        refund(1, 500, "pending"),
        refund(1, 500, "succeeded"),
        refund(2, 300, "succeeded"),
        refund(3, 200, "succeeded"),
        refund(3, 200, "failed", failure_reason="lost_or_stolen_card"),
    )
    t = 1_790_000_000 + n * 100

    def dispute(status: str) -> dict[str, Any]:
        return dispute_obj(f"dp_p{n}", status=status, charge_id=ch, pi_id=pi)

    steps: list[tuple[str, dict[str, Any]]] = [
        (
            "payment_intent.succeeded",
            intent_obj(pi, status="succeeded", payment_id=payment_id, charge_id=ch),
        ),
        ("refund.created", r1p),
        ("refund.updated", r1),
        ("charge.refunded", charge_obj(ch, pi_id=pi, refunds=[r1])),
        ("refund.created", r2),
        ("charge.refunded", charge_obj(ch, pi_id=pi, refunds=[r2, r1])),
        ("refund.created", r3),
        ("charge.refunded", charge_obj(ch, pi_id=pi, refunds=[r3, r2, r1])),
        ("refund.failed", r3f),
        ("charge.refund.updated", r3f),
        ("charge.dispute.created", dispute("needs_response")),
        ("charge.dispute.updated", dispute("under_review")),
        ("charge.dispute.closed", dispute("lost")),
    ]
    return [
        event(kind, obj, event_id=f"evt_p{n}_{i:02d}", created=t + i)
        for i, (kind, obj) in enumerate(steps)
    ]


EXPECTED = {
    "status": "succeeded",
    "amount_refunded": 800,
    "refunds": {"1": "succeeded", "2": "succeeded", "3": "failed"},
    "disputed": True,
    "dispute_status": "lost",
}


async def final_state(services: Services, payment_id: str) -> dict[str, Any]:
    payment: Payment = await reload(services, Payment, payment_id)
    async with services.db.transaction() as session:
        rows = (await session.scalars(select(Refund).where(Refund.payment_id == payment_id))).all()
    return {
        "status": payment.status,
        "amount_refunded": payment.amount_refunded,
        "refunds": {(r.stripe_refund_id or "").rsplit("_", 1)[1]: r.status for r in rows},
        "disputed": payment.disputed,
        "dispute_status": payment.dispute_status,
    }


async def play(
    client: httpx.AsyncClient,
    services: Services,
    deliveries: list[list[dict[str, Any]]],
    *,
    worker: bool = True,
) -> None:
    """Each batch is delivered, then applied: later batches are the delayed events. Without
    `worker`, the apply function the job runs is called directly (faster), once per delivery,
    so a duplicate is also an apply that runs twice."""
    for batch in deliveries:
        for evt in batch:
            assert (await send(client, evt)).status_code == 200
        if worker:
            await run_apply_jobs(services)
            continue
        for evt in batch:
            await apply_recorded(services.db, evt["id"])


async def test_in_order(hook_client: httpx.AsyncClient, hook_services: Services) -> None:
    n = next(_run)
    payment = await seed_payment(hook_services, status="requires_action", pi_id=f"pi_p{n}")
    await play(hook_client, hook_services, [story(n, payment.id)])
    assert await final_state(hook_services, payment.id) == EXPECTED


@pytest.fixture
def shared(
    hook_client: httpx.AsyncClient, hook_services: Services
) -> tuple[httpx.AsyncClient, Services]:
    return hook_client, hook_services


STEPS = 13


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations(range(STEPS)),
    duplicates=st.lists(
        st.tuples(st.integers(0, STEPS - 1), st.integers(0, 2 * STEPS)), max_size=6
    ),
    cuts=st.lists(st.integers(0, 2 * STEPS), max_size=2),
)
async def test_any_order_ends_the_same(
    shared: tuple[httpx.AsyncClient, Services],
    order: list[int],
    duplicates: list[tuple[int, int]],
    cuts: list[int],
) -> None:
    client, services = shared
    # Each example gets its own payment and event ids in the same database.
    n = next(_run)
    payment = await seed_payment(services, status="requires_action", pi_id=f"pi_p{n}")
    events = story(n, payment.id)
    sequence = [events[i] for i in order]
    for which, where in duplicates:
        sequence.insert(min(where, len(sequence)), events[which])
    bounds = sorted({0, *(min(c, len(sequence)) for c in cuts), len(sequence)})
    batches = [sequence[a:b] for a, b in itertools.pairwise(bounds)]
    await play(client, services, batches, worker=False)
    assert await final_state(services, payment.id) == EXPECTED
