"""Provisioning shared by the CLI and the local stack: every schema's migrations and the SQS queues."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from services.kernel.config import CommonSettings, Env
from services.kernel.db import create_engine
from services.kernel.migrations import migrate, pending
from services.kernel.sqs import SqsClient
from services.ledger.config import LedgerSettings

SCHEMAS = ("ingest", "ledger", "reconciliation")


async def migrate_all(environ: Mapping[str, str] | None = None) -> None:
    """Applies the migrations of every context's schema."""
    settings = CommonSettings.from_env(Env(environ))
    for schema in SCHEMAS:
        engine = create_engine(settings.database_url, schema, pool_size=1)
        try:
            applied = await migrate(engine, schema, f"services.{schema}.migrations")
            status = f"applied {applied}" if applied else "up to date"
            logging.getLogger("payrecon.migrate").info("%s: %s", schema, status)
        finally:
            await engine.dispose()


async def pending_migrations(environ: Mapping[str, str] | None = None) -> dict[str, list[int]]:
    """The migrations each schema still lacks (schemas with none pending are left out); applies nothing."""
    # Only the database is needed: a pod waiting for its migrations must not need the services' secrets.
    database_url = Env(environ).text("PAYRECON_DATABASE_URL")
    missing: dict[str, list[int]] = {}
    for schema in SCHEMAS:
        engine = create_engine(database_url, schema, pool_size=1)
        try:
            versions = await pending(engine, schema, f"services.{schema}.migrations")
        finally:
            await engine.dispose()
        if versions:
            missing[schema] = versions
    return missing


async def create_queues(environ: Mapping[str, str] | None = None) -> None:
    """Creates the FIFO queues (and their dead-letter queues) named by the configuration."""
    # The ledger's settings name every queue: it consumes transfers and publishes to each event queue.
    ledger = LedgerSettings.from_env(Env(environ))
    settings = ledger.common
    async with SqsClient.connect(endpoint_url=settings.sqs_endpoint_url, region=settings.aws_region) as sqs:
        for name in (ledger.transfers_queue, *ledger.event_queues):
            url = await sqs.ensure_fifo_queue(
                name, visibility_timeout=settings.sqs_visibility_seconds, max_receives=settings.sqs_max_receives
            )
            logging.getLogger("payrecon.queues").info("queue ready: %s", url)
