"""The real `azora-payments` command: `serve` over real HTTP (probes, docs offline, metrics,
authentication), and its refusals at start-up; `migrate` run twice."""

from __future__ import annotations

import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from azora_payments.config import Settings
from azora_payments.devstack.processes import run_command, start_server
from tests.conftest import bearer, free_port, make_settings, make_token, server_env


@pytest.fixture
def migrated_settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    path = tmp_path / "server.db"
    shutil.copy(sqlite_template, path)
    return make_settings(f"sqlite:///{path}", receipt_storage=str(tmp_path / "receipts"))


@pytest.fixture
def server(migrated_settings: Settings, tmp_path: Path) -> Iterator[str]:
    process = start_server(server_env(migrated_settings), tmp_path / "server.log", cwd=tmp_path)
    try:
        yield process.url
    finally:
        returncode = process.stop(grace=15)
        output = process.output()
        # A clean shutdown on SIGTERM (uvicorn re-raises the signal once it has shut down),
        # and nothing that looks like a traceback or a token in its output.
        assert returncode in (0, -signal.SIGTERM), output
        assert "Traceback" not in output
        assert "eyJ" not in output


def test_served_over_http(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as http:
        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert re.fullmatch(r"[0-9a-f]{32}", health.headers["x-request-id"])
        assert "server" not in health.headers

        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "database": "ok", "redis": "not_configured"}

        bad = http.get("/api/audit", headers=bearer("not.a.token"))
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == "Bearer"
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["code"] == "unauthenticated"

        operator = bearer(make_token("ops_1", roles=["admin"]))
        audit = http.get("/api/audit", headers={**operator, "X-Request-Id": "proc-1"})
        assert audit.status_code == 200
        assert audit.headers["x-request-id"] == "proc-1"

        missing = http.get("/api/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"

        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
        assert re.search(
            r'azora_http_requests_total\{method="GET",route="/healthz",status="200"\} [1-9]', text
        )
        assert re.search(r'azora_http_requests_total\{[^}]*route="/api/audit",status="401"', text)
        # Unmatched paths share one label: clients cannot grow the metrics.
        assert 'route="unmatched"' in text
        assert "/api/nothing-here" not in text


def test_docs_work_offline(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        # Every script, stylesheet, image and spec the page loads is ours (a relative path).
        refs = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert refs
        assert not [ref for ref in refs if re.match(r"^(https?:)?//", ref)], refs
        for ref in refs:
            asset = http.get(ref)
            assert asset.status_code == 200, ref
            assert asset.content
        spec = http.get("/openapi.json").json()
        assert "/api/audit" in spec["paths"]


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'fresh.db'}")
    result = run_command(["serve", "--port", str(free_port())], server_env(settings), cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == ["azora-payments: database schema is not current: run `azora-payments migrate`"]


def test_serve_reports_an_unreachable_database(tmp_path: Path) -> None:
    settings = make_settings(f"postgresql://app@127.0.0.1:{free_port()}/nope")
    result = run_command(["serve", "--port", str(free_port())], server_env(settings), cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("azora-payments: database unavailable")
    assert "app@" not in lines[0]


@pytest.mark.parametrize("missing", ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "JWT_SECRET"])
def test_serve_stops_on_a_missing_setting(
    migrated_settings: Settings, tmp_path: Path, missing: str
) -> None:
    env = server_env(migrated_settings)
    del env[missing]
    result = run_command(["serve", "--port", str(free_port())], env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"azora-payments: configuration error: {missing}: ")


def test_serve_stops_on_a_malformed_setting(migrated_settings: Settings, tmp_path: Path) -> None:
    env = server_env(migrated_settings, JWT_SECRET="changeme-changeme-changeme-changeme")
    result = run_command(["serve"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "azora-payments: configuration error: JWT_SECRET: looks like a placeholder; "
        "use a random value"
    ]
    assert "changeme" not in result.stderr


def test_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "db" / "azora.db"
    settings: Any = make_settings(f"sqlite:///{path}")
    env = server_env(settings)
    for _ in range(2):
        result = run_command(["migrate"], env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "database is at the latest schema" in result.stdout
    assert path.exists()


def test_usage_error_without_command(tmp_path: Path, migrated_settings: Settings) -> None:
    result = run_command([], server_env(migrated_settings), cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: azora-payments" in result.stderr
