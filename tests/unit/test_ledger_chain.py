"""The posting path's hash chain is the one `payrecon ledger verify` recomputes."""

from __future__ import annotations

from datetime import UTC, datetime

from services.kernel.money import Money
from services.ledger.domain.chain import GENESIS, AccountAudit, AccountTotals, chain_entries, entry_hash
from services.ledger.domain.model import TransferInstruction


def test_chained_entries_carry_the_audit_s_hashes_and_advance_each_account_s_head() -> None:
    at = datetime(2026, 11, 26, 9, 30, 1, 123456, tzinfo=UTC)
    transfers = [
        TransferInstruction("t-1", "a", "b", Money(1050, "USD")),
        TransferInstruction("t-2", "b", "c", Money(7, "USD")),
        TransferInstruction("t-3", "a", "c", Money(99_999, "USD")),
    ]
    heads = {"a": GENESIS, "b": GENESIS, "c": GENESIS}
    entries = chain_entries(heads, transfers, [11, 12, 13, 14, 15, 16], at)

    expected_heads = {"a": GENESIS, "b": GENESIS, "c": GENESIS}
    for e in entries:
        expected = entry_hash(
            expected_heads[e.account_id], e.id, e.transfer_id, e.account_id, e.direction, e.amount_minor, e.currency, at
        )
        assert e.hash == expected
        expected_heads[e.account_id] = expected
    assert heads == expected_heads
    assert [(e.id, e.account_id, e.direction) for e in entries] == [
        (11, "a", "DEBIT"),
        (12, "b", "CREDIT"),
        (13, "b", "DEBIT"),
        (14, "c", "CREDIT"),
        (15, "a", "DEBIT"),
        (16, "c", "CREDIT"),
    ]
    # Tuples, so a batch is COPY's records as it is; the instant last, so a COPY can leave it out.
    assert entries[0] == (11, "t-1", "a", "DEBIT", 1050, "USD", entries[0].hash, at)

    debits = {"a": 1050 + 99_999, "b": 7, "c": 0}
    credits = {"a": 0, "b": 1050, "c": 7 + 99_999}
    for account in "abc":
        audit = AccountAudit(AccountTotals(account, "USD", debits[account], credits[account], 0, 0, heads[account]))
        for e in entries:
            if e.account_id == account:
                assert audit.add(e) is None
        assert audit.finish() is None
