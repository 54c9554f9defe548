"""Reconciliation domain: report windows and the checks that turn two views into discrepancies."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.kernel import instants
from services.kernel.input_rules import IdentifierShape, require_identifier

BALANCE_DRIFT = "BALANCE_DRIFT"
UNBALANCED_TRANSFER = "UNBALANCED_TRANSFER"
RESOLUTION = timedelta(microseconds=1)  # of datetime and of PostgreSQL timestamps
# The ledger's account ids: anything else names no account, and must not reach a query or a stored run.
ACCOUNT_ID = IdentifierShape(re.compile(r"[A-Za-z0-9._:\-]+"), "letters, digits and . _ : -")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def validate_account_id(value: str) -> str:
    """Raises ValidationError (MISSING_FIELD, INVALID_ACCOUNT_ID)."""
    return require_identifier(value, "account_id", shape=ACCOUNT_ID, code="INVALID_ACCOUNT_ID", limit=128)


def parse_window(start: str, end: str) -> Window:
    """[startDate, endDate) by the one date rule (services.kernel.instants): a date-only endDate
    includes that day. Raises ValidationError."""
    first, after = instants.parse_closed_window(start, end, start_field="startDate", end_field="endDate")
    # The store reads a window inclusively: its last microsecond is the same set of instants.
    return Window(first, after - RESOLUTION)


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    severity: str
    message: str
    transaction_id: str = ""
    expected_minor: int | None = None
    actual_minor: int | None = None
    case_id: str = ""
    statement_line_ids: tuple[str, ...] = ()
    transfer_ids: tuple[str, ...] = ()
    currency: str = ""


@dataclass(frozen=True)
class TransferSides:
    transfer_id: str
    debit_minor: int
    credit_minor: int


@dataclass
class Report:
    account_id: str
    currency: str
    window: Window
    transaction_count: int
    expected_balance_minor: int
    actual_balance_minor: int
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return not self.discrepancies


def check_account(
    account_id: str,
    currency: str,
    window: Window,
    *,
    projected_balance: int,
    ledger_balance: int,
    transfers: list[TransferSides],
    transaction_count: int | None = None,
) -> Report:
    """Compares the projection's balance with the ledger's and checks every transfer is balanced.
    `transfers` may be only those whose sides differ when `transaction_count` says how many there were."""
    count = len(transfers) if transaction_count is None else transaction_count
    report = Report(account_id, currency, window, count, projected_balance, ledger_balance)
    for sides in transfers:
        if sides.debit_minor != sides.credit_minor:
            report.discrepancies.append(
                Discrepancy(
                    UNBALANCED_TRANSFER,
                    "CRITICAL",
                    "debits and credits of the transfer differ",
                    sides.transfer_id,
                    sides.debit_minor,
                    sides.credit_minor,
                )
            )
    if projected_balance != ledger_balance:
        report.discrepancies.append(
            Discrepancy(
                BALANCE_DRIFT,
                "HIGH",
                "the ledger's balance differs from the sum of the entries it announced",
                expected_minor=projected_balance,
                actual_minor=ledger_balance,
            )
        )
    return report
