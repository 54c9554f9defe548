"""Engines on a context's schema with its migrations applied, for the integration tests' fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.db import create_engine
from services.kernel.migrations import migrate


@asynccontextmanager
async def migrated_engine(database_url: str, context: str, schema: str | None = None) -> AsyncIterator[AsyncEngine]:
    """An engine on `schema` (default: the context's own) with `context`'s migrations applied there,
    disposed of afterwards."""
    schema = schema or context
    engine = create_engine(database_url, schema)
    await migrate(engine, schema, f"services.{context}.migrations")
    try:
        yield engine
    finally:
        await engine.dispose()
