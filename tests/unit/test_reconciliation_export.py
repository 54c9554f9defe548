"""The export encoders: RFC 4180 CSV (quoting, commas and line breaks in references, CRLF) and JSON, with
amounts as exact decimal strings in major units. No IO."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from services.kernel.errors import ValidationError
from services.reconciliation.service.export import CSV_COLUMNS, ExportFormat, encode_run, parse_format
from services.reconciliation.service.ports import ExportCase, ExportMatch, StoredRun

T = TypeVar("T")

AWKWARD = 'INV 7, "rush"\r\nsecond line'
RUN = StoredRun(
    "8d5c7f0e-0000-4000-8000-000000000001",
    datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
    {
        "account_id": "bank-1",
        "currency": "EUR",
        "start": "2026-11-01T00:00:00+00:00",
        "end": "2026-11-30T23:59:59.999999+00:00",
        "matched": 2,
        "expected_balance_minor": 123456789012345678,
        "actual_balance_minor": -5,
        "discrepancies": [{"type": "MISSING_IN_LEDGER"}],
        "case_ids": ["c-1"],
    },
)
MATCH = ExportMatch(
    "ONE_TO_ONE", "reference", 0.95, {"reference": 1.0}, -3, (11,), ("t,1",), 1_000_000_000_000_001, "EUR"
)
PAYOUT = ExportMatch("ONE_TO_MANY", "group", 0.8, {"amount": 0.5}, -25, (12,), ("t-2", "t-3"), 5, "JPY")
CASE = ExportCase(
    "c-1",
    "MISSING_IN_LEDGER",
    "OPEN",
    "HIGH",
    "the bank booked it; the ledger has no matching entry",
    -4200,
    "EUR",
    ("13",),
    (),
    {"rule": "unmatched", "statementLines": [{"reference": AWKWARD, "endToEndId": "E2E-1", "amount": "-42.00"}]},
)


async def batches(*items: Sequence[T]) -> AsyncIterator[Sequence[T]]:
    for batch in items:
        yield batch


async def export(fmt: ExportFormat) -> bytes:
    pieces = [p async for p in encode_run(RUN, fmt, batches([MATCH], [PAYOUT], []), batches([CASE]))]
    assert len(pieces) > 2  # a piece per batch, not one document
    return b"".join(pieces)


async def test_csv_is_rfc_4180_with_a_header_and_a_row_per_match_and_case() -> None:
    data = (await export(ExportFormat.CSV)).decode()
    assert data.endswith("\r\n") and data.startswith(",".join(CSV_COLUMNS) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(data, newline="")))
    assert [r["record"] for r in rows] == ["match", "match", "case"]
    # The reference with a comma, quotes and a line break survives whole, in one field.
    assert rows[2]["references"] == f"{AWKWARD} E2E-1"
    assert json.loads(rows[2]["evidence"])["statementLines"][0]["reference"] == AWKWARD
    assert '"INV 7, ""rush""' in data  # quoted, quotes doubled
    assert rows[1]["transfer_ids"] == "t-2 t-3" and rows[0]["transfer_ids"] == "t,1"
    assert {r["run_id"] for r in rows} == {RUN.id} and {r["account_id"] for r in rows} == {"bank-1"}


async def test_csv_amounts_are_exact_decimal_strings_with_their_currency() -> None:
    rows = list(csv.DictReader(io.StringIO((await export(ExportFormat.CSV)).decode(), newline="")))
    # 10^15 + 1 minor units: a float would print 10000000000000.0 and lose the cent.
    assert (rows[0]["amount"], rows[0]["currency"], rows[0]["amount_difference"]) == (
        "10000000000000.01",
        "EUR",
        "-0.03",
    )
    assert (rows[1]["amount"], rows[1]["currency"], rows[1]["amount_difference"]) == ("5", "JPY", "-25")
    assert (rows[2]["amount"], rows[2]["currency"]) == ("-42.00", "EUR")
    assert rows[0]["confidence"] == "0.95"


async def test_json_is_one_document_with_the_run_matches_and_cases() -> None:
    document = json.loads(await export(ExportFormat.JSON))
    assert document["run"]["report_id"] == RUN.id and "discrepancies" not in document["run"]
    assert document["run"]["expected_balance"] == "1234567890123456.78" and document["run"]["actual_balance"] == "-0.05"
    assert [m["amount"] for m in document["matches"]] == ["10000000000000.01", "5"]
    (case,) = document["cases"]
    assert case["amount"] == "-42.00" and case["evidence"]["statementLines"][0]["reference"] == AWKWARD
    assert case["references"] == [AWKWARD, "E2E-1"]


async def test_an_empty_run_is_still_a_valid_file() -> None:
    empty = [p async for p in encode_run(RUN, ExportFormat.JSON, batches(), batches())]
    assert json.loads(b"".join(empty)) | {"run": None} == {"run": None, "matches": [], "cases": []}
    header_only = b"".join([p async for p in encode_run(RUN, ExportFormat.CSV, batches(), batches())]).decode()
    assert header_only == ",".join(CSV_COLUMNS) + "\r\n"


@pytest.mark.parametrize(("given", "expected"), [("", "csv"), ("CSV", "csv"), (" json ", "json")])
def test_the_format_defaults_to_csv(given: str, expected: str) -> None:
    assert parse_format(given).value == expected


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        parse_format("xlsx")
    assert refused.value.code == "INVALID_FORMAT"


class FakeService:
    """A run whose file comes in uneven pieces adding up to several MiB."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def export_run(self, run_id: str, fmt: str) -> tuple[str, AsyncIterator[bytes]]:
        async def pieces() -> AsyncIterator[bytes]:
            for piece in self.pieces:
                yield piece

        return ExportFormat(fmt).content_type, pieces()


class Context:
    def __init__(self) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ()

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata


async def test_a_large_export_goes_out_in_bounded_messages() -> None:
    from payrecon.reconciliation.v1 import reconciliation_pb2 as pb

    from services.reconciliation.api.servicer import EXPORT_PIECE_BYTES, ReconciliationServicer

    pieces = [bytes([n % 251]) * (n * 37_003 % 900_000 + 1) for n in range(12)]
    servicer = ReconciliationServicer(FakeService(pieces))  # type: ignore[arg-type]
    context = Context()
    request = pb.ExportReconciliationRequest(run_id="r-1", format="csv")
    sent = [m async for m in servicer.ExportReconciliation(request, context)]  # type: ignore[arg-type]
    assert b"".join(m.data for m in sent) == b"".join(pieces)
    assert len(sent) >= sum(map(len, pieces)) // EXPORT_PIECE_BYTES and all(
        len(m.data) <= EXPORT_PIECE_BYTES for m in sent
    )
    assert {m.content_type for m in sent} == {"text/csv; charset=utf-8"}
    assert dict(context.metadata)["content-disposition"] == 'attachment; filename="reconciliation-r-1.csv"'
