"""Faults under load, in CI (issue 15): one scenario per test on one stack, in order; the
scenarios and their checks are in tests/faults/scenarios.py and load.py."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import run_named
from tests.faults.stack import Stack

pytestmark = pytest.mark.faults


async def test_postgres_stopped_hard_for_5_s(stack: Stack) -> None:
    await run_named(stack, "postgres-down")


async def test_redis_stopped_then_restarted(stack: Stack) -> None:
    await run_named(stack, "redis-down")


async def test_a_worker_killed_every_1_5_s(stack: Stack) -> None:
    await run_named(stack, "worker-kills")


async def test_a_server_killed_with_its_stripe_call_in_flight(stack: Stack) -> None:
    await run_named(stack, "server-kill")


async def test_smtp_down_then_back(stack: Stack) -> None:
    await run_named(stack, "smtp-down")


async def test_stripe_slow_then_500s_and_429s(stack: Stack) -> None:
    await run_named(stack, "stripe-faults")
