"""The one way a repository reads a single row, locked or not."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def one(session: AsyncSession, query: Select[T], *, for_update: bool = False) -> T | None:
    """The first row `query` selects, or None. With `for_update`, the row stays locked until the
    transaction ends (PostgreSQL; SQLite's write transactions already run one at a time)."""
    if for_update:
        query = query.with_for_update()
    return (await session.scalars(query)).first()
