"""What the ledger announces after each change, as plain values. Adapters turn them into the
protobuf LedgerEvent of the contract and queue them in the outbox, grouped by `account_id` (the
debit account) so one account's events stay in order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.kernel.money import Money
from services.ledger.domain.model import Held, Posted, Rejected, TransferInstruction


@dataclass(frozen=True, slots=True)
class TransferPosted:
    transfer: TransferInstruction  # its amount is the amount posted
    at: datetime
    debit_entry_id: int
    credit_entry_id: int

    @property
    def transfer_id(self) -> str:
        return self.transfer.transfer_id

    @property
    def account_id(self) -> str:
        return self.transfer.debit_account_id


@dataclass(frozen=True, slots=True)
class TransferRejected:
    transfer: TransferInstruction
    code: str
    message: str
    at: datetime

    @property
    def transfer_id(self) -> str:
        return self.transfer.transfer_id

    @property
    def account_id(self) -> str:
        return self.transfer.debit_account_id


@dataclass(frozen=True, slots=True)
class HoldCreated:
    transfer: TransferInstruction
    at: datetime

    @property
    def transfer_id(self) -> str:
        return self.transfer.transfer_id

    @property
    def account_id(self) -> str:
        return self.transfer.debit_account_id


@dataclass(frozen=True, slots=True)
class HoldPosted:
    hold: TransferInstruction
    posted: Money
    at: datetime

    @property
    def transfer_id(self) -> str:
        return self.hold.transfer_id

    @property
    def account_id(self) -> str:
        return self.hold.debit_account_id


@dataclass(frozen=True, slots=True)
class HoldVoided:
    hold: TransferInstruction
    expired: bool
    at: datetime

    @property
    def transfer_id(self) -> str:
        return self.hold.transfer_id

    @property
    def account_id(self) -> str:
        return self.hold.debit_account_id


@dataclass(frozen=True, slots=True)
class TransferReversed:
    original_id: str
    reversal: TransferInstruction
    reason: str
    at: datetime

    @property
    def transfer_id(self) -> str:
        return self.original_id

    @property
    def account_id(self) -> str:
        return self.reversal.debit_account_id


LedgerEvent = TransferPosted | TransferRejected | HoldCreated | HoldPosted | HoldVoided | TransferReversed


def outcome_event(
    outcome: Posted | Held | Rejected, at: datetime, entry_ids: tuple[int, int] | None = None
) -> LedgerEvent:
    """The event announcing a posting outcome; a posted one needs its (debit, credit) entry ids."""
    if isinstance(outcome, Posted):
        if entry_ids is None:
            raise ValueError("a posted transfer's event needs its entry ids")
        return TransferPosted(outcome.transfer, at, entry_ids[0], entry_ids[1])
    if isinstance(outcome, Held):
        return HoldCreated(outcome.transfer, at)
    return TransferRejected(outcome.transfer, outcome.code, outcome.message, at)
