"""Reconciliation domain: report windows and the checks that turn two views into discrepancies."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

from services.kernel.errors import ValidationError

BALANCE_DRIFT = "BALANCE_DRIFT"
UNBALANCED_TRANSFER = "UNBALANCED_TRANSFER"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def parse_instant(text: str, field_name: str, *, end_of_day: bool) -> datetime:
    text = text.strip()
    if not text:
        raise ValidationError(f"{field_name} is required", field=field_name, code="MISSING_FIELD")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.max if end_of_day else time.min, UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValidationError(
            f"{field_name} must be an ISO date (2026-01-31) or an RFC 3339 instant",
            field=field_name,
            code="INVALID_DATE",
        ) from None
    return moment


def parse_window(start: str, end: str) -> Window:
    """A date-only end means the whole day. Raises ValidationError."""
    window = Window(parse_instant(start, "startDate", end_of_day=False), parse_instant(end, "endDate", end_of_day=True))
    if window.end < window.start:
        raise ValidationError("endDate must not be before startDate", field="endDate", code="INVALID_DATE_RANGE")
    return window


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
) -> Report:
    """Compares the projection's balance with the ledger's and checks every transfer is balanced."""
    report = Report(account_id, currency, window, len(transfers), projected_balance, ledger_balance)
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
