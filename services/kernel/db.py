"""Async SQLAlchemy engines bound to one service's own PostgreSQL schema, and what an outage of the
database looks like to the code above the adapters (services.kernel.errors.Unavailable)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import exc as sqlalchemy_errors
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.kernel.config import ConfigError
from services.kernel.errors import Unavailable

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def asyncpg_url(database_url: str) -> str:
    """postgresql://... → postgresql+asyncpg://... (other drivers are refused)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"PAYRECON_DATABASE_URL must be a PostgreSQL URL, got {url.get_backend_name()!r}")
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(database_url: str, schema: str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine whose connections see only `schema` (then pg_catalog) on their search_path."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"invalid schema name {schema!r}")
    return create_async_engine(
        asyncpg_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout (7% of ingest's CPU under load). A connection
        # broken by a database restart fails one call (a retryable 503) and is discarded from the pool.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"server_settings": {"search_path": schema, "application_name": f"payrecon-{schema}"}},
    )


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, in its transaction: for COPY, cursors and multi-statement
    scripts, which SQLAlchemy does not expose."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if driver is None:
        raise RuntimeError("the database connection is closed")
    return driver


# SQLSTATE classes and codes that say the server cannot serve now, whatever the statement:
# 08 connection exception, 53 insufficient resources (too many connections, disk full, out of
# memory), 57P01-57P03 shutting down, crashed, starting up.
_OUTAGE_CLASSES = ("08", "53")
_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03"})


def is_outage(error: BaseException | None) -> bool:
    """Whether `error` (or what it wraps) says the database cannot be reached now — refused or lost
    connection, server shutting down or starting, too many connections, pool exhausted, timed out —
    so a retry may succeed; not a statement the database refused (a constraint) or a bug."""
    seen = 0
    while error is not None and seen < 6:
        if isinstance(error, OSError | TimeoutError | sqlalchemy_errors.TimeoutError):
            return True
        if getattr(error, "connection_invalidated", False):  # SQLAlchemy recognized a disconnect
            return True
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str) and (state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_STATES):
            return True
        error = getattr(error, "orig", None) or error.__cause__
        seen += 1
    return False


@contextlib.asynccontextmanager
async def outages_as_unavailable() -> AsyncIterator[None]:
    """Turns a database outage raised in the block into Unavailable (gRPC UNAVAILABLE, REST 503
    SERVICE_UNAVAILABLE); every other error passes unchanged. Adapters wrap their transactions in it."""
    try:
        yield
    except Exception as error:
        if is_outage(error):
            raise Unavailable(
                "the database is unavailable; retry the same request in a few seconds",
                code="SERVICE_UNAVAILABLE",
                metadata={"dependency": "database"},
            ) from error
        raise
