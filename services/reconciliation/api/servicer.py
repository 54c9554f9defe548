"""Thin gRPC servicer of ReconciliationService: proto → command → use case → proto."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format, struct_pb2
from payrecon.reconciliation.v1 import reconciliation_pb2 as pb
from payrecon.reconciliation.v1 import reconciliation_pb2_grpc

from services.kernel.auth import current_principal
from services.kernel.errors import ValidationError
from services.kernel.grpc_server import set_http_status
from services.kernel.json_values import whole_numbers
from services.kernel.money import format_minor
from services.kernel.timestamps import to_timestamp
from services.reconciliation.service.ports import CaseRecord, StoredRun
from services.reconciliation.service.reconcile import (
    ImportCommand,
    ImportOutcome,
    ReconciliationService,
    StoredReport,
)

# A statement streamed in chunks may be large, but not unbounded.
MAX_STREAMED_BYTES = 512 * 1024 * 1024
EXPORT_PIECE_BYTES = 256 * 1024


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(json_format_safe(values))
    return message


def json_format_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """Struct holds JSON values only: dates and other objects as their ISO/str form."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    return {str(k): clean(v) for k, v in values.items()}


def _dict(message: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = whole_numbers(json_format.MessageToDict(message))
    return result


def _import_message(outcome: ImportOutcome) -> pb.StatementImport:
    summary = outcome.summary
    message = pb.StatementImport(
        id=outcome.id,
        status="ALREADY_IMPORTED" if outcome.replayed else "IMPORTED",
        account_id=summary.get("accountId", ""),
        format=summary.get("format", ""),
        lines_imported=int(summary.get("linesImported", 0)),
        warnings=[pb.RowError(line=int(w["line"]), message=w["message"]) for w in summary.get("warnings", [])],
        opening_balance=summary.get("openingBalance", ""),
        closing_balance=summary.get("closingBalance", ""),
        balance_check=summary.get("balanceCheck", ""),
        statements=[
            pb.StatementSummary(**{_snake(k): v for k, v in st.items()}) for st in summary.get("statements", [])
        ],
        sha256=summary.get("sha256", ""),
        created_at=to_timestamp(outcome.created_at),
        matched=int(summary.get("matched", 0)),
        discrepancies_opened=int(summary.get("discrepanciesOpened", 0)),
    )
    return message


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _report_message(run_id: str, created_at: datetime, rendered: Mapping[str, Any]) -> pb.ReconciliationReport:
    currency = str(rendered.get("currency") or "")

    def amount(minor: Any) -> str:
        return "" if minor is None or not currency else format_minor(int(minor), currency)

    discrepancies = rendered.get("discrepancies", [])
    count = int(rendered.get("discrepancy_count", len(discrepancies)))
    return pb.ReconciliationReport(
        report_id=run_id,
        account_id=str(rendered.get("account_id", "")),
        period=pb.Period(
            start=to_timestamp(datetime.fromisoformat(str(rendered["start"]))),
            end=to_timestamp(datetime.fromisoformat(str(rendered["end"]))),
        ),
        transaction_count=int(rendered.get("transaction_count", 0)),
        discrepancy_count=count,
        balanced=count == 0,
        expected_balance=amount(rendered.get("expected_balance_minor")),
        actual_balance=amount(rendered.get("actual_balance_minor")),
        discrepancies=[
            pb.Discrepancy(
                type=d["type"],
                transaction_id=d.get("transaction_id", ""),
                severity=d.get("severity", ""),
                expected=amount(d.get("expected_minor")),
                actual=""
                if d.get("amount_minor") is None
                else format_minor(int(d["amount_minor"]), d.get("currency") or currency or "USD"),
                message=d.get("message", ""),
                case_id=d.get("case_id", ""),
                statement_line_ids=d.get("statement_line_ids", []),
                ledger_transfer_ids=d.get("ledger_transfer_ids", []),
            )
            for d in discrepancies
        ],
        currency=currency,
        created_at=to_timestamp(created_at),
        statement_lines=int(rendered.get("statement_lines", 0)),
        ledger_entries=int(rendered.get("ledger_entries", 0)),
        matched=int(rendered.get("matched", 0)),
        rules_version=int(rendered.get("rules_version", 0)),
        rules_source=str(rendered.get("rules_source", "")),
        watermark=str(rendered.get("watermark", "CURRENT")),
        case_ids=list(rendered.get("case_ids", [])),
        discrepancies_truncated=bool(rendered.get("discrepancies_truncated", False)),
    )


def _case_message(case: CaseRecord) -> pb.Case:
    amount = "" if case.amount_minor is None or not case.currency else format_minor(case.amount_minor, case.currency)
    return pb.Case(
        id=case.id,
        account_id=case.account_id,
        kind=case.kind,
        status=case.status.value,
        severity=case.severity,
        message=case.message,
        amount=amount,
        currency=case.currency,
        evidence=_struct(case.evidence),
        opened_at=to_timestamp(case.opened_at),
        updated_at=to_timestamp(case.updated_at),
        age_seconds=int((datetime.now(UTC) - case.opened_at).total_seconds()),
        history=[
            pb.CaseEvent(action=e.action, actor=e.actor, reason=e.reason, at=to_timestamp(e.at)) for e in case.history
        ],
        adjustment_transfer_id=case.adjustment_transfer_id or "",
    )


def _run_message(run: StoredRun) -> pb.ReconciliationReport:
    return _report_message(run.id, run.created_at, run.report)


Context = grpc.aio.ServicerContext[Any, Any]


class ReconciliationServicer(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    def __init__(self, service: ReconciliationService) -> None:
        self._service = service

    async def ReconcileAccount(self, request: pb.ReconcileAccountRequest, context: Context) -> pb.ReconciliationReport:
        stored: StoredReport = await self._service.reconcile_account(
            request.account_id, request.start_date, request.end_date
        )
        return _report_message(stored.run_id, stored.created_at, stored.rendered)

    async def _import(self, command: ImportCommand, context: Context) -> pb.StatementImport:
        # A rejected file (StatementRejected) is an error like any other: 400 STATEMENT_INVALID in the
        # one error shape, its row errors as google.rpc.BadRequest violations.
        outcome = await self._service.import_statement(command)
        await set_http_status(context, 200 if outcome.replayed else 201)
        return _import_message(outcome)

    async def ImportStatement(self, request: pb.ImportStatementRequest, context: Context) -> pb.StatementImport:
        if request.content and request.content_base64:
            raise ValidationError(
                "send the file as content or as contentBase64, not both", field="content", code="INVALID_CONTENT"
            )
        content = request.content_base64 or request.content.encode()
        mapping = _dict(request.csv_mapping) if request.HasField("csv_mapping") else None
        return await self._import(
            ImportCommand(request.account_id, content, request.format, mapping, request.file_name, current_principal()),
            context,
        )

    async def ImportStatementStream(
        self, request_iterator: AsyncIterator[pb.ImportStatementChunk], context: Context
    ) -> pb.StatementImport:
        header: pb.ImportStatementChunk | None = None
        parts: list[bytes] = []
        size = 0
        async for chunk in request_iterator:
            if header is None:
                header = chunk
            size += len(chunk.data)
            if size > MAX_STREAMED_BYTES:
                raise ValidationError(
                    f"the file exceeds {MAX_STREAMED_BYTES // (1024 * 1024)} MiB", field="data", code="FILE_TOO_LARGE"
                )
            parts.append(chunk.data)
        if header is None:
            raise ValidationError("no chunk was sent", field="data", code="MISSING_FIELD")
        mapping = _dict(header.csv_mapping) if header.HasField("csv_mapping") else None
        content = b"".join(parts)
        # The chunks go before the import starts: the file is held once while it is parsed, not twice.
        parts.clear()
        return await self._import(
            ImportCommand(header.account_id, content, header.format, mapping, header.file_name, current_principal()),
            context,
        )

    async def SetMatchingRules(self, request: pb.SetMatchingRulesRequest, context: Context) -> pb.MatchingRules:
        version, rules, at, by, source = await self._service.set_matching_rules(
            request.account_id, _dict(request.rules), current_principal()
        )
        return self._rules_message(request.account_id, version, rules, at, by, source)

    async def GetMatchingRules(self, request: pb.GetMatchingRulesRequest, context: Context) -> pb.MatchingRules:
        version, rules, at, by, source = await self._service.matching_rules(request.account_id)
        return self._rules_message(request.account_id, version, rules, at, by, source)

    @staticmethod
    def _rules_message(
        account_id: str, version: int, rules: Mapping[str, Any], at: datetime | None, by: str, source: str
    ) -> pb.MatchingRules:
        message = pb.MatchingRules(
            account_id=account_id, version=version, rules=_struct(rules), created_by=by, source=source
        )
        if at is not None:
            message.created_at.CopyFrom(to_timestamp(at))
        return message

    async def ListDiscrepancies(
        self, request: pb.ListDiscrepanciesRequest, context: Context
    ) -> pb.ListDiscrepanciesResponse:
        cases, cursor = await self._service.cases(
            account_id=request.account_id,
            kind=request.kind,
            status=request.status,
            min_age_seconds=request.min_age_seconds,
            limit=request.limit,
            cursor=request.cursor,
        )
        return pb.ListDiscrepanciesResponse(discrepancies=[_case_message(c) for c in cases], next_cursor=cursor)

    async def GetDiscrepancy(self, request: pb.GetDiscrepancyRequest, context: Context) -> pb.Case:
        return _case_message(await self._service.case(request.id))

    async def ResolveDiscrepancy(self, request: pb.ResolveDiscrepancyRequest, context: Context) -> pb.Case:
        case = await self._service.resolve_case(request.id, request.action, request.reason, current_principal())
        return _case_message(case)

    async def WatchDiscrepancies(
        self, request: pb.WatchDiscrepanciesRequest, context: Context
    ) -> AsyncIterator[pb.DiscrepancyUpdate]:
        # Headers now, not with the first change (which may be hours away): callers see the stream open.
        await context.send_initial_metadata(())
        async for change in self._service.watch(request.account_id, request.since_seconds):
            if isinstance(change, CaseRecord):
                yield pb.DiscrepancyUpdate(discrepancy=_case_message(change))
            else:
                yield pb.DiscrepancyUpdate(run=_run_message(change))

    async def ListReconciliations(
        self, request: pb.ListReconciliationsRequest, context: Context
    ) -> pb.ListReconciliationsResponse:
        runs, cursor = await self._service.runs(request.account_id, request.limit, request.cursor)
        return pb.ListReconciliationsResponse(reconciliations=[_run_message(r) for r in runs], next_cursor=cursor)

    async def ExportReconciliation(
        self, request: pb.ExportReconciliationRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        content_type, pieces = await self._service.export_run(request.run_id, request.format)
        extension = "json" if content_type.startswith("application/json") else "csv"
        name = f"reconciliation-{request.run_id.strip()}.{extension}"
        await context.send_initial_metadata((("content-disposition", f'attachment; filename="{name}"'),))
        # Pieces of up to EXPORT_PIECE_BYTES: far below gRPC's message limits, whatever the run's size.
        pending = bytearray()
        async for piece in pieces:
            pending += piece
            while len(pending) >= EXPORT_PIECE_BYTES:
                yield httpbody_pb2.HttpBody(content_type=content_type, data=bytes(pending[:EXPORT_PIECE_BYTES]))
                del pending[:EXPORT_PIECE_BYTES]
        yield httpbody_pb2.HttpBody(content_type=content_type, data=bytes(pending))

    async def GetReconciliation(
        self, request: pb.GetReconciliationRequest, context: Context
    ) -> pb.ReconciliationReport:
        return _run_message(await self._service.run(request.run_id))
