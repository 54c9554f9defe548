"""Protobuf codecs between the ledger's domain and its asynchronous contracts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import messages_pb2

from services.kernel.money import Money
from services.kernel.timestamps import to_timestamp
from services.ledger.domain.model import Posted, Rejected, TransferInstruction


def _money(money: Money) -> money_pb2.Money:
    return money_pb2.Money(minor_units=money.minor_units, currency=money.currency)


def instruction_from_proto(request: messages_pb2.TransferRequest) -> TransferInstruction:
    return TransferInstruction(
        transfer_id=request.transfer_id,
        debit_account_id=request.debit_account_id,
        credit_account_id=request.credit_account_id,
        amount=Money(request.amount.minor_units, request.amount.currency),
        metadata=dict(request.metadata),
        accepted_at=request.accepted_at.ToDatetime(tzinfo=UTC) if request.HasField("accepted_at") else None,
    )


def instructions_from_batch(body: bytes) -> list[TransferInstruction]:
    return [instruction_from_proto(r) for r in messages_pb2.TransferBatch.FromString(body).transfers]


def posted_event(outcome: Posted, at: datetime, debit_entry_id: int, credit_entry_id: int) -> messages_pb2.LedgerEvent:
    t = outcome.transfer
    return messages_pb2.LedgerEvent(transfer_posted=messages_pb2.TransferPosted(
        transfer_id=t.transfer_id,
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount=_money(t.amount),
        posted_at=to_timestamp(at),
        debit_entry_id=debit_entry_id,
        credit_entry_id=credit_entry_id,
        metadata=t.metadata,
    ))


def rejected_event(outcome: Rejected, at: datetime) -> messages_pb2.LedgerEvent:
    t = outcome.transfer
    return messages_pb2.LedgerEvent(transfer_rejected=messages_pb2.TransferRejected(
        transfer_id=t.transfer_id,
        code=outcome.code,
        message=outcome.message,
        rejected_at=to_timestamp(at),
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount=_money(t.amount),
    ))


def event_batch_bytes(events: Sequence[bytes]) -> bytes:
    batch = messages_pb2.LedgerEventBatch()
    for payload in events:
        batch.events.add().MergeFromString(payload)
    return batch.SerializeToString()
