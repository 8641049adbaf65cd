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


# ---------------------------------------------------------------- expand, then contract

CONTRACT_MARK = "contract:"
_DESTRUCTIVE_OPS = {"drop_column", "drop_table", "rename_table", "drop_constraint"}
_DESTRUCTIVE_SQL = ("drop column", "drop table", "rename ", "alter column")


def contract_steps(source: str) -> list[str]:
    """What in a migration's `upgrade()` would break the previous release's code running beside
    it: a drop or rename, or a new NOT NULL column that the old code cannot fill. Empty when the
    migration is marked as a contract step (`contract:` in its docstring)."""
    import ast

    tree = ast.parse(source)
    if CONTRACT_MARK in (ast.get_docstring(tree) or "").lower():
        return []
    upgrade_fn = next(
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"
    )
    found: list[str] = []
    for node in ast.walk(upgrade_fn):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        keywords = {kw.arg: kw.value for kw in node.keywords}
        if name in _DESTRUCTIVE_OPS:
            found.append(f"line {node.lineno}: {name}")
        elif name == "alter_column" and "new_column_name" in keywords:
            found.append(f"line {node.lineno}: a column renamed")
        elif name == "alter_column" and _is_false(keywords.get("nullable")):
            found.append(f"line {node.lineno}: a column made NOT NULL")
        elif name == "add_column":
            column = next((a for a in node.args if isinstance(a, ast.Call)), None)
            column_kw = {kw.arg: kw.value for kw in column.keywords} if column else {}
            if _is_false(column_kw.get("nullable")) and "server_default" not in column_kw:
                found.append(f"line {node.lineno}: a NOT NULL column without a server default")
        elif name == "execute" and node.args and isinstance(node.args[0], ast.Constant):
            sql = str(node.args[0].value).lower()
            found += [
                f"line {node.lineno}: SQL {w.strip()!r}" for w in _DESTRUCTIVE_SQL if w in sql
            ]
    return found


def _is_false(node: object) -> bool:
    import ast

    return isinstance(node, ast.Constant) and node.value is False


def test_migrations_after_the_first_only_expand_unless_marked_contract() -> None:
    from azora_payments.db.migrate import MIGRATIONS

    versions = sorted((MIGRATIONS / "versions").glob("*.py"))
    assert len(versions) >= 4
    # The first migration creates the schema from nothing: there is no older code beside it.
    for path in versions[1:]:
        assert contract_steps(path.read_text()) == [], path.name


def test_the_expand_contract_check_sees_what_breaks_old_code() -> None:
    bad = '''"""Rename a column."""
from alembic import op
import sqlalchemy as sa

def upgrade() -> None:
    op.alter_column("payments", "description", new_column_name="label")
    op.drop_column("payments", "metadata")
    op.add_column("payments", sa.Column("tier", sa.String(8), nullable=False))
    op.add_column("payments", sa.Column("kept", sa.String(8), nullable=False, server_default="a"))
    op.execute("ALTER TABLE refunds DROP COLUMN reason")
'''
    assert len(contract_steps(bad)) == 4
    marked = bad.replace(
        '"""Rename a column."""', '"""Contract: drops what 0.3 stopped reading."""'
    )
    assert contract_steps(marked) == []
