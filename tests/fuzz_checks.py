"""Schemathesis hooks for the fuzz runs (SCHEMATHESIS_HOOKS=tests.fuzz_checks): the checks our
contract adds to schemathesis's own."""

from __future__ import annotations

from typing import Any

import schemathesis

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code", "request_id"}


@schemathesis.check
def problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is RFC 9457 problem+json (API.md, Errors), with the members every problem has,
    its `type` made from its `code`, and the request id of the response."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    assert content_type.startswith("application/problem+json"), (
        f"{response.status_code} answered as {content_type!r}"
    )
    body = response.json()
    assert set(body) >= PROBLEM_MEMBERS, f"a problem without {sorted(PROBLEM_MEMBERS - set(body))}"
    assert body["status"] == response.status_code, "status member differs from the answer's"
    assert body["type"] == "https://docs.azora.dev/errors/" + body["code"]
    request_id = response.headers.get("x-request-id", [""])
    if isinstance(request_id, list):
        request_id = request_id[0] if request_id else ""
    assert body["request_id"] == request_id, "request_id differs from X-Request-Id"
    return None
