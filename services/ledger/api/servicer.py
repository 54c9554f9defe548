"""Thin gRPC servicer of LedgerService: proto → command → use case → proto."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc

from services.kernel.money import format_minor
from services.kernel.timestamps import to_timestamp
from services.ledger.adapters.messages import instruction_from_proto
from services.ledger.domain.model import Direction
from services.ledger.service.ledger import LedgerService


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, ledger: LedgerService) -> None:
        self._ledger = ledger

    async def GetBalance(self, request: ledger_pb2.GetBalanceRequest,
                         context: grpc.aio.ServicerContext) -> ledger_pb2.Balance:
        as_of = request.as_of.ToDatetime(tzinfo=UTC) if request.HasField("as_of") else None
        view = await self._ledger.balance(request.account_id, as_of)
        currency = view.account.currency
        return ledger_pb2.Balance(
            account_id=view.account.id,
            currency=currency,
            balance=format_minor(view.balance_minor, currency),
            pending=format_minor(view.pending_minor, currency),
            available=format_minor(view.available_minor, currency),
            balance_minor=view.balance_minor,
            pending_minor=view.pending_minor,
            available_minor=view.available_minor,
            as_of=to_timestamp(view.as_of or datetime.now(UTC)),
            account_type=view.account.type.value,
        )

    async def ListLedgerEntries(self, request: ledger_pb2.ListLedgerEntriesRequest,
                                context: grpc.aio.ServicerContext) -> ledger_pb2.ListLedgerEntriesResponse:
        account, rows, next_cursor = await self._ledger.history(request.account_id, limit=request.limit,
                                                                cursor=request.cursor)
        entries = []
        for row in rows:
            # Signed effect on this account's balance (its normal side).
            increases = (row.direction == Direction.DEBIT) == account.type.debit_normal
            signed = row.amount_minor if increases else -row.amount_minor
            entries.append(ledger_pb2.LedgerEntry(
                id=row.id,
                transfer_id=row.transfer_id,
                account_id=row.account_id,
                entry_type=row.direction,
                amount=format_minor(signed, row.currency),
                amount_minor=signed,
                currency=row.currency,
                source_account_id=row.debit_account_id,
                destination_account_id=row.credit_account_id,
                status=row.status,
                metadata=row.metadata,
                created_at=to_timestamp(row.created_at),
            ))
        return ledger_pb2.ListLedgerEntriesResponse(account_id=account.id, entries=entries, next_cursor=next_cursor)

    async def PostTransfers(self, request: ledger_pb2.PostTransfersRequest,
                            context: grpc.aio.ServicerContext) -> ledger_pb2.PostTransfersResponse:
        outcomes = await self._ledger.post_transfers([instruction_from_proto(t) for t in request.transfers])
        return ledger_pb2.PostTransfersResponse(outcomes=outcomes)
