"""Group commit of submissions against real PostgreSQL and Redis: a burst of concurrent submits with
new keys, repeated keys and reused keys makes exactly the rows it should, each caller gets exactly
its answer, a failed statement accepts nobody, and every outbox row carries its own caller's trace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as redis
from opentelemetry import context as otel_context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.devstack.processes import free_port
from services.ingest.adapters.cache import RedisIdempotencyCache
from services.ingest.adapters.store import IngestStore
from services.ingest.domain.errors import IdempotencyKeyReused
from services.ingest.domain.model import Acceptance, SubmitTransaction, validate_submission
from services.ingest.service.group_commit import GroupCommit
from services.ingest.service.ports import NewRequest, Recorded
from services.ingest.service.transactions import TransactionService
from services.kernel.db import create_engine
from services.kernel.errors import Unavailable
from services.kernel.telemetry import context_from_traceparent
from tests.integration.engines import migrated_engine

pytestmark = pytest.mark.integration


@pytest.fixture
async def ingest_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(database_url, "ingest") as engine:
        yield engine


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisIdempotencyCache]:
    client = redis.Redis.from_url(redis_url)
    yield RedisIdempotencyCache(client, prefix=f"gc-test-{uuid.uuid4().hex[:8]}:", ttl_seconds=600)
    await client.aclose()


class CountingStore(IngestStore):
    """The real store, counting its writes."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.writes: list[int] = []

    async def record_requests(self, requests: Sequence[NewRequest]) -> list[Recorded]:
        self.writes.append(len(requests))
        return await super().record_requests(requests)


def command(key: str, amount: str = "1.00", source: str = "gc-src") -> SubmitTransaction:
    return SubmitTransaction(key, source, "gc-dst", amount, "USD", {"run": "group-commit"})


def transactions_over(store: IngestStore, cache: RedisIdempotencyCache) -> TransactionService:
    return TransactionService(store, cache, 86400, "USD", 16, GroupCommit(store, cache))


async def counts(engine: AsyncEngine, prefix: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM requests WHERE idempotency_key LIKE :p) AS requests,"
                    " (SELECT count(*) FROM outbox WHERE idempotency_key LIKE :p) AS outbox"
                ),
                {"p": prefix + "%"},
            )
        ).one()
    return int(row.requests), int(row.outbox)


async def test_two_hundred_concurrent_submits_make_exactly_the_right_rows_and_answers(
    ingest_engine: AsyncEngine, cache: RedisIdempotencyCache
) -> None:
    run = f"gc-{uuid.uuid4().hex[:8]}"
    store = CountingStore(ingest_engine)
    transactions = transactions_over(store, cache)
    earlier = {n: await transactions.submit(command(f"{run}-old-{n}")) for n in range(20)}
    store.writes.clear()

    burst = (
        [command(f"{run}-new-{n}") for n in range(100)]
        + [command(f"{run}-twice-{n}") for n in range(20) for _ in range(2)]  # same request twice
        + [command(f"{run}-reused-{n}", amount) for n in range(20) for amount in ("1.00", "2.00")]  # differs
        + [command(f"{run}-old-{n}", "1.00" if n < 10 else "3.00") for n in range(20)]  # stored before
    )
    assert len(burst) == 200
    answers = await asyncio.gather(*(transactions.submit(c) for c in burst), return_exceptions=True)
    assert sum(store.writes) < 200, store.writes  # the burst shared writes

    by_key: dict[str, list[object]] = {}
    for c, answer in zip(burst, answers, strict=True):
        by_key.setdefault(c.idempotency_key, []).append(answer)
    for n in range(100):
        (answer,) = by_key[f"{run}-new-{n}"]
        assert isinstance(answer, Acceptance) and not answer.replayed
    for n in range(20):
        first, second = by_key[f"{run}-twice-{n}"]
        assert isinstance(first, Acceptance) and isinstance(second, Acceptance)
        assert sorted((first.replayed, second.replayed)) == [False, True]
        assert first.message_id == second.message_id
        reused = by_key[f"{run}-reused-{n}"]
        assert sum(isinstance(a, Acceptance) and not a.replayed for a in reused) == 1
        assert sum(isinstance(a, IdempotencyKeyReused) for a in reused) == 1
        (old,) = by_key[f"{run}-old-{n}"]
        if n < 10:
            assert isinstance(old, Acceptance) and old.replayed and old.message_id == earlier[n].message_id
        else:
            assert isinstance(old, IdempotencyKeyReused)

    assert await counts(ingest_engine, run) == (160, 160)  # one request and one outbox row per key
    for key in by_key:
        assert await cache.get(key) is not None  # the fast path knows every key from its 202 on


