"""Use case: reconcile an account over a window (the projection of ledger events is written by the
event consumer straight into the store: it is data, with no rule to apply)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from services.reconciliation.domain.model import Report, check_account, parse_window, validate_account_id
from services.reconciliation.service.ports import LedgerBalances, ReconciliationStore


@dataclass(frozen=True)
class StoredReport:
    run_id: str
    created_at: datetime
    report: Report


@dataclass
class ReconciliationService:
    store: ReconciliationStore
    ledger: LedgerBalances

    async def reconcile_account(self, account_id: str, start: str, end: str) -> StoredReport:
        """Compares the projection with the ledger for the window and stores the run.

        Raises ValidationError for a malformed account id or a malformed or reversed window.
        """
        account_id = validate_account_id(account_id)
        window = parse_window(start, end)
        as_of = min(window.end, datetime.now(UTC))
        ledger = await self.ledger.balance_as_of(account_id, as_of)
        debits, credits, projected_currency = await self.store.totals_until(account_id, as_of)
        debit_normal = ledger.debit_normal if ledger else False
        projected = debits - credits if debit_normal else credits - debits
        currency = (ledger.currency if ledger else None) or projected_currency or ""
        transfers = await self.store.transfers_in(account_id, window)
        report = check_account(
            account_id,
            currency,
            window,
            projected_balance=projected,
            ledger_balance=ledger.balance_minor if ledger else 0,
            transfers=transfers,
        )
        run_id, created_at = await self.store.save_run(
            report,
            {
                "account_id": account_id,
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
                "transaction_count": report.transaction_count,
                "expected_balance_minor": report.expected_balance_minor,
                "actual_balance_minor": report.actual_balance_minor,
                "currency": currency,
                "discrepancies": [d.__dict__ for d in report.discrepancies],
            },
        )
        return StoredReport(run_id, created_at, report)
