"""Cases as pure decisions: a run's findings against existing cases, the lifecycle's transitions, and
ACCEPTED_NOT_POSTED from ingest's pending transfers. No IO."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.kernel.errors import ValidationError
from services.reconciliation.domain.cases import (
    CaseAction,
    CaseState,
    CaseStatus,
    CaseTransitionRefused,
    Finding,
    next_status,
    parse_action,
    plan_cases,
)
from services.reconciliation.domain.matching_rules import MatchingRules
from services.reconciliation.service.matching_run import match_window
from services.reconciliation.service.ports import PendingTransfer, ProjectedEntry, StatementLineRecord, StoredRun
from services.reconciliation.service.reconcile import ReconciliationService


def finding(kind: str, line: str = "", transfer: str = "") -> Finding:
    return Finding(kind, "m", (line,) if line else (), (transfer,) if transfer else (), 100, "EUR")


def test_a_finding_opens_once_updates_reopens_and_vanishes() -> None:
    missing = finding("MISSING_IN_LEDGER", line="7")
    assert missing.fingerprint == finding("MISSING_IN_LEDGER", line="7").fingerprint
    assert missing.fingerprint != finding("MISSING_IN_LEDGER", line="8").fingerprint
    assert missing.fingerprint != finding("DUPLICATE", line="7").fingerprint

    first = plan_cases([missing, missing], {}, [])
    assert first.open == [missing] and not first.auto_resolve

    open_case = CaseState("c1", missing.fingerprint, CaseStatus.OPEN)
    again = plan_cases([missing], {missing.fingerprint: open_case}, [missing.fingerprint])
    assert again.still_open == [("c1", missing)] and not again.open and not again.auto_resolve

    gone = plan_cases([], {missing.fingerprint: open_case}, [missing.fingerprint])
    assert gone.auto_resolve == ["c1"]
    out_of_scope = plan_cases([], {missing.fingerprint: open_case}, [])
    assert out_of_scope.auto_resolve == []

    resolved = CaseState("c1", missing.fingerprint, CaseStatus.RESOLVED)
    back = plan_cases([missing], {missing.fingerprint: resolved}, [missing.fingerprint])
    assert back.reopen == [("c1", missing)]
    assert plan_cases([], {missing.fingerprint: resolved}, [missing.fingerprint]).auto_resolve == []


def test_the_lifecycle_moves_forward_only() -> None:
    assert next_status(CaseStatus.OPEN, CaseAction.ACKNOWLEDGE) is CaseStatus.ACKNOWLEDGED
    assert next_status(CaseStatus.OPEN, CaseAction.RESOLVE) is CaseStatus.RESOLVED
    assert next_status(CaseStatus.ACKNOWLEDGED, CaseAction.POST_ADJUSTMENT) is CaseStatus.RESOLVED
    with pytest.raises(CaseTransitionRefused):
        next_status(CaseStatus.ACKNOWLEDGED, CaseAction.ACKNOWLEDGE)
    for action in CaseAction:
        with pytest.raises(CaseTransitionRefused):
            next_status(CaseStatus.RESOLVED, action)


@pytest.mark.parametrize(
    ("action", "reason", "code"), [("SHRUG", "x", "INVALID_ACTION"), ("RESOLVE", " ", "MISSING_FIELD")]
)
def test_a_resolution_needs_a_known_action_and_a_reason(action: str, reason: str, code: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_action(action, reason)
    assert refused.value.code == code
    assert parse_action("acknowledge", "seen") is CaseAction.ACKNOWLEDGE


class Pending:
    async def pending(self, account_id: str, older_than_seconds: int) -> list[PendingTransfer]:
        accepted = datetime.now(UTC) - timedelta(seconds=older_than_seconds + 1)
        return [PendingTransfer("k-1", account_id, "other", 1234, "EUR", accepted, 3)]


async def test_a_transfer_accepted_and_never_posted_is_a_finding_with_its_evidence() -> None:
    service = ReconciliationService(store=None, ledger=None, accepted=Pending(), not_posted_after_seconds=60)  # type: ignore[arg-type]
    (found,) = await service._not_posted("bank-1")
    assert found.kind == "ACCEPTED_NOT_POSTED" and found.transfer_ids == ("k-1",)
    assert found.amount_minor == 1234 and found.evidence["redriveCount"] == 3
    assert found.severity == "HIGH"


class Book:
    """A statement line and ledger entries of one day, one of them beyond the matching engine's range."""

    day = datetime(2026, 11, 26, tzinfo=UTC)

    async def line_span(self, account_id: str, first: object, last: object) -> tuple[int, date, date]:
        return 1, self.day.date(), self.day.date()

    async def lines_in(self, account_id: str, first: object, last: object) -> list[StatementLineRecord]:
        return [StatementLineRecord(1, 2, 500, "USD", None, self.day.date(), "t-1", None, "", None, "BANK")]

    async def entries_in(self, account_id: str, start: object, end: object) -> list[ProjectedEntry]:
        return [
            ProjectedEntry(10, "t-1", "DEBIT", 500, "USD", self.day, None, None),
            # 17,930,859,886,660,936.00 USD: a transfer the fuzzer got posted, within int64.
            ProjectedEntry(11, "t-huge", "DEBIT", 1_793_085_988_666_093_600, "USD", self.day, None, None),
        ]


async def test_an_amount_beyond_the_matching_range_is_reported_not_fatal() -> None:
    """It used to raise ValueError on every run of the account: reconcile answered 500 and continuous
    matching failed every 2 s, for ever."""
    day = Book.day.date()
    found = await match_window(Book(), "bank-1", day, day, MatchingRules(), True, "USD")  # type: ignore[arg-type]
    findings, matches, counts = found.findings, found.matches, found.counts
    assert [(m.statement_line_ids, m.transfer_ids) for m in matches] == [((1,), ("t-1",))]
    assert [(f.kind, f.transfer_ids) for f in findings] == [("MISSING_IN_STATEMENT", ("t-huge",))]
    assert counts["matched"] == 1


class Runs:
    """Stored runs, newest first, each report listing 2,000 discrepancies (about 200 KiB of JSON)."""

    def __init__(self) -> None:
        start = datetime(2026, 11, 26, tzinfo=UTC)
        busy = {"discrepancies": [{"type": "MISSING_IN_LEDGER", "message": "x" * 80}] * 2000}
        self.all = [StoredRun(f"run-{n:02d}", start - timedelta(minutes=n), busy) for n in range(12)]

    async def runs(self, account_id: str | None, before: tuple[datetime, str] | None, limit: int) -> list[StoredRun]:
        after = [r for r in self.all if before is None or (r.created_at, r.id) < before]
        return after[:limit]


async def test_a_page_of_busy_runs_stays_small_enough_for_the_gateway() -> None:
    """50 such reports (10 MiB) were one answer: more than Envoy buffers to transcode, a 500."""
    service = ReconciliationService(store=Runs(), ledger=None, accepted=None)  # type: ignore[arg-type]
    seen: list[str] = []
    page, cursor = await service.runs("", 50, "")
    while True:
        assert 1 <= len(page) <= 3
        seen += [run.id for run in page]
        if not cursor:
            break
        page, cursor = await service.runs("", 50, cursor)
    assert seen == [f"run-{n:02d}" for n in range(12)]
