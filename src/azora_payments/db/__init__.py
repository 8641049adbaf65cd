"""Persistence: models, the engine and sessions, repositories; Alembic migrations beside them."""
