"""HTTP rules every path follows (API.md, Errors): JSON nested past 64 levels is `400
invalid_json`, never a 500; a method a path does not serve is `405` with `Allow` naming exactly
the methods served there, the POST-only action paths included."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Match

from azora_payments.app import create_app
from azora_payments.config import Settings
from tests.conftest import bearer, make_token

# Made at import: it must outlive the whole run (a loaded CI machine takes over half an hour).
OPERATOR = bearer(make_token("ops_1", roles=["admin"], lifetime=6 * 3600))
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url


def nested(depth: int, leaf: Any = "x") -> Any:
    """`depth` levels of objects and arrays, alternating, around `leaf`."""
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def raw_nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---------------------------------------------------------------- nesting depth


@pytest.mark.parametrize(
    ("depth", "deeper"), [(0, False), (1, False), (64, False), (65, True), (500, True)]
)
def test_depth_is_counted_in_containers(depth: int, deeper: bool) -> None:
    from azora_payments.api.body import MAX_JSON_DEPTH, json_depth_exceeds

    assert json_depth_exceeds(nested(depth), MAX_JSON_DEPTH) is deeper
    assert json_depth_exceeds({"a": 1, "b": [nested(depth)]}, MAX_JSON_DEPTH + 2) is deeper


BODIES: list[tuple[str, dict[str, Any]]] = [
    ("/api/payments/process", {"amount": 2000, "currency": "usd", "payment_method_id": "pm_x"}),
    ("/api/payments/refund", {"payment_id": "pay_" + "0" * 26}),
    ("/api/payments/methods/save", {"payment_method_id": "pm_x"}),
]


def deep_body(base: dict[str, Any], depth: int) -> str:
    import json

    # The outer object is level 1: the field's value brings the total to `depth`.
    return json.dumps({**base, "metadata": nested(depth - 1)})


@pytest.mark.parametrize(("path", "base"), BODIES)
async def test_json_nested_past_64_levels_is_invalid_json(
    client: httpx.AsyncClient, path: str, base: dict[str, Any]
) -> None:
    headers = {**OPERATOR, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}
    at_limit = await client.post(path, content=deep_body(base, 64), headers=headers)
    assert at_limit.status_code == 422, at_limit.text  # parsed; `metadata` is just not valid
    for body in (deep_body(base, 65), raw_nested(65), raw_nested(100_000)):
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "invalid_json"
        assert problem["request_id"] == response.headers["x-request-id"]


async def test_deep_json_is_checked_after_authentication(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/payments/process", content=raw_nested(100_000))
    assert response.status_code == 401


# ---------------------------------------------------------------- 405 with Allow


def sample_path(template: str) -> str:
    """A concrete path for a route template: ids shaped like ours, anything else a word."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return "pay_" + "0" * 26 if name == "payment_id" else "sample"

    return re.sub(r"\{([^}:]+)(?::[^}]+)?\}", fill, template)


def served_at(app: Any, path: str) -> set[str]:
    """The methods some route of the app serves at `path`."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.router.routes):
        match, _ = route.matches({"type": "http", "path": path, "method": "GET"})
        if match is not Match.NONE:
            methods |= route.methods or set()
    return methods


def assert_405(response: httpx.Response, allowed: set[str]) -> None:
    assert response.status_code == 405, (response.request.method, response.request.url)
    assert set(response.headers["allow"].split(", ")) == allowed
    assert response.headers["content-type"] == "application/problem+json"
    if response.request.method == "HEAD":
        return  # no body to a HEAD
    problem = response.json()
    assert problem["code"] == "method_not_allowed"
    assert problem["request_id"] == response.headers["x-request-id"]


ACTION_PATHS = {
    "/api/payments/process": {"POST"},
    "/api/payments/refund": {"POST"},
    "/api/payments/methods/save": {"POST"},
    "/api/payments/history": {"GET"},
}


@pytest.mark.parametrize(
    ("path", "method"),
    [
        (path, method)
        for path, allowed in ACTION_PATHS.items()
        for method in ("GET", "PUT", "DELETE", "PATCH")
        if method not in allowed
    ],
)
async def test_action_paths_answer_405_not_404(
    client: httpx.AsyncClient, path: str, method: str
) -> None:
    response = await client.request(method, path, headers=OPERATOR)
    assert_405(response, ACTION_PATHS[path])


async def test_every_path_answers_405_with_allow(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    # Every route the app has (new ones included, as they are added): each method it does not
    # serve is a 405 naming exactly what is served there.
    app = create_app(settings)
    paths = {
        sample_path(r.path)
        for r in iter_route_contexts(app.router.routes)
        if r.methods and r.path is not None
    }
    assert "/api/payments/process" in paths
    checked = 0
    for path in sorted(paths):
        allowed = served_at(app, path)
        for method in METHODS:
            if method in allowed or (method == "HEAD" and "GET" in allowed):
                continue
            assert_405(await client.request(method, path, headers=OPERATOR), allowed)
            checked += 1
    assert checked > 4 * len(paths)


async def test_payment_ids_still_reach_their_route(client: httpx.AsyncClient) -> None:
    # Not a payment of this user (nor anybody's): 404, as before.
    for payment_id in ("pay_" + "0" * 26, "processing", "refunds", "pay_bad"):
        response = await client.get(f"/api/payments/{payment_id}", headers=OPERATOR)
        assert response.status_code == 404, payment_id
        assert response.json()["code"] == "not_found"
