"""Posting rules and their invariants, on plain objects (property-based)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.kernel.money import Money
from services.ledger.domain.model import (
    CURRENCY_MISMATCH,
    INSUFFICIENT_FUNDS,
    Account,
    AccountType,
    Posted,
    Rejected,
    TransferInstruction,
    post_in_order,
)


def accounts() -> dict[str, Account]:
    return {
        "cash": Account("cash", "USD", AccountType.ASSET, allow_overdraft=True),
        "alice": Account("alice", "USD", AccountType.LIABILITY, allow_overdraft=False),
        "bob": Account("bob", "USD", AccountType.LIABILITY, allow_overdraft=False, overdraft_limit_minor=500),
        "carol": Account("carol", "USD", AccountType.LIABILITY, allow_overdraft=True),
        "euro": Account("euro", "EUR", AccountType.LIABILITY, allow_overdraft=True),
    }


def transfer(i: int, debit: str, credit: str, amount: int, currency: str = "USD") -> TransferInstruction:
    return TransferInstruction(f"t{i}", debit, credit, Money(amount, currency))


def test_liability_account_goes_negative_when_debited_only_if_allowed() -> None:
    book = accounts()
    outcomes = post_in_order([transfer(1, "alice", "carol", 100), transfer(2, "carol", "alice", 100)], book)
    assert isinstance(outcomes[0], Rejected) and outcomes[0].code == INSUFFICIENT_FUNDS
    assert isinstance(outcomes[1], Posted)
    assert book["alice"].balance_minor == 100
    assert book["carol"].balance_minor == -100


def test_overdraft_limit_is_honoured_exactly() -> None:
    book = accounts()
    ok, too_far = post_in_order([transfer(1, "bob", "carol", 500), transfer(2, "bob", "carol", 1)], book)
    assert isinstance(ok, Posted)
    assert isinstance(too_far, Rejected) and too_far.code == INSUFFICIENT_FUNDS
    assert book["bob"].balance_minor == -500


def test_a_credit_lowers_a_debit_normal_account_and_is_checked_there() -> None:
    book = {**accounts(), "vault": Account("vault", "USD", AccountType.ASSET, allow_overdraft=False)}
    refused, funded, paid_out = post_in_order(
        [transfer(1, "carol", "vault", 50), transfer(2, "vault", "carol", 80), transfer(3, "carol", "vault", 80)], book
    )
    assert isinstance(refused, Rejected) and refused.code == INSUFFICIENT_FUNDS  # the vault holds nothing yet
    assert isinstance(funded, Posted) and isinstance(paid_out, Posted)
    assert book["vault"].balance_minor == 0


def test_currency_mismatch() -> None:
    (outcome,) = post_in_order([transfer(1, "carol", "euro", 5)], accounts())
    assert isinstance(outcome, Rejected) and outcome.code == CURRENCY_MISMATCH


names = st.sampled_from(["cash", "alice", "bob", "carol"])


@settings(max_examples=200)
@given(st.lists(st.tuples(names, names, st.integers(min_value=1, max_value=10_000)), max_size=60))
def test_invariants_hold_for_any_sequence(moves: list[tuple[str, str, int]]) -> None:
    book = accounts()
    transfers = [transfer(i, d, c, a) for i, (d, c, a) in enumerate(moves)]
    outcomes = post_in_order(transfers, book)
    posted = [o.transfer for o in outcomes if isinstance(o, Posted)]
    # Σ debits = Σ credits across the book.
    assert sum(a.debits_posted for a in book.values()) == sum(a.credits_posted for a in book.values())
    assert sum(a.debits_posted for a in book.values()) == sum(t.amount.minor_units for t in posted)
    # Each account's totals equal the transfers that touched it.
    for account in book.values():
        assert account.debits_posted == sum(t.amount.minor_units for t in posted if t.debit_account_id == account.id)
        assert account.credits_posted == sum(t.amount.minor_units for t in posted if t.credit_account_id == account.id)
        if not account.allow_overdraft:
            assert account.balance_minor >= -account.overdraft_limit_minor
    # Same-account moves are never posted.
    assert all(t.debit_account_id != t.credit_account_id for t in posted)
