"""The ledger's schema pre-check as ingest calls it: the internal CheckTransfers RPC, with a service
token (`ledger:internal`) and a short deadline."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc, messages_pb2

from services.ingest.domain.model import TransferSubmission
from services.ingest.service.ports import SchemaRefusal, SchemaVerdicts
from services.kernel.errors import Unavailable
from services.kernel.telemetry import grpc_client_interceptors


class LedgerSchemaChecker:
    def __init__(self, address: str, token: str) -> None:
        self._channel = grpc.aio.insecure_channel(address, interceptors=grpc_client_interceptors())
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def check(self, submissions: Sequence[TransferSubmission], timeout_seconds: float) -> SchemaVerdicts:
        request = ledger_pb2.CheckTransfersRequest(
            transfers=[
                messages_pb2.TransferRequest(
                    transfer_id=s.idempotency_key,
                    debit_account_id=s.source_account_id,
                    credit_account_id=s.destination_account_id,
                    amount=money_pb2.Money(minor_units=s.amount.minor_units, currency=s.amount.currency),
                    metadata=s.metadata,
                    code=s.code,
                )
                for s in submissions
            ]
        )
        try:
            reply = await self._stub.CheckTransfers(request, metadata=self._metadata, timeout=timeout_seconds)
        except grpc.aio.AioRpcError as error:
            # Down, slow, or refusing our token: in every case the ledger cannot be asked now.
            raise Unavailable(
                f"the ledger's schema check failed: {error.code().name}", code="SERVICE_UNAVAILABLE"
            ) from None
        return SchemaVerdicts(
            reply.schema_version,
            [SchemaRefusal(v.code, v.message) if v.code else None for v in reply.verdicts],
        )

    async def close(self) -> None:
        await self._channel.close(None)
