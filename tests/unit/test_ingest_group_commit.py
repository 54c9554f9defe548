"""Group commit of submissions against in-memory ports: who shares a write, what each caller is told
(accepted, replay, conflict), and that a failed write accepts nobody. No IO."""

from __future__ import annotations

import asyncio

import pytest

from services.ingest.domain.errors import IdempotencyKeyReused
from services.ingest.domain.model import Acceptance, SubmitTransaction
from services.ingest.service.group_commit import GroupCommit
from services.ingest.service.transactions import TransactionService
from services.kernel.errors import Unavailable
from tests.unit.fakes.ingest import FakeIdempotencyCache, FakeRequestStore


def submit(key: str, amount: object = "1.00") -> SubmitTransaction:
    return SubmitTransaction(key, "account-123", "account-456", amount, "USD", {})


def service(
    *, window_seconds: float = 10.0, max_rows: int = 256, max_writes: int = 4
) -> tuple[TransactionService, FakeRequestStore, FakeIdempotencyCache]:
    store, cache = FakeRequestStore(), FakeIdempotencyCache()
    commits = GroupCommit(store, cache, window_seconds=window_seconds, max_rows=max_rows, max_writes=max_writes)
    return TransactionService(store, cache, 86400, "USD", 16, commits), store, cache


async def outcomes(transactions: TransactionService, commands: list[SubmitTransaction]) -> list[object]:
    return list(await asyncio.gather(*(transactions.submit(c) for c in commands), return_exceptions=True))


async def test_concurrent_submits_share_one_write_and_one_cache_round_trip() -> None:
    transactions, store, cache = service()
    results = await outcomes(transactions, [submit(f"k{n}") for n in range(20)])
    assert store.batches == [[f"k{n}" for n in range(20)]]
    assert [r.idempotency_key for r in results if isinstance(r, Acceptance) and not r.replayed] == [
        f"k{n}" for n in range(20)
    ]
    assert [key for _, key in store.outbox] == [f"k{n}" for n in range(20)]  # arrival order
    assert cache.writes == 1 and set(cache.entries) == {f"k{n}" for n in range(20)}


async def test_a_key_twice_in_one_batch_is_written_once_then_replayed_or_refused() -> None:
    transactions, store, _ = service()
    first, replay, conflict, other = await outcomes(
        transactions, [submit("dup"), submit("dup", amount=1), submit("dup", amount="2.00"), submit("other")]
    )
    assert store.batches == [["dup", "other"]]
    assert isinstance(first, Acceptance) and not first.replayed
    assert isinstance(replay, Acceptance) and replay.replayed and replay.message_id == first.message_id
    assert isinstance(conflict, IdempotencyKeyReused)
    assert isinstance(other, Acceptance) and not other.replayed
    assert [key for _, key in store.outbox] == ["dup", "other"]


async def test_a_key_already_stored_is_answered_by_the_store_not_by_a_cache_lookup() -> None:
    transactions, store, cache = service()
    original = await transactions.submit(submit("seen"))
    cache.entries.clear()  # the fast path lost: the store still decides
    again, conflict = await outcomes(transactions, [submit("seen"), submit("seen", amount="9.99")])
    assert isinstance(again, Acceptance) and again.replayed and again.message_id == original.message_id
    assert isinstance(conflict, IdempotencyKeyReused)
    assert cache.entries["seen"].message_id == original.message_id  # told again to the cache
    assert len(store.outbox) == 1


async def test_a_failed_write_fails_every_caller_of_its_batch_and_accepts_none() -> None:
    transactions, store, cache = service()
    store.down = True
    results = await outcomes(transactions, [submit(f"down-{n}") for n in range(5)])
    assert all(isinstance(r, Unavailable) for r in results)
    assert not store.requests and not store.outbox and not cache.entries
    store.down = False  # the same requests again: accepted now, once each
    results = await outcomes(transactions, [submit(f"down-{n}") for n in range(5)])
    assert all(isinstance(r, Acceptance) and not r.replayed for r in results)


async def test_while_the_database_is_away_the_cache_still_answers_replays_and_conflicts() -> None:
    transactions, store, _ = service()
    original = await transactions.submit(submit("known"))
    store.down = True
    replay, conflict, new = await outcomes(transactions, [submit("known"), submit("known", "5.00"), submit("new")])
    assert isinstance(replay, Acceptance) and replay.replayed and replay.message_id == original.message_id
    assert isinstance(conflict, IdempotencyKeyReused)
    assert isinstance(new, Unavailable)
    assert set(store.requests) == {"known"}


async def test_a_lone_caller_waits_for_nobody_and_later_arrivals_gather_behind_its_write() -> None:
    transactions, store, _ = service(window_seconds=10.0)  # the window never ends a batch here
    gate = store.gate = asyncio.Event()
    lone = asyncio.create_task(transactions.submit(submit("lone")))
    await store.called.wait()  # written at once, alone, and held at the gate
    later = [asyncio.create_task(transactions.submit(submit(f"later-{n}"))) for n in range(6)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(lone, *later)
    assert store.batches == [["lone"], [f"later-{n}" for n in range(6)]]


async def test_a_full_batch_goes_at_once_and_a_slow_write_holds_others_only_for_the_window() -> None:
    transactions, store, _ = service(window_seconds=0.01, max_rows=4)
    gate = store.gate = asyncio.Event()
    stuck = [asyncio.create_task(transactions.submit(submit(f"a{n}"))) for n in range(4)]
    await store.called.wait()  # full: written at once, and held at the gate
    store.gate = None  # later writes go through
    done = await asyncio.gather(*(transactions.submit(submit(f"b{n}")) for n in range(3)))
    assert all(not a.replayed for a in done)  # written once the window ended, the first write still held
    assert not any(task.done() for task in stuck)
    assert store.batches == [["a0", "a1", "a2", "a3"], ["b0", "b1", "b2"]]
    gate.set()
    assert all(not a.replayed for a in await asyncio.gather(*stuck))


async def test_beyond_max_writes_arrivals_wait_for_a_write_to_finish_then_go_max_rows_at_a_time() -> None:
    transactions, store, _ = service(window_seconds=0.001, max_rows=2, max_writes=1)
    gate = store.gate = asyncio.Event()
    first = asyncio.create_task(transactions.submit(submit("first")))
    await store.called.wait()  # the one write allowed, held at the gate
    later = [asyncio.create_task(transactions.submit(submit(f"d{n}"))) for n in range(5)]
    await asyncio.sleep(0.02)  # many windows: still no second write while the first runs
    assert store.batches == [["first"]]
    gate.set()
    await asyncio.gather(first, *later)
    assert store.batches == [["first"], ["d0", "d1"], ["d2", "d3"], ["d4"]]


async def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    transactions, store, _ = service()
    gate = store.gate = asyncio.Event()
    tasks = [asyncio.create_task(transactions.submit(submit(f"c{n}"))) for n in range(3)]
    await store.called.wait()
    tasks[0].cancel()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, Acceptance) and not r.replayed for r in results[1:])
    assert set(store.requests) == {"c0", "c1", "c2"}  # its request was written all the same: a retry replays


def test_the_batch_limits_are_checked() -> None:
    store, cache = FakeRequestStore(), FakeIdempotencyCache()
    with pytest.raises(ValueError):
        GroupCommit(store, cache, max_rows=0)
    with pytest.raises(ValueError):
        GroupCommit(store, cache, window_seconds=-1)
    with pytest.raises(ValueError):
        GroupCommit(store, cache, max_writes=0)
