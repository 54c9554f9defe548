"""The matching engine's input and output in columns: items as numpy arrays of integers, results as row
numbers. Volume callers (a bulk import, a nightly run) use these with `match_columns`; `match_items` in
matching.py builds them from objects and turns the answer back into objects.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]

NO_CODE = -1  # an absent reference, end-to-end id or booking date
MAX_ABS_AMOUNT_MINOR = 10**15  # sums of thousands of items stay exact in int64

RULE_REFERENCE = "reference"
RULE_REFERENCE_GROUP = "reference_group"
RULE_AMOUNT_DATE = "amount_date"
RULE_GROUP = "group"
RULE_UNMATCHED = "unmatched"
PAIR_RULES = (RULE_REFERENCE, RULE_AMOUNT_DATE)


class MatchKind(StrEnum):
    ONE_TO_ONE = "ONE_TO_ONE"
    ONE_TO_MANY = "ONE_TO_MANY"  # one statement line, several ledger items (a payout)
    MANY_TO_ONE = "MANY_TO_ONE"  # several statement lines, one ledger item


class BreakKind(StrEnum):
    MISSING_IN_LEDGER = "MISSING_IN_LEDGER"
    MISSING_IN_STATEMENT = "MISSING_IN_STATEMENT"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    DATE_OUT_OF_TOLERANCE = "DATE_OUT_OF_TOLERANCE"
    DUPLICATE = "DUPLICATE"
    AMBIGUOUS = "AMBIGUOUS"


BREAK_KINDS = tuple(BreakKind)


def _column(values: object, name: str, size: int) -> I64:
    array = np.asarray(values, dtype=np.int64)
    if array.ndim != 1 or array.size != size:
        raise ValueError(f"{name} must be one-dimensional and as long as the other columns")
    return array


def _check_amounts(amounts: I64) -> None:
    if amounts.size and int(np.abs(amounts).max()) > MAX_ABS_AMOUNT_MINOR:
        raise ValueError(f"amounts must be within ±{MAX_ABS_AMOUNT_MINOR} minor units")


@dataclass(frozen=True)
class StatementColumns:
    """Statement items, one row each. Strings are integer codes (`CodeBook` in matching.py): reference
    and end-to-end codes share one code space with the ledger's reference fields; NO_CODE where absent.
    Days are `date.toordinal()`. Where two candidates are otherwise equal, the earlier row comes first."""

    amount_minor: I64
    currency: I64
    value_day: I64
    booking_day: I64
    reference: I64
    end_to_end_id: I64
    description: I64  # any codes: only compared for equality, to tell identical lines

    def __post_init__(self) -> None:
        size = np.asarray(self.amount_minor).size
        for column in fields(self):
            object.__setattr__(self, column.name, _column(getattr(self, column.name), column.name, size))
        _check_amounts(self.amount_minor)

    def __len__(self) -> int:
        return int(self.amount_minor.size)


@dataclass(frozen=True)
class LedgerColumns:
    """Ledger entries of the reconciled account, one row each; see StatementColumns."""

    amount_minor: I64
    currency: I64
    posted_day: I64
    reference: I64
    end_to_end_id: I64
    transfer_id: I64

    def __post_init__(self) -> None:
        size = np.asarray(self.amount_minor).size
        for column in fields(self):
            object.__setattr__(self, column.name, _column(getattr(self, column.name), column.name, size))
        _check_amounts(self.amount_minor)

    def __len__(self) -> int:
        return int(self.amount_minor.size)


@dataclass(frozen=True)
class RowGroup:
    """A one-to-many or many-to-one match in row numbers."""

    kind: MatchKind
    statement: tuple[int, ...]
    ledger: tuple[int, ...]
    rule: str
    amount_difference_minor: int  # Σ statement - Σ ledger: minus the fees netted
    max_days_apart: int


@dataclass(frozen=True)
class RowBreak:
    kind: BreakKind
    statement: tuple[int, ...]
    ledger: tuple[int, ...]
    rule: str
    amount_difference_minor: int | None = None
    days_apart: int | None = None


@dataclass(frozen=True)
class ColumnarMatches:
    """The engine's answer in row numbers. What comes in bulk is in columns: one-to-one matches, the
    one-to-one breaks a reference reveals (kind indexes BREAK_KINDS; the amount difference means nothing
    for a currency mismatch), and the missing items. Groups, duplicates and ties are listed."""

    pair_statement: I64
    pair_ledger: I64
    pair_rule: I64  # index into PAIR_RULES
    break_statement: I64
    break_ledger: I64
    break_kind: I64
    break_amount_difference: I64
    break_days_apart: I64
    groups: tuple[RowGroup, ...]
    breaks: tuple[RowBreak, ...]
    missing_in_ledger: I64
    missing_in_statement: I64
    diagnostics: dict[str, int]
