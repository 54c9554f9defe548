"""What reconciliation's use cases need: the ledger's balances (its gRPC API) and the context's own
store (the projection of ledger events and the stored runs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.reconciliation.domain.model import Report, TransferSides, Window


@dataclass(frozen=True)
class LedgerBalance:
    balance_minor: int
    currency: str
    debit_normal: bool


class LedgerBalances(Protocol):
    async def balance_as_of(self, account_id: str, as_of: datetime) -> LedgerBalance | None:
        """None when the ledger does not know the account."""
        ...


class ReconciliationStore(Protocol):
    async def totals_until(self, account_id: str, until: datetime) -> tuple[int, int, str | None]: ...

    async def transfers_in(self, account_id: str, window: Window) -> list[TransferSides]: ...

    async def save_run(self, report: Report, rendered: dict[str, object]) -> tuple[str, datetime]: ...
