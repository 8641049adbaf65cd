"""`Server-Timing` (API.md, `SERVER_TIMING`): off by default, on operators' answers only under
`operators`, on every answer under `all` (the dev default); `stripe`, `db` and `total` in W3C
syntax. And the histogram of our own time (total minus Stripe) per route in `/metrics`."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from azora_payments.config import ConfigError, load_settings
from tests.conftest import (
    app_client,
    bearer,
    emulator_settings,
    make_settings,
    make_token,
    open_services,
    unique_user,
)
from tests.test_payments import PROCESS, payment_body

# W3C Server-Timing: `name;dur=<ms>` metrics, comma-separated (token names, numeric dur).
METRIC = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+);dur=(\d+(?:\.\d+)?)$")
OWN_TIME = "azora_http_request_own_duration_seconds"
LATENCY = "azora_http_request_duration_seconds"


def timings(response: httpx.Response) -> dict[str, float] | None:
    """The Server-Timing metrics by name, or None when the header is absent."""
    header = response.headers.get("server-timing")
    if header is None:
        return None
    metrics: dict[str, float] = {}
    for part in header.split(","):
        match = METRIC.match(part.strip())
        assert match, f"not W3C Server-Timing syntax: {header!r}"
        metrics[match.group(1)] = float(match.group(2))
    return metrics


def operator() -> dict[str, str]:
    return bearer(make_token(unique_user(), roles=["admin"], email="ops@azora.example"))


def buyer() -> dict[str, str]:
    return bearer(make_token(unique_user()))


async def pay(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    response = await http.post(
        PROCESS, json=payment_body(), headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert response.status_code == 201, response.text
    return response


async def test_no_header_by_default(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    settings = emulator_settings(database_url, tmp_path, stripe_emulator)
    async with app_client(settings) as http:
        for headers in (operator(), buyer()):
            response = await pay(http, headers)
            assert "server-timing" not in response.headers
            read = await http.get(f"/api/payments/{response.json()['id']}", headers=headers)
            assert read.status_code == 200
            assert "server-timing" not in read.headers


async def test_operators_get_the_three_metrics_and_users_none(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    settings = emulator_settings(database_url, tmp_path, stripe_emulator, server_timing="operators")
    async with app_client(settings) as http:
        metrics = timings(await pay(http, operator()))
        assert metrics is not None
        assert set(metrics) == {"stripe", "db", "total"}
        assert metrics["stripe"] > 0
        assert metrics["db"] > 0
        # Both are parts of the request, one after the other: never more than the whole.
        assert metrics["stripe"] + metrics["db"] <= metrics["total"] + 0.2  # rounding to 0.1

        assert timings(await pay(http, buyer())) is None
        # Not authenticated at all: no header either.
        refused = await http.get("/api/payments/history")
        assert refused.status_code == 401
        assert timings(refused) is None


async def test_all_times_every_answer(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    settings = emulator_settings(database_url, tmp_path, stripe_emulator, server_timing="all")
    async with app_client(settings) as http:
        user = buyer()
        created = await pay(http, user)
        metrics = timings(created)
        assert metrics is not None
        assert metrics["stripe"] > 0

        # A read of a final payment asks Stripe nothing: its Stripe time is zero.
        read = await http.get(f"/api/payments/{created.json()['id']}", headers=user)
        assert read.status_code == 200
        metrics = timings(read)
        assert metrics is not None
        assert metrics["stripe"] == 0
        assert metrics["db"] > 0
        assert metrics["total"] >= metrics["db"]

        assert timings(await http.get("/healthz")) is not None


def sample(text: str, name: str, labels: dict[str, str]) -> float:
    """One sample's value in a Prometheus text exposition (0 when it is not there yet)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(got.split(","))) == wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_own_time_histogram_is_total_minus_stripe(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    # Recorded whatever SERVER_TIMING says: /metrics is not public.
    settings = emulator_settings(database_url, tmp_path, stripe_emulator)
    labels = {"method": "POST", "route": PROCESS}
    async with app_client(settings) as http:
        before = (await http.get("/metrics")).text
        await pay(http, buyer())
        after = (await http.get("/metrics")).text
    count = sample(after, OWN_TIME + "_count", labels) - sample(before, OWN_TIME + "_count", labels)
    assert count == 1
    own = sample(after, OWN_TIME + "_sum", labels) - sample(before, OWN_TIME + "_sum", labels)
    total = sample(after, LATENCY + "_sum", labels) - sample(before, LATENCY + "_sum", labels)
    # The payment called Stripe, so our own time is less than the whole.
    assert 0 < own < total
    assert f'{OWN_TIME}_bucket{{le="0.005",method="POST",route="{PROCESS}"}}' in after


async def test_a_signed_in_console_operator_is_an_operator(
    database_url: str, tmp_path: Path, stripe_emulator: str
) -> None:
    from tests.console.conftest import browser_like, sign_in

    settings = emulator_settings(
        database_url, tmp_path, stripe_emulator, console_enabled=True, server_timing="operators"
    )
    async with open_services(settings) as services, browser_like(settings, services) as http:
        login = await http.get("/console/login")
        assert login.status_code == 200
        assert timings(login) is None  # nobody signed in yet
        await sign_in(http)
        overview = await http.get("/console")
        assert overview.status_code == 200
        metrics = timings(overview)
        assert metrics is not None
        assert metrics["db"] > 0


@pytest.mark.parametrize(
    ("environment", "value", "mode"),
    [
        ("production", None, "off"),
        ("test", None, "off"),
        ("dev", None, "all"),
        ("production", "operators", "operators"),
        ("dev", "off", "off"),
    ],
)
def test_the_setting(environment: str, value: str | None, mode: str) -> None:
    overrides: dict[str, Any] = {"AZORA_ENV": environment}
    if value is not None:
        overrides["server_timing"] = value
    assert make_settings("sqlite:///unused.db", **overrides).server_timing_mode == mode


def test_an_unknown_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="SERVER_TIMING"):
        load_settings(AZORA_ENV="dev", server_timing="everyone")
