"""INSERT … ON CONFLICT DO NOTHING on either engine."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_ignore(
    session: AsyncSession, model: Any, values: dict[str, Any], *, conflict: str | None = None
) -> bool:
    """Insert a row unless it collides with a unique constraint (with `conflict`: the one on
    that column only); True when it was inserted."""
    statement = _statement(_dialect(session), model.__table__, conflict, None)
    result: Any = await session.execute(statement, values)
    return bool(result.rowcount)


async def insert_ignore_many(
    session: AsyncSession, model: Any, rows: list[dict[str, Any]], *, conflict: str
) -> None:
    """`insert_ignore` for several rows (all with the same keys) in one executemany, which
    asyncpg sends as one pipelined round trip."""
    if rows:
        await session.execute(_statement(_dialect(session), model.__table__, conflict, None), rows)


async def insert_ignore_returning(
    session: AsyncSession, model: Any, values: dict[str, Any], column: str
) -> Any | None:
    """`insert_ignore`, answering `column` of the inserted row, or None when it collided."""
    statement = _statement(_dialect(session), model.__table__, None, column)
    result: Any = await session.execute(statement, values)
    return result.scalar_one_or_none()


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


@cache
def _statement(dialect: str, table: Table, conflict: str | None, returning: str | None) -> Any:
    # Built once per shape and run with the row as parameters: building it with `.values()` on
    # every call cost more than running it. Core, not ORM: the values are column keys already.
    module: Any = postgresql if dialect == "postgresql" else sqlite
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - PostgreSQL and SQLite only
        raise NotImplementedError(dialect)
    statement = module.insert(table)
    if conflict is None:
        statement = statement.on_conflict_do_nothing()
    else:
        statement = statement.on_conflict_do_nothing(index_elements=[table.c[conflict]])
    return statement if returning is None else statement.returning(table.c[returning])
