"""Saved cards through a real `azora-payments serve` process, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from azora_payments.config import Settings
from tests.conftest import bearer, free_port, make_token, server_env, unique_user, wait_http


@pytest.fixture
def server(stripe_settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "azora_payments.cli", "serve", "--port", str(port)],
        env=server_env(stripe_settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_save_list_delete_over_http(server: str) -> None:
    user = bearer(make_token(unique_user()))
    other = bearer(make_token(unique_user()))
    with httpx.Client(base_url=server, timeout=10) as http:
        saved = http.post(
            "/api/payments/methods/save",
            json={"payment_method_id": "pm_card_amex", "set_default": True},
            headers=user,
        )
        assert saved.status_code == 201, saved.text
        method = saved.json()
        assert (method["brand"], method["is_default"]) == ("amex", True)
        assert saved.headers["x-request-id"]
        assert http.get("/api/payments/methods/list", headers=user).json()["data"] == [method]
        assert http.get("/api/payments/methods/list", headers=other).json()["data"] == []
        foreign = http.delete(
            "/api/payments/methods/delete",
            params={"payment_method_id": method["id"]},
            headers=other,
        )
        assert foreign.status_code == 404
        gone = http.delete(
            "/api/payments/methods/delete",
            params={"payment_method_id": method["id"]},
            headers=user,
        )
        assert gone.status_code == 204
        assert http.get("/api/payments/methods/list", headers=user).json()["data"] == []
