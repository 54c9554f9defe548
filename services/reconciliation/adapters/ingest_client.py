"""Ingest as reconciliation sees it: its public gRPC contract, for requests accepted but not yet posted."""

from __future__ import annotations

from datetime import UTC

import grpc
from payrecon.ingest.v1 import ingest_pb2, ingest_pb2_grpc

from services.kernel.telemetry import grpc_client_interceptors
from services.reconciliation.service.ports import PendingTransfer


class IngestClient:
    def __init__(self, address: str, token: str) -> None:
        self._channel = grpc.aio.insecure_channel(address, interceptors=grpc_client_interceptors())
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def pending(self, account_id: str, older_than_seconds: int) -> list[PendingTransfer]:
        reply = await self._stub.ListPendingTransactions(
            ingest_pb2.ListPendingTransactionsRequest(
                account_id=account_id, older_than_seconds=older_than_seconds, limit=1000
            ),
            metadata=self._metadata,
            timeout=10,
        )
        return [
            PendingTransfer(
                t.idempotency_key,
                t.source_account_id,
                t.destination_account_id,
                t.amount_minor,
                t.currency,
                t.accepted_at.ToDatetime(tzinfo=UTC),
                t.redrive_count,
            )
            for t in reply.transactions
        ]

    async def close(self) -> None:
        await self._channel.close(None)
