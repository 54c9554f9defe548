"""Decisions about transfers the ledger already recorded: replay or conflict, the hold state machine,
and whether a transfer may be reversed. Pure: the service loads records, asks, and persists the answer.

A hold moves PENDING → POSTED (all or part) | VOIDED | EXPIRED, once; every later call finds it final.
A reversal mirrors a posted, ordinary, not yet reversed transfer, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from services.kernel.money import Money
from services.ledger.domain.errors import HoldAlreadyResolved, NotReversible, TransferExists
from services.ledger.domain.events import (
    HoldCreated,
    HoldVoided,
    LedgerEvent,
    TransferPosted,
    TransferRejected,
)
from services.ledger.domain.model import (
    TRANSFER_EXISTS,
    TransferInstruction,
    TransferKind,
    TransferStatus,
    reversal_of,
)


@dataclass(frozen=True)
class TransferRecord:
    """A transfer as the ledger recorded it: posted, rejected, a hold in any state, or a reversal."""

    instruction: TransferInstruction
    kind: TransferKind
    status: TransferStatus
    reject_code: str | None
    reject_message: str | None
    created_at: datetime
    posted_amount_minor: int | None = None
    expires_at: datetime | None = None
    resolved_at: datetime | None = None
    reverses_transfer_id: str | None = None
    reversed_by: str | None = None
    reason: str | None = None
    debit_entry_id: int | None = None
    credit_entry_id: int | None = None

    @property
    def id(self) -> str:
        return self.instruction.transfer_id

    @property
    def posted_amount(self) -> Money:
        minor = self.posted_amount_minor or self.instruction.amount.minor_units
        return Money(minor, self.instruction.amount.currency)

    def event(self) -> LedgerEvent:
        """The event that announced this record's current state."""
        if self.status is TransferStatus.REJECTED:
            return TransferRejected(
                self.instruction, self.reject_code or "", self.reject_message or "", self.created_at
            )
        if self.status is TransferStatus.POSTED:
            if self.debit_entry_id is None or self.credit_entry_id is None:
                raise ValueError(f"posted transfer {self.id!r} has no entries")
            posted = replace(self.instruction, amount=self.posted_amount)
            return TransferPosted(
                posted, self.resolved_at or self.created_at, self.debit_entry_id, self.credit_entry_id
            )
        if self.status is TransferStatus.PENDING:
            return HoldCreated(self.instruction, self.created_at)
        return HoldVoided(self.instruction, self.status is TransferStatus.EXPIRED, self.resolved_at or self.created_at)

    def repeat_event(self, again: TransferInstruction, now: datetime) -> LedgerEvent:
        """The original outcome when `again` is the same movement (a replay); a LEDGER_TRANSFER_EXISTS
        rejection when the id is reused for a different one."""
        if self.instruction.same_movement(again):
            return self.event()
        return TransferRejected(
            again,
            TRANSFER_EXISTS,
            f"transfer id {again.transfer_id!r} was already used on {self.created_at.date().isoformat()}"
            " for a different transfer",
            now,
        )


# -- posting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostingPlan:
    """How a batch splits: `fresh` transfers to post (first occurrence of each new id, in order),
    `duplicates` (ids known or repeated within the batch) and the outcome told again for known ids."""

    fresh: list[TransferInstruction]
    duplicates: list[str]
    repeats: list[LedgerEvent]


def plan_posting(
    transfers: Sequence[TransferInstruction], known: Mapping[str, TransferRecord], now: datetime
) -> PostingPlan:
    """A known id's outcome is told again: whoever sent it again (a key reused after ingest forgot it,
    a redelivery past SQS's deduplication window) is still waiting for one."""
    fresh: list[TransferInstruction] = []
    duplicates: list[str] = []
    repeats: list[LedgerEvent] = []
    seen: set[str] = set()
    for transfer in transfers:
        record = known.get(transfer.transfer_id)
        if record is not None:
            duplicates.append(transfer.transfer_id)
            repeats.append(record.repeat_event(transfer, now))
        elif transfer.transfer_id in seen:
            duplicates.append(transfer.transfer_id)
        else:
            seen.add(transfer.transfer_id)
            fresh.append(transfer)
    return PostingPlan(fresh, duplicates, repeats)


