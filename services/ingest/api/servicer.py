"""Thin gRPC servicer of IngestService: proto → command → use case → proto."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import grpc
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.metrics import Meter
from payrecon.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from services.ingest.domain.errors import IdempotencyKeyReused
from services.ingest.domain.model import RequestStatus, StoredRequest, SubmitTransaction
from services.ingest.service.operations import OperationsService
from services.ingest.service.transactions import TransactionService
from services.kernel.grpc_server import set_http_status
from services.kernel.json_values import json_scalar
from services.kernel.metrics import payrecon_meter
from services.kernel.money import format_minor
from services.kernel.timestamps import to_timestamp


def _now() -> Timestamp:
    return to_timestamp(datetime.now(UTC))


def _result(stored: StoredRequest) -> ingest_pb2.TransactionResult:
    display = Decimal(format_minor(stored.amount.minor_units, stored.amount.currency))
    return ingest_pb2.TransactionResult(
        id=stored.idempotency_key,
        source_account_id=stored.source_account_id,
        destination_account_id=stored.destination_account_id,
        amount=struct_pb2.Value(number_value=float(display)),
        currency=stored.amount.currency,
        status=stored.status.value,
        created_at=to_timestamp(stored.completed_at or stored.accepted_at),
        amount_minor=stored.amount.minor_units,
    )


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self,
        transactions: TransactionService,
        operations: OperationsService,
        base_path: str,
        meter: Meter | None = None,
    ) -> None:
        self._transactions = transactions
        self._operations = operations
        self._base_path = base_path.rstrip("/")
        meter = meter or payrecon_meter()
        # Told at the edge, like the idempotent-replayed header: the use case only answers.
        self._replays = meter.create_counter(
            "payrecon.ingest.idempotency.replays",
            description="Submits answered with the original acceptance (same key, same request)",
        )
        self._conflicts = meter.create_counter(
            "payrecon.ingest.idempotency.conflicts",
            description="Submits refused because their key was used for a different request (IDEMPOTENCY_KEY_REUSED)",
        )
        # Served as 0 from the start: rate() needs a series before the first increment to count it.
        self._replays.add(0)
        self._conflicts.add(0)

    async def SubmitTransaction(
        self,
        request: ingest_pb2.SubmitTransactionRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.SubmitTransactionRequest, ingest_pb2.SubmitTransactionResponse],
    ) -> ingest_pb2.SubmitTransactionResponse:
        tx = request.transaction
        command = SubmitTransaction(
            idempotency_key=request.idempotency_key,
            source_account_id=tx.source_account_id,
            destination_account_id=tx.destination_account_id,
            amount=json_scalar(tx.amount, tx.HasField("amount")),
            currency=tx.currency,
            metadata=dict(tx.metadata),
            has_transaction=request.HasField("transaction"),
            code=tx.code,
        )
        try:
            acceptance = await self._transactions.submit(command)
        except IdempotencyKeyReused:
            self._conflicts.add(1)
            raise
        if acceptance.replayed:
            self._replays.add(1)
        await context.send_initial_metadata(
            (("x-http-code", "202"), ("idempotent-replayed", "true" if acceptance.replayed else "false"))
        )
        return ingest_pb2.SubmitTransactionResponse(
            status="ACCEPTED",
            idempotency_key=acceptance.idempotency_key,
            message_id=acceptance.message_id,
            poll_url=f"{self._base_path}/transactions/status/{acceptance.idempotency_key}",
            expires_at=to_timestamp(acceptance.expires_at),
            replayed=acceptance.replayed,
        )

    async def GetTransactionStatus(
        self,
        request: ingest_pb2.GetTransactionStatusRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetTransactionStatusRequest, ingest_pb2.TransactionStatus],
    ) -> ingest_pb2.TransactionStatus:
        stored = await self._transactions.status(request.idempotency_key)
        response = ingest_pb2.TransactionStatus(status=stored.status.value, idempotency_key=stored.idempotency_key)
        if stored.status is RequestStatus.COMPLETED:
            response.result.CopyFrom(_result(stored))
        elif stored.status is RequestStatus.FAILED:
            response.error.CopyFrom(
                ingest_pb2.TransactionError(code=stored.error_code or "FAILED", message=stored.error_message or "")
            )
        return response

    async def ListPendingTransactions(
        self,
        request: ingest_pb2.ListPendingTransactionsRequest,
        context: grpc.aio.ServicerContext[
            ingest_pb2.ListPendingTransactionsRequest, ingest_pb2.ListPendingTransactionsResponse
        ],
    ) -> ingest_pb2.ListPendingTransactionsResponse:
        pending = await self._transactions.pending(request.account_id, request.older_than_seconds, request.limit)
        return ingest_pb2.ListPendingTransactionsResponse(
            transactions=[
                ingest_pb2.PendingTransaction(
                    idempotency_key=p.idempotency_key,
                    source_account_id=p.source_account_id,
                    destination_account_id=p.destination_account_id,
                    amount=format_minor(p.amount.minor_units, p.amount.currency),
                    amount_minor=p.amount.minor_units,
                    currency=p.amount.currency,
                    accepted_at=to_timestamp(p.accepted_at),
                    redrive_count=p.redrive_count,
                )
                for p in pending
            ]
        )

    async def GetQueueStats(
        self,
        request: ingest_pb2.GetQueueStatsRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetQueueStatsRequest, ingest_pb2.QueueStats],
    ) -> ingest_pb2.QueueStats:
        stats = await self._operations.queue_statistics()
        return ingest_pb2.QueueStats(
            queue_url=stats.queue.url,
            message_count=stats.queue.messages,
            in_flight_count=stats.queue.in_flight,
            visibility_timeout=stats.queue.visibility_timeout,
            is_fifo=stats.queue.fifo,
            content_deduplication=stats.queue.content_deduplication,
            dlq_url=stats.dlq_url,
            dlq_message_count=stats.dlq_messages,
            outbox_pending=stats.outbox_pending,
            timestamp=_now(),
            redriven=stats.redrive.redriven,
            stuck=stats.redrive.stuck,
        )

    async def GetCacheStats(
        self,
        request: ingest_pb2.GetCacheStatsRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetCacheStatsRequest, ingest_pb2.CacheStats],
    ) -> ingest_pb2.CacheStats:
        stats = await self._operations.cache_statistics()
        return ingest_pb2.CacheStats(
            connected=stats.connected,
            total_keys=stats.total_keys,
            prefix=stats.prefix,
            default_ttl=stats.default_ttl,
            memory_usage=stats.memory_usage,
            timestamp=_now(),
        )

    async def GetHealth(
        self,
        request: ingest_pb2.GetHealthRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetHealthRequest, ingest_pb2.Health],
    ) -> ingest_pb2.Health:
        return ingest_pb2.Health(status="OK", timestamp=_now())

    async def GetReadiness(
        self,
        request: ingest_pb2.GetReadinessRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.GetReadinessRequest, ingest_pb2.Readiness],
    ) -> ingest_pb2.Readiness:
        report = await self._operations.readiness()
        if not report.ready:
            await set_http_status(context, 503)
        return ingest_pb2.Readiness(
            status="READY" if report.ready else "NOT_READY",
            components=ingest_pb2.ReadinessComponents(database=report.database, cache=report.cache, queue=report.queue),
            timestamp=_now(),
        )
