"""The ledger as reconciliation sees it: its public gRPC contract, called with a service token."""

from __future__ import annotations

from datetime import datetime

import grpc
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc

from services.kernel.telemetry import grpc_client_interceptors
from services.kernel.timestamps import to_timestamp
from services.reconciliation.service.ports import LedgerBalance


class LedgerClient:
    def __init__(self, address: str, token: str) -> None:
        self._channel = grpc.aio.insecure_channel(address, interceptors=grpc_client_interceptors())
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def balance_as_of(self, account_id: str, as_of: datetime) -> LedgerBalance | None:
        """None when the ledger does not know the account."""
        try:
            reply = await self._stub.GetBalance(
                ledger_pb2.GetBalanceRequest(account_id=account_id, as_of=to_timestamp(as_of)),
                metadata=self._metadata,
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return LedgerBalance(reply.balance_minor, reply.currency, reply.account_type in ("ASSET", "EXPENSE"))

    async def close(self) -> None:
        await self._channel.close(None)
