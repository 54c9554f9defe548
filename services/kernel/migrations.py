"""Applies one schema's SQL migrations in order, once each, under an advisory lock.

Migrations are files `NNNN_description.sql` in the context's `migrations/` package; applied versions
are recorded in `<schema>.schema_migrations`, so every context migrates independently.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.db import driver_connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str) -> list[Migration]:
    migrations = []
    for entry in resources.files(package).iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            migrations.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {package}")
    return migrations


async def pending(engine: AsyncEngine, schema: str, package: str) -> list[int]:
    """The versions of `package` not yet applied to `schema` (all of them before its first migration);
    applies nothing and takes no lock."""
    async with engine.connect() as conn:
        table = await conn.scalar(text("SELECT to_regclass(:t)"), {"t": f'"{schema}".schema_migrations'})
        done: set[int] = set()
        if table is not None:
            rows = await conn.execute(text(f'SELECT version FROM "{schema}".schema_migrations'))
            done = {row.version for row in rows}
    return [m.version for m in load_migrations(package) if m.version not in done]


async def migrate(engine: AsyncEngine, schema: str, package: str, *, until: int | None = None) -> list[int]:
    """Creates the schema if needed and applies pending migrations (those up to version `until` when it
    is given: a schema as an earlier release left it); returns the versions applied.

    Raises RuntimeError when an applied migration's file has changed since.
    """
    applied_now: list[int] = []
    lock_key = int.from_bytes(hashlib.sha256(f"payrecon:{schema}".encode()).digest()[:8], "big", signed=True)
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        rows = await conn.execute(text("SELECT version, checksum FROM schema_migrations"))
        done = {row.version: row.checksum for row in rows}
        for migration in load_migrations(package):
            if until is not None and migration.version > until:
                break
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise RuntimeError(
                        f"{schema} migration {migration.version} ({migration.name}) changed after it was applied"
                    )
                continue
            await (await driver_connection(conn)).execute(migration.sql)  # simple protocol: many statements
            await conn.execute(
                text("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)"),
                {"v": migration.version, "n": migration.name, "c": migration.checksum},
            )
            applied_now.append(migration.version)
            log.info("applied migration", extra={"fields": {"schema": schema, "version": migration.version}})
    return applied_now
