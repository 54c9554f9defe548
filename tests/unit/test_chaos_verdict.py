"""The chaos run's own arithmetic: which postings break the order per account, and when faults come."""

from __future__ import annotations

from tests.chaos.faults import schedule
from tests.chaos.verdict import posted_out_of_order
from tests.chaos.workload import Record, TransferBody, TransferIntent


def accepted(key: str, source: str, sent_at: float, accepted_at: float) -> TransferIntent:
    body = TransferBody(source, "payee", 100, "USD")
    return TransferIntent(key, sent_at, [body], body, accepted_at)


def test_a_transfer_posted_after_one_sent_only_once_it_was_accepted_is_out_of_order() -> None:
    record = Record()
    for intent in (
        accepted("first", "a", sent_at=0, accepted_at=1),
        accepted("second", "a", sent_at=2, accepted_at=3),  # sent after first's 202
        accepted("third", "a", sent_at=4, accepted_at=5),
        accepted("elsewhere", "b", sent_at=0, accepted_at=1),
    ):
        record.transfers[intent.key] = intent
    # The ledger posted second, then first (lost and redriven), then third; b's alone.
    debit_entry = {"second": 10, "first": 11, "third": 12, "elsewhere": 1}
    assert posted_out_of_order(record, debit_entry) == ["first"]


def test_concurrent_transfers_of_one_account_may_post_in_either_order() -> None:
    record = Record()
    for intent in (
        accepted("one", "a", sent_at=0, accepted_at=2),
        accepted("two", "a", sent_at=1, accepted_at=3),  # sent before one's 202: no order owed
    ):
        record.transfers[intent.key] = intent
    assert posted_out_of_order(record, {"two": 1, "one": 2}) == []
    assert posted_out_of_order(record, {"one": 1}) == []  # what was not posted is judged elsewhere


def test_faults_are_spread_from_the_first_to_the_last_moment() -> None:
    assert schedule(["a", "b", "c"], 2, 8) == [(2, "a"), (5, "b"), (8, "c")]
    assert schedule(["a"], 5, 142) == [(5, "a")]
    assert schedule([], 5, 142) == []
