"""The engine and sessions: one `Database` per process; transactions at the request or job edge."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy.ext.asyncio as sa_asyncio
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.util import greenlet_spawn

from azora_payments.errors import DatabaseUnavailable
from azora_payments.request_timing import current as current_timing
from azora_payments.request_timing import time_statements

SQLITE_BUSY_TIMEOUT_MS = 15_000
READ_ONLY = "azora_read_only"
# A pooled connection idle for longer than this is pinged before use (see `_check_liveness`).
PING_AFTER_IDLE_SECONDS = 10.0
_RETURNED_AT = "azora_returned_at"


def async_url(url: str) -> str:
    """Accept the plain URL forms of API.md and pick the async driver."""
    for plain in (
        "postgres://",
        "postgresql://",
        "postgresql+psycopg://",
        "postgresql+psycopg2://",
    ):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url.removeprefix(plain)
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    return url


def sqlite_path(url: str) -> str | None:
    url = async_url(url)
    if not url.startswith("sqlite+aiosqlite:///"):
        return None
    path = url.removeprefix("sqlite+aiosqlite:///").split("?", 1)[0]
    return path or None


POOLERS = ("none", "pgbouncer")


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def pooler_connect_args(pooler: str) -> dict[str, Any]:
    """asyncpg's arguments for a connection pooler in transaction mode (PgBouncer before 1.21
    keeps no prepared statements): no statement caches, asyncpg's or SQLAlchemy's, and a name
    of its own for every statement, so that one never meets another client's of the same name
    on a shared server connection."""
    if pooler == "none":
        return {}
    if pooler != "pgbouncer":
        raise ValueError(f"unknown pooler {pooler!r}: one of {', '.join(POOLERS)}")
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def create_engine(
    url: str, *, pool_size: int = 10, pooler: str = "none", **kwargs: Any
) -> AsyncEngine:
    url = async_url(url)
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path and path != ":memory:":
            import os

            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa_asyncio.create_async_engine(url, poolclass=NullPool, **kwargs)
        _configure_sqlite(engine)
        time_statements(engine)
        return engine
    connect_args = pooler_connect_args(pooler)
    if connect_args:
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), **connect_args}
    # Up to twice `pool_size` connections, as before, but all of them kept once opened: an
    # overflow connection closed at check-in is reopened at the next burst, and opening one
    # costs more than a dozen queries (TLS probe, start-up, type introspection).
    # Called through its module, so that the SQLAlchemy instrumentation (`telemetry`) sees it.
    engine = sa_asyncio.create_async_engine(url, pool_size=2 * pool_size, max_overflow=0, **kwargs)
    _check_liveness(engine)
    time_statements(engine)
    return engine


def _check_liveness(engine: AsyncEngine) -> None:
    """Hand out only live connections, without a round trip per checkout.

    SQLAlchemy's `pool_pre_ping` costs three round trips (BEGIN, `;`, ROLLBACK on asyncpg) every
    time a connection leaves the pool: about half of a payment's database traffic. A server that
    restarts or ends a backend closes the socket, which asyncpg notices by itself (`is_closed`);
    the network ping is kept for connections idle long enough for a silent drop to go unseen.
    Raising `DisconnectionError` makes the pool replace the connection and try again.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver = record.driver_connection
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed the connection")
        returned = record.info.get(_RETURNED_AT)  # None: connected just now
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the connection did not answer a ping") from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's own transaction handling begins lazily and "deferred", which lets two writers
    # deadlock on the upgrade to a write lock; we begin IMMEDIATE ourselves so writers queue on
    # busy_timeout instead, and WAL lets readers run beside the one writer.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # Reads begin deferred so that they run beside the writer instead of queueing for it.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# SQLite's words for "someone else holds it" or "the file cannot be opened": a retry may work.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error")


