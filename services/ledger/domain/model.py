"""Ledger domain: accounts with running totals, transfers, and the posting rules.

Pure Python. `post_in_order` applies transfers one after another to in-memory account states and
says, for each, posted or rejected with a stable code; the caller persists exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from services.kernel.money import Money, format_minor
from services.ledger.domain import rules

INSUFFICIENT_FUNDS = "LEDGER_INSUFFICIENT_FUNDS"
CURRENCY_MISMATCH = "LEDGER_CURRENCY_MISMATCH"
INVALID_TRANSFER = "LEDGER_INVALID_TRANSFER"
# The input rules' codes for the two that double entry itself rests on (see check_transfer).
SAME_ACCOUNT = "SAME_ACCOUNT"
INVALID_AMOUNT = "INVALID_AMOUNT"
ACCOUNT_NOT_FOUND = "LEDGER_ACCOUNT_NOT_FOUND"
TRANSFER_EXISTS = "LEDGER_TRANSFER_EXISTS"
POSTING_FAILED = "LEDGER_POSTING_FAILED"
TOTALS_OVERFLOW = "LEDGER_TOTALS_OVERFLOW"
INT64_MAX = 2**63 - 1


class AccountType(StrEnum):
    ASSET = "ASSET"
    LIABILITY = "LIABILITY"
    EQUITY = "EQUITY"
    REVENUE = "REVENUE"
    EXPENSE = "EXPENSE"

    @property
    def debit_normal(self) -> bool:
        return self in _DEBIT_NORMAL


class TransferKind(StrEnum):
    TRANSFER = "TRANSFER"
    HOLD = "HOLD"
    REVERSAL = "REVERSAL"


class TransferStatus(StrEnum):
    POSTED = "POSTED"
    REJECTED = "REJECTED"
    PENDING = "PENDING"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"


_DEBIT_NORMAL = frozenset({AccountType.ASSET, AccountType.EXPENSE})


class Direction(StrEnum):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"


# Accounts a transfer creates on first use: customer-style (credit-normal) and allowed to go
# negative, which is what the seed's flows (pay from a fresh account) need.
AUTO_CREATED_TYPE = AccountType.LIABILITY


@dataclass
class Account:
    id: str
    currency: str
    type: AccountType
    allow_overdraft: bool
    overdraft_limit_minor: int = 0
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    # The schema's account class it was opened under (None: opened with no schema in force).
    account_class: str | None = None

    @property
    def balance_minor(self) -> int:
        """Posted balance on the account's normal side."""
        if self.type.debit_normal:
            return self.debits_posted - self.credits_posted
        return self.credits_posted - self.debits_posted

    @property
    def pending_minor(self) -> int:
        if self.type.debit_normal:
            return self.debits_pending - self.credits_pending
        return self.credits_pending - self.debits_pending

    @property
    def available_minor(self) -> int:
        """Posted balance less what pending transfers would take away."""
        outgoing = self.credits_pending if self.type.debit_normal else self.debits_pending
        return self.balance_minor - outgoing

    def allows_balance(self, balance: int) -> bool:
        return self.allow_overdraft or balance >= -self.overdraft_limit_minor


@dataclass(frozen=True)
class TransferInstruction:
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount: Money
    metadata: dict[str, str] = field(default_factory=dict)
    accepted_at: datetime | None = None
    # A hold: reserve the amount (pending) instead of posting it; optionally until `expires_at`.
    pending: bool = False
    expires_at: datetime | None = None
    # Its transfer type in the schema ('' when it names none: the schema's default type, if any).
    code: str = ""

    @property
    def kind(self) -> TransferKind:
        return TransferKind.HOLD if self.pending else TransferKind.TRANSFER

    def same_movement(self, other: TransferInstruction) -> bool:
        """Whether `other` asks for the same thing (a replay) rather than reusing the id."""
        return (self.debit_account_id, self.credit_account_id, self.amount, self.pending, self.code) == (
            other.debit_account_id,
            other.credit_account_id,
            other.amount,
            other.pending,
            other.code,
        )


@dataclass(frozen=True)
class Posted:
    transfer: TransferInstruction


@dataclass(frozen=True)
class Held:
    """A hold accepted: its amount is pending on both accounts."""

    transfer: TransferInstruction


@dataclass(frozen=True)
class Rejected:
    transfer: TransferInstruction
    code: str
    message: str


Outcome = Posted | Held | Rejected


def invalid_transfer(transfer: TransferInstruction) -> Rejected | None:
    """The rejection of a transfer that breaks an input rule (rules.instruction_problem: ids,
    currency, amount, accounts, metadata), whatever the accounts hold; None when it is well-formed."""
    problem = rules.instruction_problem(transfer)
    if problem is None:
        return None
    return Rejected(transfer, problem.code or INVALID_TRANSFER, problem.message)


