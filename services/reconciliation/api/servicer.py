"""Thin gRPC servicer of ReconciliationService."""

from __future__ import annotations

import grpc
from payrecon.reconciliation.v1 import reconciliation_pb2, reconciliation_pb2_grpc

from services.kernel.money import format_minor
from services.kernel.timestamps import to_timestamp
from services.reconciliation.service.reconcile import ReconciliationService


class ReconciliationServicer(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    def __init__(self, service: ReconciliationService) -> None:
        self._service = service

    async def ReconcileAccount(
        self,
        request: reconciliation_pb2.ReconcileAccountRequest,
        context: grpc.aio.ServicerContext[
            reconciliation_pb2.ReconcileAccountRequest, reconciliation_pb2.ReconciliationReport
        ],
    ) -> reconciliation_pb2.ReconciliationReport:
        stored = await self._service.reconcile_account(request.account_id, request.start_date, request.end_date)
        report = stored.report

        def amount(minor: int | None) -> str:
            return "" if minor is None or not report.currency else format_minor(minor, report.currency)

        return reconciliation_pb2.ReconciliationReport(
            report_id=stored.run_id,
            account_id=report.account_id,
            period=reconciliation_pb2.Period(
                start=to_timestamp(report.window.start), end=to_timestamp(report.window.end)
            ),
            transaction_count=report.transaction_count,
            discrepancy_count=len(report.discrepancies),
            balanced=report.balanced,
            expected_balance=amount(report.expected_balance_minor),
            actual_balance=amount(report.actual_balance_minor),
            discrepancies=[
                reconciliation_pb2.Discrepancy(
                    type=d.kind,
                    transaction_id=d.transaction_id,
                    severity=d.severity,
                    expected=amount(d.expected_minor),
                    actual=amount(d.actual_minor),
                    message=d.message,
                )
                for d in report.discrepancies
            ],
            currency=report.currency,
            created_at=to_timestamp(stored.created_at),
        )
