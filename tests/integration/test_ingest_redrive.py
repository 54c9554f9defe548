"""Against real PostgreSQL: which requests the redrive re-publishes, how often, and from what."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from payrecon.ledger.v1 import messages_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.store import IngestStore
from services.ingest.domain.model import SubmitTransaction, validate_submission
from services.ingest.service.redrive import RedriveService
from tests.integration.engines import migrated_engine

pytestmark = pytest.mark.integration
HOUR = 3600


@pytest.fixture
async def ingest_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, "ingest") as engine:
        yield engine


async def accept(store: IngestStore, key: str) -> None:
    submission = validate_submission(
        SubmitTransaction(key, f"{key}-src", f"{key}-dst", "2.50", "EUR", {"note": "n"}, code="PURCHASE"),
        default_currency="USD",
    )
    await store.record_accepted(
        submission,
        message_id=str(uuid.uuid4()),
        expires_at=datetime.now(UTC) + timedelta(days=1),
        accepted_at=datetime.now(UTC),
        message_group="original",
    )


async def test_only_published_requests_processing_past_the_age_are_redriven_once_per_age(
    ingest_engine: AsyncEngine,
) -> None:
    store = IngestStore(ingest_engine)
    run = uuid.uuid4().hex[:8]
    lost, unsent, done, young = (f"rd-{run}-{name}" for name in ("lost", "unsent", "done", "young"))
    for key in (lost, unsent, done, young):
        await accept(store, key)
    async with ingest_engine.begin() as conn:
        await conn.execute(
            text("UPDATE requests SET accepted_at = now() - interval '2 hours' WHERE idempotency_key = ANY(:keys)"),
            {"keys": [lost, unsent, done]},
        )
        await conn.execute(
            text("UPDATE outbox SET published_at = now() WHERE idempotency_key = ANY(:keys)"),
            {"keys": [lost, done, young]},
        )
        await conn.execute(
            text("UPDATE requests SET status = 'COMPLETED', completed_at = now() WHERE idempotency_key = :k"),
            {"k": done},
        )
    redrive = RedriveService(store, after_seconds=HOUR, batch=100, message_groups=16)
    before = await store.redrive_statistics(HOUR)

    assert await redrive.redrive_stuck() >= 1
    assert await redrive.redrive_stuck() == 0  # not again within the age

    async with ingest_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT r.idempotency_key, r.redrive_count, o.message_group, o.payload, o.published_at"
                    " FROM requests r JOIN outbox o USING (idempotency_key)"
                    " WHERE r.idempotency_key LIKE :run ORDER BY o.id"
                ),
                {"run": f"rd-{run}-%"},
            )
        ).all()
    redriven = [r for r in rows if r.message_group != "original"]
    assert [r.idempotency_key for r in redriven] == [lost]
    assert {r.idempotency_key: r.redrive_count for r in rows} == {lost: 1, unsent: 0, done: 0, young: 0}
    assert redriven[0].published_at is None  # the relay publishes it like any other row
    request = messages_pb2.TransferRequest.FromString(redriven[0].payload)
    assert (request.transfer_id, request.debit_account_id, request.credit_account_id) == (
        lost,
        f"{lost}-src",
        f"{lost}-dst",
    )
    assert (request.amount.minor_units, request.amount.currency, dict(request.metadata)) == (250, "EUR", {"note": "n"})
    assert request.code == "PURCHASE"  # its transfer type too: the ledger checks the same transfer
    after = await store.redrive_statistics(HOUR)
    assert after.redriven == before.redriven + 1
    assert after.stuck == before.stuck  # lost and unsent were stuck before and still are


async def test_a_redrive_tick_takes_at_most_one_batch(ingest_engine: AsyncEngine) -> None:
    store = IngestStore(ingest_engine)
    run = uuid.uuid4().hex[:8]
    keys = [f"rb-{run}-{i}" for i in range(5)]
    for key in keys:
        await accept(store, key)
    async with ingest_engine.begin() as conn:
        await conn.execute(
            text("UPDATE requests SET accepted_at = now() - interval '3 hours' WHERE idempotency_key = ANY(:keys)"),
            {"keys": keys},
        )
        await conn.execute(
            text("UPDATE outbox SET published_at = now() WHERE idempotency_key = ANY(:keys)"), {"keys": keys}
        )
    redrive = RedriveService(store, after_seconds=2 * HOUR, batch=2, message_groups=16)
    assert [await redrive.redrive_stuck() for _ in range(4)] == [2, 2, 1, 0]