def check_transfer(transfer: TransferInstruction, accounts: dict[str, Account]) -> Rejected | None:
    """The first rule `transfer` breaks against the current account states, or None. Input rules are
    invalid_transfer's, applied once before this by every path; the two double entry rests on are
    checked again here, so no path can post a one-sided or non-positive pair of entries."""
    amount, currency = transfer.amount.minor_units, transfer.amount.currency
    debit_id, credit_id = transfer.debit_account_id, transfer.credit_account_id
    if amount <= 0:
        return Rejected(transfer, INVALID_AMOUNT, "amount must be greater than zero")
    if debit_id == credit_id:
        return Rejected(transfer, SAME_ACCOUNT, "credit_account_id must differ from debit_account_id")
    debit, credit = accounts.get(debit_id), accounts.get(credit_id)
    if debit is None or credit is None:
        missing = debit_id if debit is None else credit_id
        return Rejected(transfer, ACCOUNT_NOT_FOUND, f"account {missing!r} does not exist")
    for account in (debit, credit):
        if account.currency != currency:
            return Rejected(
                transfer,
                CURRENCY_MISMATCH,
                f"account {account.id!r} holds {account.currency}, transfer is in {currency}",
            )
    if (
        max(debit.debits_posted + debit.debits_pending, credit.credits_posted + credit.credits_pending)
        > INT64_MAX - amount
    ):
        return Rejected(transfer, TOTALS_OVERFLOW, "the account's running totals would exceed 64-bit minor units")
    # A debit lowers a credit-normal account's balance, a credit lowers a debit-normal one: only the
    # side that loses funds, and only if it may not overdraw, needs its available balance checked.
    for account, loses in ((debit, not debit.type.debit_normal), (credit, credit.type.debit_normal)):
        if loses and not account.allow_overdraft and not account.allows_balance(account.available_minor - amount):
            return Rejected(
                transfer,
                INSUFFICIENT_FUNDS,
                f"account {account.id!r} has {format_minor(account.available_minor, currency)} "
                f"{currency} available, transfer needs {format_minor(amount, currency)}",
            )
    return None


def post_in_order(transfers: list[TransferInstruction], accounts: dict[str, Account]) -> list[Outcome]:
    """Applies transfers in order, updating `accounts` for each one posted."""
    outcomes: list[Outcome] = []
    for transfer in transfers:
        rejection = check_transfer(transfer, accounts)
        if rejection is not None:
            outcomes.append(rejection)
            continue
        amount = transfer.amount.minor_units
        if transfer.pending:
            accounts[transfer.debit_account_id].debits_pending += amount
            accounts[transfer.credit_account_id].credits_pending += amount
            outcomes.append(Held(transfer))
        else:
            accounts[transfer.debit_account_id].debits_posted += amount
            accounts[transfer.credit_account_id].credits_posted += amount
            outcomes.append(Posted(transfer))
    return outcomes


def settle_hold(debit: Account, credit: Account, held_minor: int, posted_minor: int) -> None:
    """Releases a hold's pending amount; posts `posted_minor` of it (0 to void). Funds were reserved
    when the hold was created, so posting up to the held amount cannot overdraw."""
    if not 0 <= posted_minor <= held_minor:
        raise ValueError("posted amount must be between 0 and the held amount")
    debit.debits_pending -= held_minor
    credit.credits_pending -= held_minor
    debit.debits_posted += posted_minor
    credit.credits_posted += posted_minor


def reversal_of(original: TransferInstruction, reversal_id: str, reason: str) -> TransferInstruction:
    """The mirror image of a posted transfer: same amount, accounts swapped."""
    return TransferInstruction(
        reversal_id,
        original.credit_account_id,
        original.debit_account_id,
        original.amount,
        {"reverses": original.transfer_id, **({"reason": reason} if reason else {})},
        code=original.code,
    )


@dataclass(frozen=True)
class AccountDefinition:
    """An account as a caller asks for it to be opened."""

    id: str
    currency: str
    type: AccountType
    allow_overdraft: bool
    overdraft_limit_minor: int
    metadata: dict[str, str]
    account_class: str | None = None

    def matches(self, account: Account) -> bool:
        """Whether `account` is this definition (opening it again is then a replay, not a conflict)."""
        return (
            account.currency,
            account.type,
            account.allow_overdraft,
            account.overdraft_limit_minor,
            account.metadata,
        ) == (
            self.currency,
            self.type,
            self.allow_overdraft,
            self.overdraft_limit_minor,
            self.metadata,
        )


@dataclass(frozen=True)
class LedgerEntry:
    """One entry of an account's history, with the transfer it belongs to."""

    id: int
    transfer_id: str
    account_id: str
    direction: str
    amount_minor: int
    currency: str
    debit_account_id: str
    credit_account_id: str
    status: str
    metadata: dict[str, str]
    created_at: datetime

    def signed_minor(self, account: Account) -> int:
        """The entry's effect on `account`'s balance, on the account's normal side."""
        increases = (self.direction == Direction.DEBIT) == account.type.debit_normal
        return self.amount_minor if increases else -self.amount_minor


def accounts_to_open(transfers: list[TransferInstruction], missing: set[str]) -> dict[str, str]:
    """id → currency of the `missing` accounts the transfers name, each in the currency of the first
    transfer that names it (a transfer opens its accounts on first use)."""
    opened: dict[str, str] = {}
    for t in transfers:
        for account_id in (t.debit_account_id, t.credit_account_id):
            if account_id in missing:
                opened.setdefault(account_id, t.amount.currency)
    return opened
