"""Bank statements as the reconciliation domain sees them, whatever file format they came in.

A parsed file holds one or more statements (several accounts, several days); each statement holds
its booked lines with signed amounts in exact minor units (+ credits the account, - debits it) and,
when the bank gave them, opening and closing balances, so opening + Σ lines = closing can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class StatementFormat(StrEnum):
    CAMT053 = "CAMT053"
    CAMT052 = "CAMT052"
    CAMT054 = "CAMT054"
    MT940 = "MT940"
    BAI2 = "BAI2"
    OFX = "OFX"
    CSV = "CSV"


class BalanceCheck(StrEnum):
    OK = "OK"  # opening + Σ lines = closing
    MISMATCH = "MISMATCH"  # both balances given, and they do not add up
    NOT_APPLICABLE = "NOT_APPLICABLE"  # a balance is missing (notifications, intraday reports)


class EntryStatus(StrEnum):
    BOOKED = "BOOKED"
    PENDING = "PENDING"  # camt.052 PDNG and the like: shown, never part of the balance check


@dataclass(frozen=True)
class RowError:
    """A problem in the file, at a 1-based line of the source text (0 when no line applies)."""

    line: int
    message: str


class StatementFileError(ValueError):
    """The file cannot be imported as it is; nothing of it may be imported. Lists every problem found."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__("; ".join(f"line {e.line}: {e.message}" for e in errors[:5]))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class EntryDetail:
    """One transaction inside a batch entry (camt TxDtls): its own references and, when given, amount."""

    amount_minor: int | None = None
    currency: str | None = None
    end_to_end_id: str | None = None
    reference: str | None = None
    counterparty: str | None = None
    description: str = ""


# Slots: a statement can hold a million lines, and an instance without a __dict__ is a third the size.
@dataclass(frozen=True, slots=True)
class StatementLine:
    """One booked (or pending) entry of a statement.

    `amount_minor` is signed from the account holder's view and in the statement's currency;
    `original_amount_minor`/`original_currency` keep a foreign-currency instructed amount.
    References are never assumed unique (real files repeat them).
    """

    line: int  # 1-based line in the source where the entry starts
    amount_minor: int
    currency: str
    booking_date: date | None
    value_date: date | None
    reference: str | None = None  # the bank's own reference (AcctSvcrRef, bank reference, FITID)
    end_to_end_id: str | None = None  # the payer's reference when given (EndToEndId, customer ref)
    description: str = ""
    counterparty: str | None = None
    reversal: bool = False  # the bank flagged the entry as a reversal (RvslInd, RC/RD)
    status: EntryStatus = EntryStatus.BOOKED
    bank_code: str | None = None  # type code as the format gives it (BAI2 type, MT940 code, BkTxCd)
    original_amount_minor: int | None = None
    original_currency: str | None = None
    details: tuple[EntryDetail, ...] = ()
    # the entry's own id when the bank gives one beside `reference` (camt NtryRef), kept for matching
    entry_reference: str | None = None


@dataclass(frozen=True)
class Statement:
    """One statement (or report, or notification) of one account."""

    account: str  # as the bank names it: IBAN, account number
    currency: str
    lines: tuple[StatementLine, ...]
    statement_id: str | None = None
    opening_balance_minor: int | None = None
    closing_balance_minor: int | None = None
    opening_date: date | None = None
    closing_date: date | None = None
    line: int = 1  # where the statement starts in the source

    @property
    def booked_lines(self) -> tuple[StatementLine, ...]:
        return tuple(line for line in self.lines if line.status is EntryStatus.BOOKED)

    @property
    def entries_total_minor(self) -> int:
        return sum(line.amount_minor for line in self.booked_lines if line.currency == self.currency)

    @property
    def balance_check(self) -> BalanceCheck:
        if self.opening_balance_minor is None or self.closing_balance_minor is None:
            return BalanceCheck.NOT_APPLICABLE
        if self.opening_balance_minor + self.entries_total_minor == self.closing_balance_minor:
            return BalanceCheck.OK
        return BalanceCheck.MISMATCH


@dataclass(frozen=True)
class ParsedFile:
    format: StatementFormat
    statements: tuple[Statement, ...]
    warnings: tuple[RowError, ...] = field(default=())

    @property
    def line_count(self) -> int:
        return sum(len(s.lines) for s in self.statements)
