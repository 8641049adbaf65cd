"""The response headers API.md promises, written into `/openapi.json` in one pass over its
operations (FastAPI documents none of them, so a generated client or a conformance check would
never hear of them):

- `X-Request-Id` on every answer;
- `Retry-After` on a problem `429` or `503`, and on the `409` of a key still in progress;
- `WWW-Authenticate: Bearer` on a `401`;
- `Idempotent-Replayed: true` on what an idempotent route answers again: its successes and the
  problems it stores (`402`, `409`, `422`).
"""

from __future__ import annotations

from typing import Any

from azora_payments.errors import PROBLEM_JSON

REPLAYS = "x-azora-replays"
"""Set in the `openapi_extra` of a route that answers through `replayable_response`; the pass
below turns it into `Idempotent-Replayed` and takes it out of the published schema."""

# The statuses a key stores and replays besides the successes (API.md, Idempotency).
STORED_PROBLEMS = frozenset({"402", "409", "422"})
SECONDS = {"type": "integer", "minimum": 0}

REQUEST_ID = {
    "description": "This request's id: the caller's own when it matches "
    "`^[A-Za-z0-9._:-]{1,128}$`, else a generated one; a problem's `request_id` is the same "
    "(an idempotent replay excepted)",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
}
RETRY_AFTER = {
    "description": "Seconds to wait before trying again",
    "required": True,
    "schema": SECONDS,
}
IN_PROGRESS_RETRY_AFTER = {
    "description": "With `idempotency_request_in_progress`: seconds to wait before trying the "
    "same request again",
    "required": False,
    "schema": SECONDS,
}
WWW_AUTHENTICATE = {
    "description": "`Bearer`: the token to send",
    "required": True,
    "schema": {"type": "string"},
}
IDEMPOTENT_REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with the same "
    "`Idempotency-Key` (same status, same body)",
    "required": False,
    "schema": {"type": "string", "enum": ["true"]},
}


def document_headers(schema: dict[str, Any]) -> None:
    """Add the headers above to every response of every operation in `schema`, in place."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            replays = bool(operation.pop(REPLAYS, False))
            for status, answer in operation.get("responses", {}).items():
                answer["headers"] = {
                    **answer.get("headers", {}),
                    **_headers(status, answer, replays),
                }


def _headers(status: str, answer: dict[str, Any], replays: bool) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": REQUEST_ID}
    problem = PROBLEM_JSON in answer.get("content", {})
    if status in ("429", "503") and problem:
        headers["Retry-After"] = RETRY_AFTER
    elif status == "409" and replays:
        headers["Retry-After"] = IN_PROGRESS_RETRY_AFTER
    if status == "401":
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    if replays and (status.startswith("2") or status in STORED_PROBLEMS):
        headers["Idempotent-Replayed"] = IDEMPOTENT_REPLAYED
    return headers
