"""Ingest's one error table: domain error → gRPC status + stable machine code."""

from __future__ import annotations

import grpc

from services.ingest.domain.errors import (
    IdempotencyKeyReused,
    InvalidSubmission,
    SchemaRefused,
    UnknownTransaction,
)
from services.kernel.grpc_errors import BASE_TABLE, ErrorMapping, ErrorTable

INGEST_ERRORS = ErrorTable(
    {
        **BASE_TABLE,
        InvalidSubmission: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
        # As the ledger maps its own schema refusals (FAILED_PRECONDITION → 400 through Envoy); the
        # error's code names the rule (SCHEMA_*).
        SchemaRefused: ErrorMapping(grpc.StatusCode.FAILED_PRECONDITION, "SCHEMA_VIOLATION"),
        IdempotencyKeyReused: ErrorMapping(grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"),
        UnknownTransaction: ErrorMapping(grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND"),
    }
)

SERVICE_NAME = "payrecon.ingest.v1.IngestService"
SCOPES = {
    "SubmitTransaction": "transactions:write",
    "GetTransactionStatus": "transactions:read",
    "GetQueueStats": "ops:read",
    "ListPendingTransactions": "transactions:read",
    "GetCacheStats": "ops:read",
}
# Probes: answered without a token, like grpc.health.v1.
PUBLIC_METHODS = ("GetHealth", "GetReadiness")