# PostgreSQL's SQLSTATEs for "not now": connection exceptions (class 08), too many connections,
# and the server shutting down, crashed or refusing connections while it starts or stops.
_PG_UNAVAILABLE_STATES = ("53300", "57P01", "57P02", "57P03")
_DRIVER_UNAVAILABLE = (
    "ConnectionDoesNotExistError",
    "CannotConnectNowError",
    "TooManyConnectionsError",
    "AdminShutdownError",
    "CrashShutdownError",
)


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or used for now (as opposed to a bad statement)."""
    if isinstance(exc, OSError | PoolTimeout | DisconnectionError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # `exc.orig` is the DBAPI error; with asyncpg it is SQLAlchemy's adapter, which carries
        # the SQLSTATE and has the driver's own exception as its cause.
        orig: BaseException | None = exc.orig
        while orig is not None:
            if isinstance(orig, OSError):
                return True
            state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
            if state.startswith("08") or state in _PG_UNAVAILABLE_STATES:
                return True
            if type(orig).__name__ in _DRIVER_UNAVAILABLE:
                return True
            if any(word in str(orig).lower() for word in _SQLITE_UNAVAILABLE):
                return True
            orig = orig.__cause__
    return False


class Database:
    """The engine and a session factory; `transaction()` is the unit of work boundary."""

    def __init__(
        self, url: str, *, pool_size: int = 10, echo: bool = False, pooler: str = "none"
    ) -> None:
        self.url = async_url(url)
        self.engine = create_engine(url, pool_size=pool_size, echo=echo, pooler=pooler)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        read_engine = self.engine.execution_options(**{READ_ONLY: True})
        if self.engine.dialect.name == "postgresql" and pooler == "none":
            # (Not through a transaction pooler: outside a transaction, a statement's prepare
            # and its execution may be given different server connections.)
            # At READ COMMITTED, PostgreSQL's default and ours, every statement takes its own
            # snapshot inside a transaction too: a read loses nothing without BEGIN and COMMIT,
            # and saves their two round trips.
            read_engine = read_engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_sessions = async_sessionmaker(read_engine, expire_on_commit=False)
        self._single_sessions: async_sessionmaker[AsyncSession] | None = None
        if self.engine.dialect.name == "postgresql" and pooler == "none":
            single = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._single_sessions = async_sessionmaker(single, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed when the block ends, rolled back on error.
        A database that cannot be reached raises `DatabaseUnavailable` (a 503, retryable)."""
        async with _begun(self.sessions) as session:
            yield session

    @asynccontextmanager
    async def single_statement(self) -> AsyncIterator[AsyncSession]:
        """A session for one statement that commits by itself: on PostgreSQL (not through a
        pooler) in autocommit, which saves BEGIN and COMMIT; elsewhere a transaction."""
        async with _begun(self._single_sessions or self.sessions) as session:
            yield session

    @asynccontextmanager
    async def driver_statement(self) -> AsyncIterator[Any]:
        """A pooled connection's own asyncpg connection for one statement that commits by itself
        (PostgreSQL only): no ORM unit of work and no SQLAlchemy statement layer, each of which
        costs more CPU than the round trip (the webhook ingest's profile). Outside a transaction
        when not through a pooler; through one, in a transaction, as a statement outside one may
        be prepared on one server connection and executed on another."""
        if self.dialect != "postgresql":
            raise RuntimeError("driver_statement: PostgreSQL only")
        try:
            pooled = await self.engine.raw_connection()
        except Exception as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailable() from exc
            raise
        # Past the engine's cursor events, so the request's database time is counted here.
        timing = current_timing()
        started = time.perf_counter()
        try:
            connection: Any = pooled.driver_connection
            if self._single_sessions is not None:
                yield connection
            else:
                async with connection.transaction():
                    yield connection
        except BaseException:
            # A statement that failed or was cancelled midway may leave the connection in the
            # middle of its protocol: discarded, never handed out again (failures are rare here).
            await greenlet_spawn(pooled.invalidate)
            raise
        else:
            # Checked in through the pool, in a greenlet as its reset-on-return expects.
            await greenlet_spawn(pooled.close)
        finally:
            if timing is not None:
                timing.db_seconds += time.perf_counter() - started

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading only: on SQLite it does not take the write lock."""
        async with _begun(self._read_sessions) as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def _begun(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    try:
        async with sessions() as session, session.begin():
            yield session
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable() from exc
        raise
