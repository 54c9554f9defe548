"""A database that cannot be reached is an outage — Unavailable, a retryable 503 — not a bug (INTERNAL,
500): each context's adapter says so, with real asyncpg and SQLAlchemy errors, while a statement the
database refuses stays what it was."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.devstack.processes import free_port
from services.ingest.adapters.store import IngestStore
from services.ingest.domain.model import RequestStatus, SubmitTransaction, TransferOutcome, validate_submission
from services.kernel.db import asyncpg_url, create_engine, is_outage, outages_as_unavailable
from services.kernel.errors import Unavailable
from services.kernel.money import Money
from services.ledger.adapters.repository import SqlLedgerUnitOfWork
from services.ledger.domain.model import TransferInstruction
from services.ledger.service.ledger import LedgerService, NewAccount

pytestmark = pytest.mark.integration


def nothing_listening() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


async def test_the_ledger_reports_an_unreachable_database_as_unavailable() -> None:
    engine = create_engine(nothing_listening(), "ledger")
    ledger = LedgerService(SqlLedgerUnitOfWork(engine))
    try:
        calls = [
            ledger.account("wallet"),
            ledger.create_account(NewAccount("wallet", "USD", "ASSET", False, None, {})),
            ledger.post_transfers([TransferInstruction("t1", "a", "b", Money(100, "USD"))]),
            ledger.history("wallet", limit=0, cursor=""),
            ledger.ping(),
        ]
        for call in calls:
            with pytest.raises(Unavailable) as unavailable:
                await call
            assert unavailable.value.code == "SERVICE_UNAVAILABLE" and "retry" in unavailable.value.message
    finally:
        await engine.dispose()


async def test_ingest_reports_an_unreachable_database_as_unavailable() -> None:
    engine = create_engine(nothing_listening(), "ingest")
    store = IngestStore(engine)
    submission = validate_submission(
        SubmitTransaction(
            idempotency_key="k1",
            source_account_id="a",
            destination_account_id="b",
            amount="1.00",
            currency="",
            metadata={},
            has_transaction=True,
        ),
        default_currency="USD",
    )
    now = datetime.now(UTC)
    try:
        calls = [
            store.record_accepted(submission, message_id="m", accepted_at=now, expires_at=now, message_group="g"),
            store.get("k1"),
            store.record_outcomes([TransferOutcome("k1", RequestStatus.COMPLETED, now)]),
            store.purge_expired(now, 10),
            store.outbox_pending(),
            store.ping(),
        ]
        for call in calls:
            with pytest.raises(Unavailable):
                await call
    finally:
        await engine.dispose()


async def test_an_exhausted_pool_is_an_outage_and_a_refused_statement_is_not(database_url: str) -> None:
    engine: AsyncEngine = create_async_engine(asyncpg_url(database_url), pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(Unavailable):
                async with outages_as_unavailable(), engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        async with engine.connect() as conn:
            with pytest.raises(Exception) as refused:
                await conn.execute(text("SELECT 1 / 0"))
            assert not is_outage(refused.value)
            await conn.rollback()
            await conn.execute(text("CREATE TEMP TABLE once (id int PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO once VALUES (1)"))
            with pytest.raises(Exception) as duplicate:
                async with outages_as_unavailable():
                    await conn.execute(text("INSERT INTO once VALUES (1)"))
            assert not isinstance(duplicate.value, Unavailable) and not is_outage(duplicate.value)
    finally:
        await engine.dispose()
