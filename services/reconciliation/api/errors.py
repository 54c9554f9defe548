"""Reconciliation's one error table: domain error → gRPC status + stable machine code."""

from __future__ import annotations

import grpc

from services.kernel.grpc_errors import BASE_TABLE, ErrorMapping, ErrorTable
from services.reconciliation.domain.cases import CaseTransitionRefused
from services.reconciliation.service.reconcile import UnknownAccount, UnknownCase, UnknownRun

RECONCILIATION_ERRORS = ErrorTable(
    {
        **BASE_TABLE,
        UnknownAccount: ErrorMapping(grpc.StatusCode.NOT_FOUND, "RECON_ACCOUNT_NOT_FOUND"),
        UnknownCase: ErrorMapping(grpc.StatusCode.NOT_FOUND, "RECON_CASE_NOT_FOUND"),
        UnknownRun: ErrorMapping(grpc.StatusCode.NOT_FOUND, "RECON_RUN_NOT_FOUND"),
        # Through Envoy: 409, the case's state does not allow it (another call moved it first).
        CaseTransitionRefused: ErrorMapping(grpc.StatusCode.ABORTED, "RECON_CASE_TRANSITION_REFUSED"),
    }
)

SERVICE_NAME = "payrecon.reconciliation.v1.ReconciliationService"
SCOPES = {
    "ReconcileAccount": "reconciliation:write",
    "ImportStatement": "reconciliation:write",
    "ImportStatementStream": "reconciliation:write",
    "SetMatchingRules": "reconciliation:write",
    "GetMatchingRules": "reconciliation:read",
    "ListDiscrepancies": "reconciliation:read",
    "GetDiscrepancy": "reconciliation:read",
    "ResolveDiscrepancy": "reconciliation:write",
    "ListReconciliations": "reconciliation:read",
    "GetReconciliation": "reconciliation:read",
    "WatchDiscrepancies": "reconciliation:read",
    "ExportReconciliation": "reconciliation:read",
}
