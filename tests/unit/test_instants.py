"""One rule for dates and windows on every route: half-open [start, end), a date-only end includes its
whole UTC day, instants need an offset. Checked on the kernel's parser and on both routes' use of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.kernel.errors import ValidationError
from services.kernel.instants import parse_bound, parse_closed_window, parse_window
from services.ledger.service.ledger import LedgerService
from services.reconciliation.domain.model import parse_window as reconcile_window
from tests.unit.fakes.ledger import FakeLedgerUnitOfWork
from tests.unit.test_ledger_use_cases import t

DAY = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        ("2026-11-26", False, DAY),
        ("2026-11-26", True, DAY + timedelta(days=1)),  # a date-only end includes that whole day
        ("2026-11-26T00:00:00Z", True, DAY),  # an instant end is exclusive as written
        ("2026-11-26T02:30:00+02:30", False, DAY),
        ("2026-11-26 00:00:00.5z", False, DAY + timedelta(milliseconds=500)),
        ("2026-11-26T00:00:00.1234569Z", False, DAY + timedelta(microseconds=123456)),  # cut, not rounded
    ],
)
def test_bounds_are_utc_and_a_date_only_end_is_the_next_day(value: str, end: bool, expected: datetime) -> None:
    assert parse_bound(value, "f", end=end) == expected


@pytest.mark.parametrize(
    "value",
    ["2026-11-26T10:00:00", "yesterday", "2026-02-30", "26-11-2026", "2026-11-26T10:00Z", "9999-12-31", "2026-11-26T"],
)
def test_naive_or_malformed_values_are_invalid_date_naming_the_field(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_bound(value, "until", end=True)
    assert refused.value.code == "INVALID_DATE" and refused.value.field == "until"
    assert "until" in refused.value.message


def test_a_window_must_end_after_it_starts_and_may_be_open() -> None:
    assert parse_window("2026-11-26", "2026-11-26", start_field="s", end_field="e") == (DAY, DAY + timedelta(days=1))
    assert parse_window("", "", start_field="s", end_field="e") == (None, None)
    for start, end in (("2026-11-27", "2026-11-26"), ("2026-11-26T00:00:00Z", "2026-11-26T00:00:00Z")):
        with pytest.raises(ValidationError) as refused:
            parse_window(start, end, start_field="s", end_field="e")
        assert (refused.value.code, refused.value.field) == ("INVALID_DATE_RANGE", "e")
    with pytest.raises(ValidationError) as missing:
        parse_closed_window("", "2026-11-26", start_field="s", end_field="e")
    assert (missing.value.code, missing.value.field) == ("MISSING_FIELD", "s")


async def test_ledger_history_until_a_date_includes_that_day() -> None:
    uow = FakeLedgerUnitOfWork()  # its clock: 2026-11-26 12:00 UTC
    ledger = LedgerService(uow)
    await ledger.post_transfers([t("today", "x", "y", 100)])
    _, entries, _ = await ledger.history("y", limit=10, cursor="", since="2026-11-26", until="2026-11-26")
    assert [e.transfer_id for e in entries] == ["today"]
    _, before, _ = await ledger.history("y", limit=10, cursor="", until="2026-11-25")
    assert before == []
    with pytest.raises(ValidationError) as naive:
        await ledger.history("y", limit=10, cursor="", since="2026-11-26T00:00:00")
    assert (naive.value.code, naive.value.field) == ("INVALID_DATE", "since")


def test_reconcile_reads_the_same_window_and_refuses_a_naive_instant() -> None:
    window = reconcile_window("2026-11-26", "2026-11-26")
    # The reconciliation store reads its window inclusively: its end is the last microsecond before
    # the exclusive bound, which is the same set of instants at the database's resolution.
    assert (window.start, window.end) == (DAY, DAY + timedelta(days=1) - timedelta(microseconds=1))
    same = reconcile_window("2026-11-26T00:00:00Z", "2026-11-27T00:00:00Z")
    assert same == window
    with pytest.raises(ValidationError) as naive:
        reconcile_window("2026-11-26T00:00:00", "2026-11-27")
    assert (naive.value.code, naive.value.field) == ("INVALID_DATE", "startDate")