def unknown_transfers(
    transfers: Sequence[TransferInstruction], known: Mapping[str, TransferRecord]
) -> list[TransferInstruction]:
    """The transfers whose id is not recorded yet, once each, without metadata: given up on after
    every retry, their metadata may be the very thing the database refused."""
    return list({t.transfer_id: replace(t, metadata={}) for t in transfers if t.transfer_id not in known}.values())


# -- holds -------------------------------------------------------------------------------------


class HoldAction(StrEnum):
    POST = "POST"
    VOID = "VOID"
    EXPIRE = "EXPIRE"  # the sweeper: only a hold that is due


@dataclass(frozen=True)
class HoldDecision:
    status: TransferStatus  # POSTED, VOIDED or EXPIRED
    posted_minor: int  # 0 unless POSTED

    @property
    def expired(self) -> bool:
        return self.status is TransferStatus.EXPIRED


def decide_hold(
    record: TransferRecord, action: HoldAction, now: datetime, post_minor: int | None = None
) -> HoldDecision | None:
    """What `action` does to the hold now; None when it changes nothing (already final, or EXPIRE on a
    hold not yet due). A hold past its expiry expires whatever was asked: its reservation has lapsed."""
    if record.status is not TransferStatus.PENDING:
        return None
    expired = record.expires_at is not None and record.expires_at <= now
    if expired:
        return HoldDecision(TransferStatus.EXPIRED, 0)
    if action is HoldAction.EXPIRE:
        return None
    if action is HoldAction.VOID:
        return HoldDecision(TransferStatus.VOIDED, 0)
    held = record.instruction.amount.minor_units
    return HoldDecision(TransferStatus.POSTED, held if post_minor is None else post_minor)


def settled(
    record: TransferRecord, decision: HoldDecision, now: datetime, entry_ids: tuple[int, int] | None
) -> TransferRecord:
    """The hold after `decision`, with the entries of its posting when it posted."""
    if decision.posted_minor:
        if entry_ids is None:
            raise ValueError("a posted hold needs its entry ids")
        return replace(
            record,
            status=decision.status,
            posted_amount_minor=decision.posted_minor,
            resolved_at=now,
            debit_entry_id=entry_ids[0],
            credit_entry_id=entry_ids[1],
        )
    return replace(record, status=decision.status, resolved_at=now)


def require_settled_as(final: TransferRecord, action: HoldAction, asked_minor: int | None = None) -> TransferRecord:
    """`final` when it is what the caller asked for — this call's effect, or the same request
    repeated; else HoldAlreadyResolved (another call won, or the hold expired)."""
    if action is HoldAction.VOID and final.status is TransferStatus.VOIDED:
        return final
    if action is HoldAction.POST and final.status is TransferStatus.POSTED:
        asked = final.instruction.amount.minor_units if asked_minor is None else asked_minor
        if final.posted_amount.minor_units == asked:
            return final
    code = "LEDGER_HOLD_EXPIRED" if final.status is TransferStatus.EXPIRED else "LEDGER_HOLD_ALREADY_RESOLVED"
    raise HoldAlreadyResolved(
        f"hold {final.id!r} is already {final.status.value}",
        field="hold_id",
        code=code,
        metadata={"status": final.status.value},
    )


# -- reversals ---------------------------------------------------------------------------------


def plan_reversal(
    original: TransferRecord, existing: TransferRecord | None, reversal_id: str, reason: str
) -> TransferInstruction | TransferRecord:
    """The reversal to post, or — when `reversal_id` already reverses this transfer — that reversal
    (a replay). Raises TransferExists (the id is taken by another transfer) and NotReversible (not a
    posted ordinary transfer, or already reversed)."""
    if existing is not None:
        if existing.reverses_transfer_id == original.id:
            return existing
        raise TransferExists(
            f"transfer id {reversal_id!r} is already used by another transfer",
            field="idempotencyKey",
            code="LEDGER_TRANSFER_EXISTS",
        )
    refusal = None
    if original.kind is TransferKind.REVERSAL:
        refusal = f"transfer {original.id!r} is itself a reversal"
    elif original.status is not TransferStatus.POSTED:
        refusal = f"transfer {original.id!r} is {original.status.value}; only posted transfers can be reversed"
    elif original.reversed_by:
        refusal = f"transfer {original.id!r} was already reversed by {original.reversed_by!r}"
    if refusal:
        raise NotReversible(refusal, field="transfer_id", code="LEDGER_NOT_REVERSIBLE")
    return reversal_of(replace(original.instruction, amount=original.posted_amount), reversal_id, reason)
