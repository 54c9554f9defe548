"""The ledger as reconciliation sees it: its public gRPC contract, called with a service token."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc, messages_pb2

from services.kernel.errors import Unavailable
from services.kernel.json_values import whole_numbers
from services.kernel.telemetry import grpc_client_interceptors
from services.kernel.timestamps import to_timestamp
from services.reconciliation.service.ports import LedgerAccount, LedgerBalance


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
        return LedgerBalance(
            reply.balance_minor,
            reply.currency,
            reply.account_type in ("ASSET", "EXPENSE"),
            reply.last_entry_id,
            reply.account_class,
            reply.schema_version,
        )

    async def schema(self, version: int) -> tuple[int, Mapping[str, Any]] | None:
        """None when no schema was ever applied (version 0)."""
        reply = await self._stub.GetSchema(
            ledger_pb2.GetSchemaRequest(version=version), metadata=self._metadata, timeout=10
        )
        if reply.version == 0:
            return None
        return reply.version, whole_numbers(json_format.MessageToDict(reply.document))

    async def accounts_with_metadata(self, field: str, value: str, limit: int) -> list[LedgerAccount]:
        reply = await self._stub.ListAccounts(
            ledger_pb2.ListAccountsRequest(limit=limit, metadata=[f"{field}:{value}"]),
            metadata=self._metadata,
            timeout=10,
        )
        return [LedgerAccount(a.id, a.account_class) for a in reply.accounts]

    async def post_adjustment(
        self,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_minor: int,
        currency: str,
        reason: str,
    ) -> str:
        """Posts through the ledger's internal batch RPC (the token needs `ledger:internal`); the id makes
        a retry harmless. Returns '' when posted, else the ledger's rejection code."""
        request = ledger_pb2.PostTransfersRequest(
            transfers=[
                messages_pb2.TransferRequest(
                    transfer_id=transfer_id,
                    debit_account_id=debit_account_id,
                    credit_account_id=credit_account_id,
                    amount=money_pb2.Money(minor_units=amount_minor, currency=currency),
                    metadata={"reason": reason[:500], "kind": "reconciliation-adjustment"},
                    accepted_at=to_timestamp(datetime.now(UTC)),
                )
            ]
        )
        try:
            reply = await self._stub.PostTransfers(request, metadata=self._metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable("the ledger cannot be reached; retry", code="SERVICE_UNAVAILABLE") from None
            raise
        (outcome,) = reply.outcomes
        if outcome.WhichOneof("event") == "transfer_rejected":
            return str(outcome.transfer_rejected.code)
        return ""

    async def close(self) -> None:
        await self._channel.close(None)
