"""Where one request's time goes: waiting on Stripe, in SQL statements, and the whole.

The edge middleware starts a `RequestTiming` per request; the Stripe gateway's HTTP client and
the engine's cursor events add to the current one. Read for the `Server-Timing` header and the
"own time" (total minus Stripe) histogram. Outside a request (jobs, scripts) nothing is counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

# A mutable record rather than values in the variable: SQLAlchemy runs cursor events in a
# greenlet that shares the request's context, and tasks the request starts copy it, so all of
# them add to the same record.
_current: ContextVar[RequestTiming | None] = ContextVar("azora_request_timing", default=None)
_STARTED = "azora_statement_started"


@dataclass(slots=True)
class RequestTiming:
    started: float
    stripe_seconds: float = 0.0
    db_seconds: float = 0.0
    # Set by the authentication dependency: `SERVER_TIMING=operators` shows the header to these.
    operator: bool = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def server_timing(self) -> bytes:
        """The `Server-Timing` value (W3C): each metric's `dur` in milliseconds."""
        return (
            f"stripe;dur={self.stripe_seconds * 1000:.1f}, "
            f"db;dur={self.db_seconds * 1000:.1f}, "
            f"total;dur={self.elapsed() * 1000:.1f}"
        ).encode()


def start() -> tuple[RequestTiming, Token[RequestTiming | None]]:
    timing = RequestTiming(started=time.perf_counter())
    return timing, _current.set(timing)


def finish(token: Token[RequestTiming | None]) -> None:
    _current.reset(token)


def current() -> RequestTiming | None:
    return _current.get()


@contextmanager
def waiting_on_stripe() -> Iterator[None]:
    timing = _current.get()
    if timing is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        timing.stripe_seconds += time.perf_counter() - started


def time_statements(engine: AsyncEngine) -> None:
    """Add every statement's execution time on `engine` to the current request's."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _statement: Any, _params: Any, *_: Any) -> None:
        if _current.get() is not None:
            # One statement at a time per connection: a statement that failed (no "after")
            # is simply overwritten by the next one.
            conn.info[_STARTED] = time.perf_counter()

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, _statement: Any, _params: Any, *_: Any) -> None:
        timing = _current.get()
        started = conn.info.pop(_STARTED, None)
        if timing is not None and started is not None:
            timing.db_seconds += time.perf_counter() - started
