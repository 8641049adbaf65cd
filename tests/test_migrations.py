"""The migrations build exactly the schema the models describe, on both engines."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from azora_payments.db.migrate import schema_is_current
from azora_payments.db.models import Base
from azora_payments.db.session import create_engine


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            # Tables the job-queue tests add for their own bookkeeping are not the schema's.
            opts={
                "include_name": lambda name, kind, _parents: not str(name).startswith("job_test")
            },
        )
        return list(compare_metadata(context, Base.metadata))

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
        assert await schema_is_current(engine)
    finally:
        await engine.dispose()
