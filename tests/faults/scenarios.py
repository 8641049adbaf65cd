"""The fault scenarios (issue 15): each breaks one dependency of a running stack (two servers,
two workers, private PostgreSQL and Redis, the emulator, an SMTP server) while clients pay,
refund and deliver webhooks, heals it, then asserts every promise (`check_invariants`) and
prints its figures (`FAULTS …` lines). Run by tests/faults/test_faults.py and bench/soak.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx

from tests.conftest import bearer, make_token
from tests.faults.load import (
    Figures,
    Load,
    Paid,
    Snapshot,
    Tally,
    check_invariants,
    message_counts,
    settle,
)
from tests.faults.stack import Stack

Fault = Callable[[Stack, Tally], Awaitable[int]]

# The load runs this long before the fault and after it heals (tolerant of a slow machine:
# the invariants, not the timings, are asserted).
WARMUP_SECONDS = 3.0
AFTER_SECONDS = 5.0


async def run_scenario(
    stack: Stack,
    name: str,
    fault: Fault,
    *,
    drops: bool = False,
    database_down: bool = False,
    after_seconds: float = AFTER_SECONDS,
) -> Figures:
    """Load, fault (which returns how many workers it killed), heal, load, then the checks."""
    # Judge this scenario's e-mails against what was sent once the earlier ones settled, so
    # an earlier failure (whose e-mails were never counted) cannot fail this one too.
    await settle(stack.database_url, timeout=240.0)
    before = Snapshot(copies=message_counts(stack.smtp.messages))
    tally = Tally(name, drops_allowed=drops, webhook_500_allowed=database_down)
    load = Load([server.url for server in stack.servers], stack.stripe_url, tally)
    running = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(WARMUP_SECONDS)
        tally.fault_at = time.monotonic()
        kills = await fault(stack, tally)
        if tally.healed_at is None:
            tally.healed_at = time.monotonic()
        await asyncio.sleep(after_seconds)
    finally:
        load.stop()
        await running
    figures = await check_invariants(
        tally=tally,
        database_url=stack.database_url,
        stripe_url=stack.stripe_url,
        inbox=lambda: stack.smtp.messages,
        before=before,
        kills=kills,
    )
    print(figures.line(), flush=True)
    assert figures.succeeded > 0, "no payment succeeded during the scenario"
    assert tally.recovery_seconds is not None, "nothing succeeded after the fault healed"
    return figures


async def _postgres_down(stack: Stack, tally: Tally) -> int:
    await asyncio.to_thread(stack.pg.stop, "immediate")
    await asyncio.sleep(5.0)
    await asyncio.to_thread(stack.pg.start)
    tally.healed_at = time.monotonic()
    return 0


async def _redis_down(stack: Stack, tally: Tally) -> int:
    await asyncio.to_thread(stack.redis.stop)
    await asyncio.sleep(4.0)
    await asyncio.to_thread(stack.redis.start)
    tally.healed_at = time.monotonic()
    return 0


async def _workers_killed(stack: Stack, tally: Tally) -> int:
    """One worker SIGKILLed every ~1.5 s and started again; the other keeps running, so it is
    the one that takes the killed worker's jobs after their lease."""
    victim = stack.workers[0]
    before = victim.kills
    until = time.monotonic() + 7.5
    while time.monotonic() < until:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(victim.kill)
        victim.start()
    tally.healed_at = time.monotonic()
    return victim.kills - before


async def _server_killed_mid_stripe_call(stack: Stack, tally: Tally) -> int:
    """A payment to server 1 waits on a slow PaymentIntent create; server 1 is SIGKILLed with
    the call in flight, started again, and the client retries its key on either server."""
    async with httpx.AsyncClient(timeout=60) as http:
        user = f"user_k{uuid.uuid4().hex[:12]}"
        # Only this user's create is slowed: the load's own payments would use up the fault.
        await http.post(
            f"{stack.stripe_url}/_azora/faults",
            json={"method": "POST", "path": "^/v1/payment_intents$", "match": user,
                  "status": 200, "delay": 3.0, "times": 2},
        )  # fmt: skip
        headers = {
            **bearer(make_token(user, email=f"{user}@shop.example", lifetime=3600)),
            "Idempotency-Key": uuid.uuid4().hex,
        }
        body = {"amount": 2000, "currency": "eur", "payment_method_id": "pm_card_visa"}
        victim = stack.servers[1]
        inflight = asyncio.create_task(
            http.post(f"{victim.url}/api/payments/process", json=body, headers=headers)
        )
        await asyncio.sleep(1.5)  # the server is waiting on the emulator now
        await asyncio.to_thread(victim.kill)
        try:
            answered = await inflight
        except httpx.TransportError:
            answered = None
        finally:
            # Whatever happened, the next scenarios need both servers.
            await asyncio.to_thread(stack.restart_server, 1)
        assert answered is None, f"answered before the kill: {answered.status_code} {answered.text}"
        tally.healed_at = time.monotonic()
        deadline = time.monotonic() + 120
        while True:
            server = stack.servers[int(time.monotonic()) % 2]
            started = time.monotonic()
            try:
                response: httpx.Response | None = await http.post(
                    f"{server.url}/api/payments/process", json=body, headers=headers
                )
            except httpx.TransportError:
                response = None
            if tally.saw("payment (killed server's key)", response, started):
                assert response is not None
                break
            assert time.monotonic() < deadline, "the killed server's key never finished"
            await asyncio.sleep(1.0)
        assert response.status_code == 201, response.text
        tally.paid.append(Paid(user, headers["Idempotency-Key"], 201, response.json()))
    return 0


async def _smtp_down(stack: Stack, tally: Tally) -> int:
    await asyncio.to_thread(stack.smtp.stop)
    await asyncio.sleep(5.0)
    await asyncio.to_thread(stack.smtp.start)
    tally.healed_at = time.monotonic()
    return 0


async def _stripe_slow_then_failing(stack: Stack, tally: Tally) -> int:
    path = "^/v1/payment_intents"
    async with httpx.AsyncClient(timeout=30) as http:
        faults = f"{stack.stripe_url}/_azora/faults"
        for fault in (
            {"status": 200, "delay": 2.0, "times": 6},  # slow: seconds per call
            {"status": 500, "times": 6},
            {"status": 429, "times": 6},
        ):
            await http.post(faults, json={"method": "POST", "path": path, **fault})
        deadline = time.monotonic() + 60
        while (await http.get(faults)).json() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await http.delete(faults)
    tally.healed_at = time.monotonic()
    return 0


# name -> (fault, server killed, database down)
SCENARIOS: dict[str, tuple[Fault, bool, bool]] = {
    "postgres-down": (_postgres_down, False, True),
    "redis-down": (_redis_down, False, False),
    "worker-kills": (_workers_killed, False, False),
    "server-kill": (_server_killed_mid_stripe_call, True, False),
    "smtp-down": (_smtp_down, False, False),
    "stripe-faults": (_stripe_slow_then_failing, False, False),
}


async def run_named(stack: Stack, name: str, *, after_seconds: float = AFTER_SECONDS) -> Figures:
    fault, drops, database_down = SCENARIOS[name]
    return await run_scenario(
        stack, name, fault, drops=drops, database_down=database_down, after_seconds=after_seconds
    )
