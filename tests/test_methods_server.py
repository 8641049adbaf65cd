"""Saved cards through a real `azora-payments serve` process, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from azora_payments.config import Settings
from azora_payments.devstack.processes import start_server
from tests.conftest import bearer, make_token, server_env, unique_user


@pytest.fixture
def server(stripe_settings: Settings, tmp_path: Path) -> Iterator[str]:
    with start_server(server_env(stripe_settings), tmp_path / "server.log") as process:
        yield process.url


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
