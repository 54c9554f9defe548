"""The schema pre-check before the 202, against a fake of the ledger's CheckTransfers: refused requests
answer the rule and store nothing, one check serves a gathered group, no schema costs no call, and a
ledger that cannot be asked lets payments through (the ledger enforces when posting). No IO."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.ingest.domain.errors import IdempotencyKeyReused, SchemaRefused
from services.ingest.domain.model import Acceptance, SubmitTransaction, TransferSubmission
from services.ingest.service.group_commit import GroupCommit
from services.ingest.service.ports import SchemaRefusal, SchemaVerdicts
from services.ingest.service.schema_gate import SchemaGate
from services.ingest.service.transactions import TransactionService
from tests.unit.fakes.ingest import FakeIdempotencyCache, FakeRequestStore, FakeSchemaChecker

FORBIDS_CREDIT = "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT"


def wallet_to_wallet_purchase(s: TransferSubmission) -> SchemaRefusal | None:
    if s.code == "PURCHASE" and s.destination_account_id.startswith("wallet:"):
        return SchemaRefusal(
            FORBIDS_CREDIT, f"transfer type 'PURCHASE' may not credit account {s.destination_account_id!r}"
        )
    return None


def submit(key: str, destination: str = "merchant:m1", code: str = "PURCHASE") -> SubmitTransaction:
    return SubmitTransaction(key, "wallet:a", destination, "1.00", "USD", {"orderId": "o1"}, code=code)


def service(
    checker: FakeSchemaChecker, *, window_seconds: float = 0.0
) -> tuple[TransactionService, SchemaGate, FakeRequestStore, FakeIdempotencyCache]:
    store, cache = FakeRequestStore(), FakeIdempotencyCache()
    gate = SchemaGate(checker, timeout_seconds=0.1)
    commits = GroupCommit(store, cache, window_seconds=window_seconds, schema_gate=gate)
    return TransactionService(store, cache, 86400, "USD", 16, commits), gate, store, cache


async def test_a_refused_transfer_answers_the_rule_and_stores_nothing_and_its_key_stays_free() -> None:
    checker = FakeSchemaChecker(version=1, refuse=wallet_to_wallet_purchase)
    transactions, _, store, cache = service(checker)
    with pytest.raises(SchemaRefused) as refused:
        await transactions.submit(submit("p2p", destination="wallet:b"))
    assert refused.value.code == FORBIDS_CREDIT and "PURCHASE" in refused.value.message
    assert (store.requests, store.outbox, cache.entries) == ({}, [], {})
    # The same key with the request corrected is a first request, not a conflict.
    accepted = await transactions.submit(submit("p2p", destination="merchant:m1"))
    assert not accepted.replayed and list(store.requests) == ["p2p"]


async def test_one_check_serves_a_gathered_group_and_only_the_refused_are_left_out() -> None:
    checker = FakeSchemaChecker(version=1, refuse=wallet_to_wallet_purchase)
    transactions, gate, store, _ = service(checker)
    await gate.refresh()
    commands = [submit(f"k{n}", destination="wallet:b" if n % 3 == 0 else "merchant:m1") for n in range(12)]
    results = await asyncio.gather(*(transactions.submit(c) for c in commands), return_exceptions=True)
    assert checker.calls == [[], [f"k{n}" for n in range(12)]]
    assert [type(r).__name__ for r in results] == ["SchemaRefused" if n % 3 == 0 else "Acceptance" for n in range(12)]
    assert store.batches == [[f"k{n}" for n in range(12) if n % 3]]


async def test_with_no_schema_in_force_no_submission_calls_the_ledger() -> None:
    checker = FakeSchemaChecker(version=0)
    transactions, gate, store, _ = service(checker)
    await gate.refresh()
    await asyncio.gather(*(transactions.submit(submit(f"c{n}", destination="wallet:b")) for n in range(20)))
    for n in range(5):
        await transactions.submit(submit(f"s{n}", destination="wallet:b"))
    assert checker.calls == [[]] and len(store.requests) == 25
    # Before the first refresh the version is unknown: the first group is checked, and its answer teaches it.
    fresh_checker = FakeSchemaChecker(version=0)
    fresh, _, _, _ = service(fresh_checker)
    await fresh.submit(submit("first"))
    await fresh.submit(submit("second"))
    assert fresh_checker.calls == [["first"]]


async def test_a_schema_applied_later_is_checked_once_a_refresh_learns_it() -> None:
    checker = FakeSchemaChecker(version=0, refuse=wallet_to_wallet_purchase)
    transactions, gate, _, _ = service(checker)
    await gate.refresh()
    checker.version = 1
    assert not (
        await transactions.submit(submit("before", destination="wallet:b"))
    ).replayed  # the ledger will refuse it
    await gate.refresh()
    with pytest.raises(SchemaRefused):
        await transactions.submit(submit("after", destination="wallet:b"))


async def test_a_key_accepted_before_the_schema_refused_it_replays_its_first_answer() -> None:
    checker = FakeSchemaChecker(version=0, refuse=wallet_to_wallet_purchase)
    transactions, gate, store, _ = service(checker)
    await gate.refresh()
    first = await transactions.submit(submit("early", destination="wallet:b"))
    checker.version = 1
    await gate.refresh()
    again = await transactions.submit(submit("early", destination="wallet:b"))
    assert isinstance(again, Acceptance) and again.replayed and again.message_id == first.message_id
    with pytest.raises(IdempotencyKeyReused):  # a different request under that key is still a conflict
        await transactions.submit(submit("early", destination="wallet:c"))
    assert len(store.outbox) == 1


async def test_a_ledger_that_cannot_be_asked_lets_payments_through_and_is_asked_again_once_back() -> None:
    checker = FakeSchemaChecker(version=1, refuse=wallet_to_wallet_purchase)
    transactions, gate, store, _ = service(checker)
    await gate.refresh()
    checker.down = True
    # Accepted unchecked: the ledger still refuses it when posting (status FAILED with the rule's code).
    assert not (await transactions.submit(submit("down-1", destination="wallet:b"))).replayed
    assert not gate.reachable
    calls = len(checker.calls)
    assert not (await transactions.submit(submit("down-2", destination="wallet:b"))).replayed
    assert len(checker.calls) == calls  # not asked again until a refresh reaches it
    await gate.refresh()  # still down
    checker.down = False
    await gate.refresh()
    assert gate.reachable and gate.version == 1
    with pytest.raises(SchemaRefused):
        await transactions.submit(submit("up", destination="wallet:b"))
    assert set(store.requests) == {"down-1", "down-2"}


async def test_an_answer_that_does_not_fit_the_question_lets_payments_through() -> None:
    checker = FakeSchemaChecker(version=1, refuse=wallet_to_wallet_purchase)
    transactions, gate, store, _ = service(checker)
    await gate.refresh()
    checker.refuse = lambda s: SchemaRefusal("SCHEMA_X", "x")
    original = checker.check

    async def one_verdict_short(submissions: Sequence[TransferSubmission], timeout_seconds: float) -> SchemaVerdicts:
        answer = await original(submissions, timeout_seconds)
        return SchemaVerdicts(answer.version, answer.refusals[:-1])

    checker.check = one_verdict_short  # type: ignore[method-assign]
    assert not (await transactions.submit(submit("odd", destination="wallet:b"))).replayed
    assert not gate.reachable and list(store.requests) == ["odd"]
