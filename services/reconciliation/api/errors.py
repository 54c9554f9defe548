"""Reconciliation's one error table."""

from __future__ import annotations

from services.kernel.grpc_errors import BASE_TABLE, ErrorTable

RECONCILIATION_ERRORS = ErrorTable(dict(BASE_TABLE))

SERVICE_NAME = "payrecon.reconciliation.v1.ReconciliationService"
SCOPES = {"ReconcileAccount": "reconciliation:write"}
