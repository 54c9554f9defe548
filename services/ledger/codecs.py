"""Protobuf codecs between the ledger's domain and its contracts (queued transfers, ledger events).

Shared by the api (gRPC answers) and the adapters (the outbox), so neither imports the other."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import messages_pb2

from services.kernel.money import Money
from services.kernel.timestamps import to_timestamp
from services.ledger.domain import events
from services.ledger.domain.model import TransferInstruction


def _money(money: Money) -> money_pb2.Money:
    return money_pb2.Money(minor_units=money.minor_units, currency=money.currency)


def instruction_from_proto(request: messages_pb2.TransferRequest) -> TransferInstruction:
    amount = request.amount
    return TransferInstruction(
        request.transfer_id,
        request.debit_account_id,
        request.credit_account_id,
        Money(amount.minor_units, amount.currency),
        dict(request.metadata) if request.metadata else {},
        request.accepted_at.ToDatetime(tzinfo=UTC) if request.HasField("accepted_at") else None,
        request.pending,
        request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None,
        request.code,
    )


def instructions_from_batch(body: bytes) -> list[TransferInstruction]:
    return [instruction_from_proto(r) for r in messages_pb2.TransferBatch.FromString(body).transfers]


@functools.lru_cache(maxsize=16)
def _stamp(at: datetime) -> Timestamp:
    # A batch stamps a thousand events with one instant; message constructors copy it.
    return to_timestamp(at)


def _fill_posted(message: messages_pb2.LedgerEvent, event: events.TransferPosted) -> None:
    # Field by field rather than nested keyword arguments: half the cost, and this runs per transfer.
    t = event.transfer
    posted = message.transfer_posted
    posted.transfer_id = t.transfer_id
    posted.debit_account_id = t.debit_account_id
    posted.credit_account_id = t.credit_account_id
    posted.amount.minor_units = t.amount.minor_units
    posted.amount.currency = t.amount.currency
    posted.posted_at.CopyFrom(_stamp(event.at))
    posted.debit_entry_id = event.debit_entry_id
    posted.credit_entry_id = event.credit_entry_id
    if t.metadata:
        posted.metadata.update(t.metadata)


def event_batch(ledger_events: Sequence[events.LedgerEvent]) -> messages_pb2.LedgerEventBatch:
    """The events as one LedgerEventBatch, each built in its place in the batch (building them apart
    and copying them in costs twice as much; a posting transaction builds thousands)."""
    batch = messages_pb2.LedgerEventBatch()
    add = batch.events.add
    for event in ledger_events:
        if type(event) is events.TransferPosted:
            _fill_posted(add(), event)
        else:
            add().CopyFrom(event_message(event))
    return batch


def event_message(event: events.LedgerEvent) -> messages_pb2.LedgerEvent:
    """The contract's LedgerEvent for a domain event."""
    if isinstance(event, events.TransferPosted):
        message = messages_pb2.LedgerEvent()
        _fill_posted(message, event)
        return message
    if isinstance(event, events.TransferRejected):
        t = event.transfer
        return messages_pb2.LedgerEvent(
            transfer_rejected=messages_pb2.TransferRejected(
                transfer_id=t.transfer_id,
                code=event.code,
                message=event.message,
                rejected_at=_stamp(event.at),
                debit_account_id=t.debit_account_id,
                credit_account_id=t.credit_account_id,
                amount=_money(t.amount),
            )
        )
    if isinstance(event, events.HoldCreated):
        t = event.transfer
        created = messages_pb2.HoldCreated(
            hold_id=t.transfer_id,
            debit_account_id=t.debit_account_id,
            credit_account_id=t.credit_account_id,
            amount=_money(t.amount),
            created_at=to_timestamp(event.at),
        )
        if t.expires_at:
            created.expires_at.CopyFrom(to_timestamp(t.expires_at))
        return messages_pb2.LedgerEvent(hold_created=created)
    if isinstance(event, events.HoldPosted):
        return messages_pb2.LedgerEvent(
            hold_posted=messages_pb2.HoldPosted(
                hold_id=event.hold.transfer_id,
                held=_money(event.hold.amount),
                posted=_money(event.posted),
                posted_at=to_timestamp(event.at),
            )
        )
    if isinstance(event, events.HoldVoided):
        return messages_pb2.LedgerEvent(
            hold_voided=messages_pb2.HoldVoided(
                hold_id=event.hold.transfer_id,
                held=_money(event.hold.amount),
                expired=event.expired,
                voided_at=to_timestamp(event.at),
            )
        )
    return messages_pb2.LedgerEvent(
        transfer_reversed=messages_pb2.TransferReversed(
            transfer_id=event.original_id,
            reversal_id=event.reversal.transfer_id,
            reason=event.reason,
            reversed_at=to_timestamp(event.at),
        )
    )


def event_batch_bytes(rows: Sequence[bytes]) -> bytes:
    """Outbox rows (each a serialized LedgerEventBatch) as one LedgerEventBatch: serialized protobuf
    messages concatenate into their merge, and a merge of batches is the batch of all their events."""
    return b"".join(rows)
