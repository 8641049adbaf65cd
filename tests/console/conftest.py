"""Console suites over ASGI (no browser): an app with the console on, wired to the emulator,
and clients that keep the session cookie (https base URL, as the cookie is `Secure`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from azora_payments.config import Settings
from azora_payments.services import Services
from tests.conftest import asgi_client, emulator_settings, make_token, stack_fixtures

BASE = "https://console.test"
CONSOLE_CLIENT = ("203.0.113.30", 4321)
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
FORM_KEY = re.compile(r'name="key" value="(console:[^"]+)"')


@pytest.fixture
def console_settings(database_url: str, tmp_path: Path, stripe_emulator: str) -> Settings:
    return emulator_settings(
        database_url,
        tmp_path,
        stripe_emulator,
        console_enabled=True,
        console_refund_approval_above=10_000,
    )


console_services, console = stack_fixtures(
    "console_settings",
    services="console_services",
    client="console",
    client_addr=CONSOLE_CLIENT,
    base_url=BASE,
)


@contextlib.asynccontextmanager
async def browser_like(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, services, client_addr=CONSOLE_CLIENT, base_url=BASE) as http:
        yield http


def operator_token(sub: str = "ops_1", **claims: object) -> str:
    return make_token(sub, roles=["admin"], email=f"{sub}@azora.example", **claims)  # type: ignore[arg-type]


async def sign_in(http: httpx.AsyncClient, token: str | None = None) -> httpx.Response:
    response = await http.post(
        "/console/login", data={"token": token or operator_token(), "next": "/console"}
    )
    assert response.status_code == 303, response.text
    return response


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)