async def test_the_same_keys_from_two_writers_at_once_make_one_request_each(
    ingest_engine: AsyncEngine, cache: RedisIdempotencyCache
) -> None:
    """Two processes, say: each batches its own callers; PostgreSQL's unique key decides between them."""
    run = f"gc2-{uuid.uuid4().hex[:8]}"
    one, two = (transactions_over(IngestStore(ingest_engine), cache) for _ in range(2))
    keys = [f"{run}-{n}" for n in range(50)]
    answers = await asyncio.gather(
        *(service.submit(command(key)) for key in keys for service in (one, two)), return_exceptions=True
    )
    for n in range(50):
        pair = answers[2 * n : 2 * n + 2]
        assert all(isinstance(a, Acceptance) for a in pair), pair
        accepted = [a for a in pair if isinstance(a, Acceptance)]
        assert sorted(a.replayed for a in accepted) == [False, True]
        assert accepted[0].message_id == accepted[1].message_id
    assert await counts(ingest_engine, run) == (50, 50)


async def test_a_statement_that_fails_records_nothing_of_its_batch(ingest_engine: AsyncEngine) -> None:
    run = f"gc3-{uuid.uuid4().hex[:8]}"
    store = IngestStore(ingest_engine)
    now = datetime.now(UTC)
    shared_message_id = str(uuid.uuid4())

    def request(n: int, message_id: str) -> NewRequest:
        submission = validate_submission(command(f"{run}-{n}"), default_currency="USD")
        return NewRequest(submission, submission.fingerprint(), message_id, now, now + timedelta(days=1), "g")

    batch = [request(0, shared_message_id), request(1, str(uuid.uuid4())), request(2, shared_message_id)]
    with pytest.raises(Exception) as refused:
        await store.record_requests(batch)  # message ids are unique: the third row is refused
    assert "message_id" in str(refused.value)
    assert await counts(ingest_engine, run) == (0, 0)  # and the two others went with it
    recorded = await store.record_requests(batch[:2])
    assert [r.created for r in recorded] == [True, True]


async def test_an_unreachable_database_fails_every_caller_of_the_batch(cache: RedisIdempotencyCache) -> None:
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", "ingest")
    transactions = transactions_over(IngestStore(engine), cache)
    run = f"gc4-{uuid.uuid4().hex[:8]}"
    try:
        answers = await asyncio.gather(
            *(transactions.submit(command(f"{run}-{n}")) for n in range(10)), return_exceptions=True
        )
    finally:
        await engine.dispose()
    assert all(isinstance(a, Unavailable) and a.code == "SERVICE_UNAVAILABLE" for a in answers), answers
    assert all([await cache.get(f"{run}-{n}") is None for n in range(10)])


async def test_each_outbox_row_carries_its_own_callers_trace(
    ingest_engine: AsyncEngine, cache: RedisIdempotencyCache
) -> None:
    run = f"gc5-{uuid.uuid4().hex[:8]}"
    transactions = transactions_over(IngestStore(ingest_engine), cache)
    traces = {f"{run}-{n}": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" for n in range(10)}

    async def submit_in_trace(key: str) -> Acceptance:
        token = otel_context.attach(context_from_traceparent(traces[key]))
        try:
            return await transactions.submit(command(key))
        finally:
            otel_context.detach(token)

    await asyncio.gather(*(submit_in_trace(key) for key in traces))
    async with ingest_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT idempotency_key, traceparent FROM outbox WHERE idempotency_key LIKE :p"), {"p": run + "%"}
        )
        assert {r.idempotency_key: r.traceparent for r in rows} == traces


async def test_a_connection_the_server_dropped_is_a_503_once_and_never_reused(
    ingest_engine: AsyncEngine, database_url: str
) -> None:
    """The hot statements run on the asyncpg driver, behind SQLAlchemy's back: a connection that broke
    there must be dropped from the pool, not handed to the next request."""
    engine = create_engine(database_url, "ingest", pool_size=1)
    store = IngestStore(engine)
    run = f"gc6-{uuid.uuid4().hex[:8]}"
    try:
        assert await store.get(run) is None
        async with engine.connect() as conn:  # the one pooled connection
            backend = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with ingest_engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(Unavailable):
            await store.get(run)
        assert await store.get(run) is None  # on a fresh connection
        recorded = await store.record_requests(
            [
                NewRequest(s, s.fingerprint(), str(uuid.uuid4()), datetime.now(UTC), datetime.now(UTC), "g")
                for s in [validate_submission(command(run), default_currency="USD")]
            ]
        )
        assert [r.created for r in recorded] == [True]
    finally:
        await engine.dispose()
