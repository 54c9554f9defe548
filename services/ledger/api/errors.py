"""Ledger's one error table: domain error → gRPC status + stable machine code."""

from __future__ import annotations

import grpc

from services.kernel.grpc_errors import BASE_TABLE, ErrorMapping, ErrorTable
from services.ledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    HoldAlreadyResolved,
    InvalidTransfer,
    NotReversible,
    TransferExists,
    TransferNotFound,
    TransferRejected,
)
from services.ledger.domain.schema import SchemaInvalid, SchemaStrandsAccounts, SchemaVersionConflict, SchemaViolation

# Through Envoy: INVALID_ARGUMENT and FAILED_PRECONDITION → 400, NOT_FOUND → 404,
# ALREADY_EXISTS and ABORTED → 409.
LEDGER_ERRORS = ErrorTable(
    {
        **BASE_TABLE,
        InvalidTransfer: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, "LEDGER_INVALID_TRANSFER"),
        AccountNotFound: ErrorMapping(grpc.StatusCode.NOT_FOUND, "LEDGER_ACCOUNT_NOT_FOUND"),
        TransferNotFound: ErrorMapping(grpc.StatusCode.NOT_FOUND, "LEDGER_TRANSFER_NOT_FOUND"),
        # Refused by a rule (funds, currency): the request is fine, the ledger's state does not allow it.
        TransferRejected: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_TRANSFER_REJECTED"),
        AccountExists: ErrorMapping(grpc.StatusCode.ALREADY_EXISTS, "LEDGER_ACCOUNT_EXISTS"),
        TransferExists: ErrorMapping(grpc.StatusCode.ALREADY_EXISTS, "LEDGER_TRANSFER_EXISTS"),
        HoldAlreadyResolved: ErrorMapping(grpc.StatusCode.ABORTED, "LEDGER_HOLD_ALREADY_RESOLVED"),
        NotReversible: ErrorMapping(grpc.StatusCode.ABORTED, "LEDGER_NOT_REVERSIBLE"),
        # The schema in force refuses the posting or account; the code names the rule (SCHEMA_*).
        SchemaViolation: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, "SCHEMA_VIOLATION"),
        SchemaInvalid: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, "SCHEMA_INVALID"),
        SchemaStrandsAccounts: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, "SCHEMA_STRANDS_ACCOUNTS"),
        SchemaVersionConflict: ErrorMapping(grpc.StatusCode.ABORTED, "SCHEMA_VERSION_CONFLICT"),
    }
)

SERVICE_NAME = "payrecon.ledger.v1.LedgerService"
# What the posting worker's health reports on: it serves no RPCs, only grpc.health.v1 (and reflection).
WORKER_SERVICE_NAME = "payrecon.ledger.v1.LedgerWorker"
SCOPES = {
    "GetBalance": "accounts:read",
    "ListLedgerEntries": "accounts:read",
    "GetAccount": "accounts:read",
    "ListAccounts": "accounts:read",
    "CreateAccount": "accounts:write",
    # Internal: the gateway does not route it (no google.api.http annotation); service tokens only.
    "PostTransfers": "ledger:internal",
    # Internal too: ingest's schema pre-check before its 202 (and its watch of the version in force).
    "CheckTransfers": "ledger:internal",
    "CreateHold": "transactions:write",
    "PostHold": "transactions:write",
    "VoidHold": "transactions:write",
    "ReverseTransfer": "transactions:write",
    "GetHold": "transactions:read",
    "GetTransfer": "transactions:read",
    "GetSchema": "schema:read",
    "ListSchemaVersions": "schema:read",
    # Changes what every later posting may do: an administrator's scope.
    "PutSchema": "schema:write",
}
