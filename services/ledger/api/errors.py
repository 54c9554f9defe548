"""Ledger's one error table: domain error → gRPC status + stable machine code."""

from __future__ import annotations

import grpc

from services.kernel.errors import BASE_TABLE, ErrorMapping, ErrorTable
from services.ledger.domain.errors import AccountNotFound, InvalidTransfer, TransferRejected

LEDGER_ERRORS = ErrorTable({
    **BASE_TABLE,
    InvalidTransfer: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, "LEDGER_INVALID_TRANSFER"),
    AccountNotFound: ErrorMapping(grpc.StatusCode.NOT_FOUND, "LEDGER_ACCOUNT_NOT_FOUND"),
    TransferRejected: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_TRANSFER_REJECTED"),
})

SERVICE_NAME = "payrecon.ledger.v1.LedgerService"
SCOPES = {
    "GetBalance": "accounts:read",
    "ListLedgerEntries": "accounts:read",
    "PostTransfers": "transactions:write",
}
