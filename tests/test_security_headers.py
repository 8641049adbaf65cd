"""Security headers, one test per header, on every kind of answer: the API (successes, errors,
answers the edge gives itself), the liveness probes, the OpenAPI document and `/docs`.

Pages added later (the console, the checkout page) add a line to PAGES with the policy they
need; every header test then covers them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import pytest

from azora_payments.config import Settings
from tests.conftest import bearer, make_settings, make_token

# Made at import: it must outlive the whole run (a loaded CI machine takes over half an hour).
USER = bearer(make_token("user_1", lifetime=6 * 3600))
LIMIT = 2048


@dataclass(frozen=True)
class Page:
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    # What the Content-Security-Policy must start with: the API needs no resource at all; a page
    # needs its own scripts and styles.
    csp: str = "default-src 'none'"
    no_store: bool = True
    status: int = 200
    # The console's forms need their Origin (Chromium sends "null" under no-referrer).
    referrer: str = "no-referrer"

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.status})"


PAGES = [
    Page("/api/payments/history", headers=USER),
    Page("/api/payments/history", status=401),
    Page("/api/payments/process", status=405),
    Page("/api/payments/pay_" + "0" * 26, headers=USER, status=404),
    Page("/api/audit", headers=USER, status=403),
    Page("/api/payments/process", method="POST", content=b"x" * (LIMIT + 1), status=413),
    Page("/healthz", no_store=False),
    Page("/openapi.json", no_store=False),
    Page("/docs", csp="default-src 'self'", no_store=False),
    Page("/console/login", referrer="same-origin"),
    Page("/console/payments", status=303, referrer="same-origin"),
    Page("/console/static/console.css", referrer="same-origin", no_store=True),
    Page("/checkout/cs_" + "0" * 32, status=404),
]


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(
        database_url,
        max_body_bytes=LIMIT,
        console_enabled=True,
        checkout_enabled=True,
        stripe_publishable_key="pk_test_" + "azora" * 6,
    )


async def fetch(client: httpx.AsyncClient, page: Page) -> httpx.Response:
    response = await client.request(
        page.method, page.path, headers=page.headers, content=page.content
    )
    assert response.status_code == page.status, response.text
    return response


pages = pytest.mark.parametrize("page", PAGES, ids=str)


@pages
async def test_strict_transport_security(client: httpx.AsyncClient, page: Page) -> None:
    value = (await fetch(client, page)).headers["strict-transport-security"]
    directives = [d.strip().lower() for d in value.split(";")]
    max_age = next(d for d in directives if d.startswith("max-age="))
    assert int(max_age.removeprefix("max-age=")) >= 365 * 24 * 3600
    assert "includesubdomains" in directives


@pages
async def test_content_type_options(client: httpx.AsyncClient, page: Page) -> None:
    assert (await fetch(client, page)).headers["x-content-type-options"] == "nosniff"


@pages
async def test_frame_options(client: httpx.AsyncClient, page: Page) -> None:
    assert (await fetch(client, page)).headers["x-frame-options"] == "DENY"


@pages
async def test_referrer_policy(client: httpx.AsyncClient, page: Page) -> None:
    assert (await fetch(client, page)).headers["referrer-policy"] == page.referrer


@pages
async def test_cross_origin_opener_policy(client: httpx.AsyncClient, page: Page) -> None:
    assert (await fetch(client, page)).headers["cross-origin-opener-policy"] == "same-origin"


@pages
async def test_content_security_policy(client: httpx.AsyncClient, page: Page) -> None:
    response = await fetch(client, page)
    [policy] = response.headers.get_list("content-security-policy")
    assert policy.startswith(page.csp)
    directives = {d.strip().split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
    assert directives["frame-ancestors"] == ["'none'"]
    for name, sources in directives.items():
        # Never a source that would let anybody's code in (a `data:` image is only a picture).
        wide = {"*", "http:", "https:"} | ({"data:"} if name != "img-src" else set())
        assert not wide & set(sources), policy


@pages
async def test_cache_control(client: httpx.AsyncClient, page: Page) -> None:
    cache = (await fetch(client, page)).headers.get("cache-control", "")
    assert ("no-store" in cache) is page.no_store


@pages
async def test_each_header_is_sent_once(client: httpx.AsyncClient, page: Page) -> None:
    response = await fetch(client, page)
    for name in (
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "cross-origin-opener-policy",
        "content-security-policy",
        "x-request-id",
    ):
        assert len(response.headers.get_list(name)) == 1, name
