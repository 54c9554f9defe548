"""A stored run's report as a file: one row per match and one per discrepancy case, as CSV (RFC 4180: a
header row, CRLF line ends, fields quoted when they hold a comma, a quote or a line break) or as one JSON
document. Amounts are exact decimal strings in major units beside their currency, never floats.

The encoders take rows in batches and return text in pieces, so a run over a million lines is streamed
batch by batch and never held as one document.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.kernel.errors import ValidationError
from services.kernel.money import format_minor
from services.reconciliation.service.ports import ExportCase, ExportMatch, StoredRun


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"

    @property
    def content_type(self) -> str:
        return "text/csv; charset=utf-8" if self is ExportFormat.CSV else "application/json"


def parse_format(value: str) -> ExportFormat:
    """csv when empty. Raises ValidationError (INVALID_FORMAT)."""
    try:
        return ExportFormat(value.strip().lower() or "csv")
    except ValueError:
        raise ValidationError("format must be csv or json", field="format", code="INVALID_FORMAT") from None


CSV_COLUMNS = (
    "record",
    "run_id",
    "account_id",
    "kind",
    "status",
    "severity",
    "rule",
    "confidence",
    "amount",
    "currency",
    "amount_difference",
    "statement_line_ids",
    "transfer_ids",
    "case_id",
    "message",
    "references",
    "evidence",
)


def _money(minor: int | None, currency: str) -> str:
    """Exact decimal string in major units; empty when there is no amount or no currency to scale it by."""
    if minor is None or not currency:
        return ""
    return format_minor(minor, currency)


def _references(evidence: Mapping[str, Any]) -> list[str]:
    """The payment references the evidence shows on both sides, each once, in order."""
    seen: dict[str, None] = {}
    for side in ("statementLines", "ledgerEntries"):
        for record in evidence.get(side) or []:
            for key in ("reference", "endToEndId"):
                value = record.get(key) if isinstance(record, Mapping) else None
                if value:
                    seen.setdefault(str(value), None)
    return list(seen)


@dataclass(frozen=True)
class RunHeader:
    run_id: str
    account_id: str
    currency: str


def header_of(run: StoredRun) -> RunHeader:
    return RunHeader(run.id, str(run.report.get("account_id", "")), str(run.report.get("currency") or ""))


def match_record(run: RunHeader, m: ExportMatch) -> dict[str, Any]:
    currency = m.currency or run.currency
    return {
        "record": "match",
        "kind": m.kind,
        "rule": m.rule,
        "confidence": m.confidence,
        "breakdown": dict(m.breakdown),
        "amount": _money(m.amount_minor, currency),
        "currency": currency,
        "amountDifference": _money(m.amount_difference_minor, currency),
        "statementLineIds": [str(i) for i in m.statement_line_ids],
        "transferIds": list(m.transfer_ids),
    }


def case_record(run: RunHeader, c: ExportCase) -> dict[str, Any]:
    currency = c.currency or run.currency
    return {
        "record": "case",
        "caseId": c.case_id,
        "kind": c.kind,
        "status": c.status,
        "severity": c.severity,
        "message": c.message,
        "amount": _money(c.amount_minor, currency),
        "currency": currency,
        "statementLineIds": list(c.statement_line_ids),
        "transferIds": list(c.transfer_ids),
        "references": _references(c.evidence),
        "evidence": dict(c.evidence),
    }


def csv_header() -> str:
    return _csv_rows([list(CSV_COLUMNS)])


def _csv_rows(rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return out.getvalue()


def _csv_row(fields: Mapping[str, str]) -> list[str]:
    """A row in CSV_COLUMNS' order; a column the record does not have is empty."""
    if unknown := fields.keys() - set(CSV_COLUMNS):
        raise ValueError(f"not CSV columns: {sorted(unknown)}")
    return [fields.get(column, "") for column in CSV_COLUMNS]


def _ids(values: Iterable[str]) -> str:
    return " ".join(values)


def csv_matches(run: RunHeader, batch: Iterable[ExportMatch]) -> str:
    rows = []
    for m in batch:
        r = match_record(run, m)
        rows.append(
            _csv_row(
                {
                    "record": "match",
                    "run_id": run.run_id,
                    "account_id": run.account_id,
                    "kind": r["kind"],
                    "rule": r["rule"],
                    "confidence": repr(float(r["confidence"])),
                    "amount": r["amount"],
                    "currency": r["currency"],
                    "amount_difference": r["amountDifference"],
                    "statement_line_ids": _ids(r["statementLineIds"]),
                    "transfer_ids": _ids(r["transferIds"]),
                    "evidence": json.dumps(r["breakdown"], separators=(",", ":")),
                }
            )
        )
    return _csv_rows(rows)


def csv_cases(run: RunHeader, batch: Iterable[ExportCase]) -> str:
    rows = []
    for c in batch:
        r = case_record(run, c)
        rows.append(
            _csv_row(
                {
                    "record": "case",
                    "run_id": run.run_id,
                    "account_id": run.account_id,
                    "kind": r["kind"],
                    "status": r["status"],
                    "severity": r["severity"],
                    "amount": r["amount"],
                    "currency": r["currency"],
                    "statement_line_ids": _ids(r["statementLineIds"]),
                    "transfer_ids": _ids(r["transferIds"]),
                    "case_id": r["caseId"],
                    "message": r["message"],
                    "references": _ids(r["references"]),
                    "evidence": json.dumps(r["evidence"], separators=(",", ":"), ensure_ascii=False),
                }
            )
        )
    return _csv_rows(rows)


def json_opening(run: StoredRun) -> str:
    """The document up to its "matches" array: the run's summary first."""
    summary = {k: v for k, v in run.report.items() if k not in ("discrepancies", "case_ids", "discrepancies_truncated")}
    summary["report_id"] = run.id
    summary["created_at"] = run.created_at.isoformat()
    currency = str(summary.get("currency") or "")
    for key in ("expected_balance_minor", "actual_balance_minor"):
        minor = summary.pop(key, None)
        summary[key.removesuffix("_minor")] = _money(minor, currency)
    return '{"run":' + json.dumps(summary, default=str) + ',"matches":['


def json_items(records: Iterable[Mapping[str, Any]], first: bool) -> str:
    """Array items, comma-separated, the first one of the array without a leading comma."""
    encoded = [json.dumps(r, default=str, ensure_ascii=False) for r in records]
    if not encoded:
        return ""
    return ("" if first else ",") + ",".join(encoded)


JSON_BETWEEN = '],"cases":['
JSON_CLOSING = "]}\n"


async def encode_run(
    run: StoredRun,
    fmt: ExportFormat,
    matches: AsyncIterator[Sequence[ExportMatch]],
    cases: AsyncIterator[Sequence[ExportCase]],
) -> AsyncIterator[bytes]:
    """The file, a piece per batch of rows: matches first, then cases."""
    header = header_of(run)
    if fmt is ExportFormat.CSV:
        yield csv_header().encode()
        async for match_batch in matches:
            yield csv_matches(header, match_batch).encode()
        async for case_batch in cases:
            yield csv_cases(header, case_batch).encode()
        return
    yield json_opening(run).encode()
    first = True
    async for match_batch in matches:
        text = json_items((match_record(header, m) for m in match_batch), first)
        first = first and not text
        yield text.encode()
    yield JSON_BETWEEN.encode()
    first = True
    async for case_batch in cases:
        text = json_items((case_record(header, c) for c in case_batch), first)
        first = first and not text
        yield text.encode()
    yield JSON_CLOSING.encode()
