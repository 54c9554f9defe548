"""Protobuf codecs between ingest's domain and the ledger's asynchronous contracts."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import messages_pb2

from services.ingest.domain.model import RequestStatus, TransferOutcome, TransferSubmission
from services.kernel.timestamps import to_timestamp


def transfer_request_bytes(submission: TransferSubmission, accepted_at: datetime) -> bytes:
    return messages_pb2.TransferRequest(
        transfer_id=submission.idempotency_key,
        debit_account_id=submission.source_account_id,
        credit_account_id=submission.destination_account_id,
        amount=money_pb2.Money(minor_units=submission.amount.minor_units, currency=submission.amount.currency),
        metadata=submission.metadata,
        accepted_at=to_timestamp(accepted_at),
        code=submission.code,
    ).SerializeToString()


def transfer_batch_bytes(requests: Iterable[bytes]) -> bytes:
    batch = messages_pb2.TransferBatch()
    for payload in requests:
        batch.transfers.add().MergeFromString(payload)
    return batch.SerializeToString()


def outcomes_from_event_batch(body: bytes) -> list[TransferOutcome]:
    batch = messages_pb2.LedgerEventBatch.FromString(body)
    outcomes = []
    for event in batch.events:
        kind = event.WhichOneof("event")
        if kind == "transfer_posted":
            posted = event.transfer_posted
            outcomes.append(
                TransferOutcome(posted.transfer_id, RequestStatus.COMPLETED, posted.posted_at.ToDatetime(tzinfo=UTC))
            )
        elif kind == "transfer_rejected":
            rejected = event.transfer_rejected
            outcomes.append(
                TransferOutcome(
                    rejected.transfer_id,
                    RequestStatus.FAILED,
                    rejected.rejected_at.ToDatetime(tzinfo=UTC),
                    rejected.code,
                    rejected.message,
                )
            )
    return outcomes
