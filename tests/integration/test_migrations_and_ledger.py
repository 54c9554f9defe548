"""Against real PostgreSQL: migrations from empty, exactly-once posting, redelivery, concurrent keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.store import IngestStore
from services.ingest.domain.model import SubmitTransaction, validate_submission
from services.kernel.db import create_engine
from services.kernel.migrations import migrate
from services.kernel.money import Money
from services.ledger.adapters.repository import SqlLedgerUnitOfWork
from services.ledger.domain.events import TransferPosted, TransferRejected
from services.ledger.domain.model import TransferInstruction
from services.ledger.service.ledger import LedgerService
from tests.integration.engines import migrated_engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
async def ledger_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, "ledger")
    await migrate(engine, "ledger", "services.ledger.migrations")
    assert await migrate(engine, "ledger", "services.ledger.migrations") == []  # idempotent
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def ingest_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, "ingest") as engine:
        yield engine


async def test_every_schema_migrates_from_empty_once_and_refuses_an_edited_migration(database_url: str) -> None:
    from importlib import resources

    expected_tables = {
        "ingest": {"requests", "outbox"},
        "ledger": {"accounts", "transfers", "entries", "outbox", "processed_messages"},
        "reconciliation": {"ledger_entries", "runs", "statement_imports", "statements", "statement_lines", "cases"},
    }
    for schema in ("ingest", "ledger", "reconciliation"):
        engine = create_engine(database_url, schema)
        try:
            package = f"services.{schema}.migrations"
            files = sorted(f.name for f in resources.files(package).iterdir() if f.name.endswith(".sql"))
            await migrate(engine, schema, package)
            assert await migrate(engine, schema, package) == []  # nothing left to apply the second time
            async with engine.connect() as conn:
                tables = {
                    r[0]
                    for r in await conn.execute(
                        text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
                    )
                }
                applied = (await conn.execute(text("SELECT count(*) FROM schema_migrations"))).scalar_one()
            assert tables >= expected_tables[schema] | {"schema_migrations"}, (schema, tables)
            assert applied == len(files), (schema, applied, files)  # every file recorded, with its checksum
            async with engine.begin() as conn:
                original = (
                    await conn.execute(text("SELECT checksum FROM schema_migrations WHERE version = 1"))
                ).scalar_one()
                await conn.execute(text("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1"))
            with pytest.raises(Exception, match="changed after it was applied"):
                await migrate(engine, schema, package)
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE schema_migrations SET checksum = :c WHERE version = 1"), {"c": original}
                )
        finally:
            await engine.dispose()


def t(i: str, debit: str, credit: str, minor: int) -> TransferInstruction:
    return TransferInstruction(i, debit, credit, Money(minor, "USD"))


async def invariants(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        debits, credits = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(amount_minor) FILTER (WHERE direction='DEBIT'),0),"
                    " coalesce(sum(amount_minor) FILTER (WHERE direction='CREDIT'),0) FROM entries"
                )
            )
        ).one()
        assert debits == credits
        drift = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM accounts a WHERE a.debits_posted <> coalesce((SELECT sum(amount_minor) FROM entries"
                    " e WHERE e.account_id = a.id AND direction='DEBIT'),0) OR a.credits_posted <> coalesce((SELECT"
                    " sum(amount_minor) FROM entries e WHERE e.account_id = a.id AND direction='CREDIT'),0)"
                )
            )
        ).scalar_one()
        assert drift == 0
        per_transfer = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT transfer_id FROM entries GROUP BY transfer_id HAVING count(*) <> 2) x"
                )
            )
        ).scalar_one()
        assert per_transfer == 0


async def test_a_batch_posts_each_transfer_once_and_redelivery_changes_nothing(ledger_engine: AsyncEngine) -> None:
    ledger = LedgerService(SqlLedgerUnitOfWork(ledger_engine))
    batch = [
        t("it-a1", "it-src", "it-dst", 10000),
        t("it-a2", "it-src", "it-dst", 250),
        t("it-a1", "it-src", "it-dst", 10000),
    ]
    first = await ledger.post_transfers(batch, message_id="msg-1")
    assert [(type(e), e.transfer_id) for e in first] == [
        (TransferPosted, "it-a1"),
        (TransferPosted, "it-a2"),
        (TransferPosted, "it-a1"),  # repeated within the batch: the first one's outcome
    ]
    assert first[0] is first[2]
    entries = {e.transfer_id: (e.debit_entry_id, e.credit_entry_id) for e in first if isinstance(e, TransferPosted)}
    for message_id in ("msg-1", "msg-2"):  # the same message redelivered; the same transfers in a new one
        again = await ledger.post_transfers(batch, message_id=message_id)
        assert [type(e) for e in again] == [TransferPosted] * 3
        assert {
            e.transfer_id: (e.debit_entry_id, e.credit_entry_id) for e in again if isinstance(e, TransferPosted)
        } == entries
    source = await ledger.account("it-src")
    assert source.balance_minor == -10250
    await invariants(ledger_engine)


async def test_the_postings_count_is_told_transfers_committed_once(ledger_engine: AsyncEngine) -> None:
    """What payrecon_ledger_transfers_posted_total adds: transfers given entries, per committed
    transaction; a replay of known transfers and a rejected one post nothing."""
    told: list[int] = []
    ledger = LedgerService(SqlLedgerUnitOfWork(ledger_engine, on_posted=told.append))
    batch = [
        t("it-p1", "it-psrc", "it-pdst", 100),
        t("it-p2", "it-psrc", "it-pdst", 200),
        t("it-p1", "it-psrc", "it-pdst", 100),
    ]
    await ledger.post_transfers(batch)
    assert told == [2]
    await ledger.post_transfers(batch)  # known ids: their original outcomes, no entries
    await ledger.post_transfers([t("it-p3", "it-psrc", "it-pdst", 0)])  # INVALID_AMOUNT: refused, nothing stored
    assert told == [2]


async def test_concurrent_batches_on_shared_accounts_do_not_deadlock(ledger_engine: AsyncEngine) -> None:
    ledger = LedgerService(SqlLedgerUnitOfWork(ledger_engine))
    accounts = [f"it-c{i}" for i in range(6)]

    async def batch(n: int) -> None:
        moves = [
            t(f"it-cc-{n}-{k}", accounts[(n + k) % 6], accounts[(n + 2 * k + 1) % 6], 1 + k)
            for k in range(20)
            if (n + k) % 6 != (n + 2 * k + 1) % 6
        ]
        await ledger.apply_message(moves, f"cc-{n}")

    await asyncio.wait_for(asyncio.gather(*(batch(n) for n in range(12))), timeout=60)
    await invariants(ledger_engine)
    async with ledger_engine.connect() as conn:
        total = (await conn.execute(text("SELECT count(*) FROM transfers WHERE id LIKE 'it-cc-%'"))).scalar_one()
    assert total == sum(1 for n in range(12) for k in range(20) if (n + k) % 6 != (n + 2 * k + 1) % 6)


async def test_fifty_concurrent_inserts_of_one_key_store_one_request(ingest_engine: AsyncEngine) -> None:
    store = IngestStore(ingest_engine)
    submission = validate_submission(SubmitTransaction("it-same-key", "a1", "a2", 5.0, "USD"), default_currency="USD")

    async def attempt(i: int) -> bool:
        stored = await store.record_accepted(
            submission,
            message_id=f"00000000-0000-0000-0000-{i:012d}",
            expires_at=datetime.now(UTC) + timedelta(days=1),
            message_group="g",
            accepted_at=datetime.now(UTC),
        )
        return stored is not None

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert sum(results) == 1
    async with ingest_engine.connect() as conn:
        outbox = (
            await conn.execute(text("SELECT count(*) FROM outbox WHERE idempotency_key = 'it-same-key'"))
        ).scalar_one()
    assert outbox == 1


async def test_a_transfer_id_sent_again_in_a_new_message_gets_its_outcome_told_again(
    ledger_engine: AsyncEngine,
) -> None:
    ledger = LedgerService(SqlLedgerUnitOfWork(ledger_engine))
    await ledger.post_transfers([t("it-r1", "it-r-src", "it-r-dst", 700)], message_id="r-msg-1")
    (same,) = await ledger.post_transfers([t("it-r1", "it-r-src", "it-r-dst", 700)], message_id="r-msg-2")
    (other,) = await ledger.post_transfers([t("it-r1", "it-r-src", "it-r-dst", 999)], message_id="r-msg-3")
    assert isinstance(same, TransferPosted) and same.transfer.amount.minor_units == 700
    assert isinstance(other, TransferRejected) and other.code == "LEDGER_TRANSFER_EXISTS"
    source = await ledger.account("it-r-src")
    assert source.balance_minor == -700  # posted once, whatever came again
    async with ledger_engine.connect() as conn:
        queued = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM outbox"
                    " WHERE published_at IS NULL AND position('it-r1' in encode(payload, 'escape')) > 0"
                )
            )
        ).scalar_one()
    assert queued == 3  # the outcome, told again twice: the senders are waiting for an answer
    await invariants(ledger_engine)


async def test_expired_keys_are_purged_once_their_outcome_is_known(ingest_engine: AsyncEngine) -> None:
    from services.ingest.domain.model import RequestStatus, TransferOutcome
    from services.ingest.service.transactions import TransactionService
    from tests.unit.fakes.ingest import FakeIdempotencyCache

    store = IngestStore(ingest_engine)
    past = datetime.now(UTC) - timedelta(seconds=1)
    for i, key in enumerate(("it-old-done", "it-old-processing", "it-fresh-done")):
        submission = validate_submission(SubmitTransaction(key, "p1", "p2", 1.0, "USD"), default_currency="USD")
        expires = past if key.startswith("it-old") else datetime.now(UTC) + timedelta(days=1)
        await store.record_accepted(
            submission,
            message_id=f"10000000-0000-0000-0000-{i:012d}",
            expires_at=expires,
            message_group="g",
            accepted_at=datetime.now(UTC),
        )
    async with ingest_engine.begin() as conn:
        await conn.execute(text("UPDATE outbox SET published_at = now()"))
    await store.record_outcomes(
        [TransferOutcome(k, RequestStatus.COMPLETED, datetime.now(UTC)) for k in ("it-old-done", "it-fresh-done")]
    )

    service = TransactionService(store, FakeIdempotencyCache(), 86400, "USD", 4)
    assert await service.purge_expired(batch=1) >= 1
    assert await store.get("it-old-done") is None
    assert await store.get("it-old-processing") is not None  # no outcome yet: its key still guards retries
    assert await store.get("it-fresh-done") is not None
    async with ingest_engine.connect() as conn:
        orphans = (
            await conn.execute(text("SELECT count(*) FROM outbox WHERE idempotency_key = 'it-old-done'"))
        ).scalar_one()
    assert orphans == 0
