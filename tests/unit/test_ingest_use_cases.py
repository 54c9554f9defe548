"""Ingest's use cases against in-memory ports: submit, replay, conflict, status, outcomes, purge,
and the operational views. No IO."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.domain.errors import IdempotencyKeyReused, InvalidSubmission, UnknownTransaction
from services.ingest.domain.model import RequestStatus, SubmitTransaction, TransferOutcome
from services.ingest.service.operations import OperationsService
from services.ingest.service.transactions import TransactionService
from tests.unit.fakes.ingest import FakeIdempotencyCache, FakeQueue, FakeRequestStore


def submit(key: str = "k1", amount: object = 100.00, destination: str = "account-456") -> SubmitTransaction:
    return SubmitTransaction(key, "account-123", destination, amount, "USD", {})


def service() -> tuple[TransactionService, FakeRequestStore, FakeIdempotencyCache]:
    store, cache = FakeRequestStore(), FakeIdempotencyCache()
    return TransactionService(store, cache, 86400, "USD", 16), store, cache


async def test_a_submission_is_recorded_once_with_its_outbox_row() -> None:
    transactions, store, cache = service()
    accepted = await transactions.submit(submit())
    assert not accepted.replayed and accepted.idempotency_key == "k1"
    assert store.requests["k1"].amount.minor_units == 10000
    assert store.outbox == [("accounts-0011", "k1")]
    assert cache.entries["k1"].message_id == accepted.message_id


async def test_the_same_request_again_is_a_replay_and_a_different_one_a_conflict() -> None:
    transactions, store, cache = service()
    first = await transactions.submit(submit())
    again = await transactions.submit(submit(amount="100.00"))  # the same amount, written otherwise
    assert again.replayed and again.message_id == first.message_id
    with pytest.raises(IdempotencyKeyReused):
        await transactions.submit(submit(amount=100.01))
    cache.entries.clear()  # the fast path lost: PostgreSQL still decides
    assert (await transactions.submit(submit())).replayed
    with pytest.raises(IdempotencyKeyReused):
        await transactions.submit(submit(destination="someone-else"))
    assert len(store.outbox) == 1


async def test_concurrent_submissions_of_one_key_make_one_request() -> None:
    transactions, store, _ = service()
    results = await asyncio.gather(*(transactions.submit(submit()) for _ in range(20)))
    assert sum(not r.replayed for r in results) == 1
    assert len({r.message_id for r in results}) == 1
    assert len(store.outbox) == 1


async def test_bad_input_stores_nothing() -> None:
    transactions, store, cache = service()
    for bad in (submit(amount="1.001"), submit(key=""), submit(destination="account-123"), submit(amount=None)):
        with pytest.raises(InvalidSubmission):
            await transactions.submit(bad)
    assert not store.requests and not store.outbox and not cache.entries


async def test_status_follows_the_ledgers_outcome_once() -> None:
    transactions, _, _ = service()
    await transactions.submit(submit())
    assert (await transactions.status("k1")).status is RequestStatus.PROCESSING
    now = datetime.now(UTC)
    assert await transactions.record_outcomes([TransferOutcome("k1", RequestStatus.COMPLETED, now)]) == 1
    assert await transactions.record_outcomes([TransferOutcome("k1", RequestStatus.FAILED, now, "X", "y")]) == 0
    assert (await transactions.status("k1")).status is RequestStatus.COMPLETED
    with pytest.raises(UnknownTransaction):
        await transactions.status("never-seen")
    with pytest.raises(InvalidSubmission):
        await transactions.status("bad key")


async def test_purge_forgets_expired_keys_with_an_outcome_only() -> None:
    store, cache = FakeRequestStore(), FakeIdempotencyCache()
    transactions = TransactionService(store, cache, 60, "USD", 16)
    await transactions.submit(submit("done"))
    await transactions.submit(submit("waiting"))
    await transactions.record_outcomes([TransferOutcome("done", RequestStatus.COMPLETED, datetime.now(UTC))])
    for key, stored in list(store.requests.items()):
        store.requests[key] = stored.__class__(**{**stored.__dict__, "expires_at": datetime.now(UTC) - timedelta(1)})
    assert await transactions.purge_expired() == 1
    assert set(store.requests) == {"waiting"}


async def test_readiness_needs_the_database_and_the_queue_but_not_the_cache() -> None:
    store, cache, queue = FakeRequestStore(), FakeIdempotencyCache(), FakeQueue()
    operations = OperationsService(store, cache, queue, "transfers.fifo", 60)
    assert (await operations.readiness()).ready
    cache.down = True
    report = await operations.readiness()
    assert report.ready and report.cache.startswith("degraded")
    queue.down = True
    report = await operations.readiness()
    assert not report.ready and report.queue.startswith("unavailable")
    queue.down, store.down = False, True
    assert not (await operations.readiness()).ready


async def test_queue_statistics_report_depth_dead_letters_and_outbox_backlog() -> None:
    store, cache, queue = FakeRequestStore(), FakeIdempotencyCache(), FakeQueue()
    queue.depth = {"transfers.fifo": 7, "transfers-dlq.fifo": 2}
    operations = OperationsService(store, cache, queue, "transfers.fifo", 60)
    transactions = TransactionService(store, cache, 86400, "USD", 16)
    await transactions.submit(submit())
    stats = await operations.queue_statistics()
    assert (stats.queue.messages, stats.dlq_messages, stats.outbox_pending) == (7, 2, 1)
    assert stats.dlq_url.endswith("-dlq.fifo")
