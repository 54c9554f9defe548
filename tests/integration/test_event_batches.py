"""Against real PostgreSQL: the event side applies what one SQS receive brings in ONE statement —
ingest's status updates from the ledger's outcomes, reconciliation's projection of posted entries —
and a redelivered batch changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import messages_pb2
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.store import IngestStore
from services.ingest.domain.model import RequestStatus, TransferOutcome
from services.reconciliation.adapters.store import ReconciliationStore
from tests.integration.engines import migrated_engine

pytestmark = pytest.mark.integration
BATCH = 200  # transfers in one received batch (10 messages of 20 events, say)


@pytest.fixture(scope="module")
async def ingest_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, "ingest") as engine:
        yield engine


@pytest.fixture(scope="module")
async def recon_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, "reconciliation") as engine:
        yield engine


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements `engine` sends to PostgreSQL inside the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_outcomes_of_a_received_batch_are_one_update_and_a_redelivery_changes_nothing(
    ingest_engine: AsyncEngine,
) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"batch-{run}-{i}" for i in range(BATCH)]
    async with ingest_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO requests (idempotency_key, fingerprint, message_id, source_account_id,"
                " destination_account_id, amount_minor, currency, metadata, expires_at)"
                " SELECT k, 'fp', gen_random_uuid(), 'a', 'b', 100, 'USD', '{}'::jsonb, now() + interval '1 day'"
                " FROM unnest(CAST(:keys AS text[])) AS k"
            ),
            {"keys": keys},
        )
    at = datetime.now(UTC).replace(microsecond=0)
    outcomes = [
        TransferOutcome(k, RequestStatus.COMPLETED, at)
        if i % 4
        else TransferOutcome(k, RequestStatus.FAILED, at, "LEDGER_INSUFFICIENT_FUNDS", "no funds")
        for i, k in enumerate(keys)
    ]
    store = IngestStore(ingest_engine)
    with statements(ingest_engine) as sent:
        assert await store.record_outcomes(outcomes) == BATCH
    assert len(sent) == 1, sent

    async def snapshot() -> list[tuple[Any, ...]]:
        async with ingest_engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT idempotency_key, status, error_code, completed_at FROM requests"
                    " WHERE idempotency_key = ANY(CAST(:keys AS text[])) ORDER BY idempotency_key"
                ),
                {"keys": keys},
            )
            return [tuple(r) for r in rows]

    first = await snapshot()
    assert sum(1 for r in first if r[1] == "FAILED") == BATCH // 4
    assert all(r[3] == at for r in first)
    # The same batch again, and a conflicting verdict later: the first outcome stands.
    later = at + timedelta(seconds=5)
    assert await store.record_outcomes(outcomes) == 0
    assert await store.record_outcomes([TransferOutcome(k, RequestStatus.FAILED, later, "X", "y") for k in keys]) == 0
    assert await snapshot() == first


def posted(transfer_id: str, debit_entry: int, at: datetime) -> messages_pb2.LedgerEvent:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return messages_pb2.LedgerEvent(
        transfer_posted=messages_pb2.TransferPosted(
            transfer_id=transfer_id,
            debit_account_id=f"{transfer_id}-from",
            credit_account_id=f"{transfer_id}-to",
            amount=money_pb2.Money(minor_units=1234, currency="EUR"),
            posted_at=stamp,
            debit_entry_id=debit_entry,
            credit_entry_id=debit_entry + 1,
            metadata={"reference": f"ref-{transfer_id}"},
        )
    )


async def test_the_projection_adds_a_received_batch_in_one_insert_and_a_redelivery_adds_nothing(
    recon_engine: AsyncEngine,
) -> None:
    run = uuid.uuid4().hex[:8]
    at = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    events = [posted(f"proj-{run}-{i}", 2 * i + 1, at) for i in range(BATCH)]
    # A rejection travels in the same batches and adds no entry.
    events.append(
        messages_pb2.LedgerEvent(transfer_rejected=messages_pb2.TransferRejected(transfer_id=f"proj-{run}-refused"))
    )
    store = ReconciliationStore(recon_engine)
    with statements(recon_engine) as sent:
        assert await store.project_events(events) == 2 * BATCH
    assert len(sent) == 1, sent

    async def entries() -> list[tuple[Any, ...]]:
        async with recon_engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT transfer_id, account_id, direction, amount_minor, currency, entry_id, reference"
                    " FROM ledger_entries WHERE transfer_id LIKE :p ORDER BY entry_id"
                ),
                {"p": f"proj-{run}-%"},
            )
            return [tuple(r) for r in rows]

    first = await entries()
    assert len(first) == 2 * BATCH
    assert first[0] == (f"proj-{run}-0", f"proj-{run}-0-from", "DEBIT", 1234, "EUR", 1, f"ref-proj-{run}-0")
    # Redelivered, alone and with the batch's own duplicates inside one received batch.
    assert await store.project_events(events) == 0
    assert await store.project_events(events[:10] + events[:10]) == 0
    assert await entries() == first
