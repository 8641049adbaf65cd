"""`/metrics` is not public (API.md, Operations): with METRICS_TOKEN it needs that bearer token;
with `serve --metrics-port` it is served on that port only, and the API's port has none."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from azora_payments.config import ConfigError, Settings
from azora_payments.devstack.processes import free_port, start_server
from tests.conftest import app_client, make_settings, server_env

TOKEN = "mtr-" + "7d1c0b9a8f6e5d4c3b2a1908"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


async def test_metrics_need_the_token_when_one_is_set(database_url: str) -> None:
    settings = make_settings(database_url, metrics_token=TOKEN)
    async with app_client(settings) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "unauthenticated"
            assert "azora_" not in refused.text
        allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200
        assert "azora_http_requests_total" in allowed.text


async def test_metrics_are_open_without_a_token(database_url: str) -> None:
    async with app_client(make_settings(database_url)) as http:
        assert (await http.get("/metrics")).status_code == 200


def test_a_short_metrics_token_is_refused(database_url: str) -> None:
    with pytest.raises(ConfigError, match=r"^METRICS_TOKEN: "):
        make_settings(database_url, metrics_token="short")


@pytest.fixture
def migrated_settings(sqlite_database_url: str, tmp_path: Path) -> Settings:
    return make_settings(sqlite_database_url, receipt_storage=str(tmp_path / "receipts"))


def test_serve_metrics_port_moves_metrics_off_the_api(
    migrated_settings: Settings, tmp_path: Path
) -> None:
    metrics_port = free_port()
    with start_server(
        server_env(migrated_settings),
        tmp_path / "server.log",
        args=["--metrics-port", str(metrics_port)],
        cwd=tmp_path,
    ) as server:
        api, internal = server.url, f"http://127.0.0.1:{metrics_port}"
        server.wait_http("/metrics", base=internal)
        with httpx.Client(timeout=10) as http:
            assert http.get(api + "/healthz").status_code == 200
            hidden = http.get(api + "/metrics")
            assert hidden.status_code == 404
            assert hidden.headers["content-type"] == "application/problem+json"
            scraped = http.get(internal + "/metrics")
            assert scraped.status_code == 200
            # The API's own counts, from the process that serves them.
            assert 'route="/healthz"' in scraped.text
            assert "azora_job_oldest_ready_age_seconds" in scraped.text  # refreshed from the db
            assert http.get(internal + "/healthz").status_code == 404
    output = server.output()
    assert "Traceback" not in output
