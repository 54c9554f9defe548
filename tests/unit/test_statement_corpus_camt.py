"""The camt importer over the shared corpus of real statement files, checked against its expected.json.

Optional: runs when `../shared/statements` (beside the repository) or $PAYRECON_STATEMENTS_DIR exists.
The files stay where they are: several are GPL-3.0 and all belong to their authors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from services.kernel.money import format_minor
from services.reconciliation.adapters.formats.camt import looks_like_camt, parse_camt
from services.reconciliation.domain.statements import (
    BalanceCheck,
    EntryStatus,
    Statement,
    StatementFileError,
    StatementFormat,
    StatementLine,
)

REPOSITORY = Path(__file__).resolve().parents[2]


def corpus_folder() -> Path | None:
    configured = os.environ.get("PAYRECON_STATEMENTS_DIR")
    folder = Path(configured) if configured else REPOSITORY.parent / "shared" / "statements"
    return folder if (folder / "expected.json").is_file() else None


CORPUS = corpus_folder()
pytestmark = pytest.mark.skipif(CORPUS is None, reason="no statement corpus (../shared/statements)")

# expected.json spells balance checks in lower case, and n/a for "a balance is missing"
CHECK_AS_WRITTEN = {BalanceCheck.OK: "ok", BalanceCheck.MISMATCH: "mismatch", BalanceCheck.NOT_APPLICABLE: "n/a"}


def camt_expectations() -> dict[str, dict[str, Any]]:
    if CORPUS is None:
        return {}
    expected: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
    return {name: value for name, value in sorted(expected.items()) if name.startswith("camt")}


EXPECTED = camt_expectations()


def amount(minor_units: int | None, currency: str) -> str | None:
    return None if minor_units is None else format_minor(minor_units, currency)


def reference_as_expected_json_picks_it(line: StatementLine) -> str | None:
    """expected.json's `_about`: NtryRef > AcctSvcrRef > TxDtls AcctSvcrRef > EndToEndId > TxId."""
    candidates = [line.entry_reference, line.reference, line.end_to_end_id]
    candidates += [detail.reference for detail in line.details[:1]]
    return next((candidate for candidate in candidates if candidate), None)


def as_expected_json_writes_it(line: StatementLine) -> dict[str, str | None]:
    day = line.value_date or line.booking_date  # camt ValDt, else BookgDt
    return {
        "value_date": day.isoformat() if day else None,
        "amount": amount(line.amount_minor, line.currency),
        "reference": reference_as_expected_json_picks_it(line),
    }


def test_every_camt_file_in_the_corpus_has_expectations() -> None:
    assert CORPUS is not None
    files = {path.relative_to(CORPUS).as_posix() for path in CORPUS.glob("camt*/*") if path.is_file()}

    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_camt_file_reads_as_expected(name: str) -> None:
    assert CORPUS is not None
    expected = EXPECTED[name]
    content = (CORPUS / name).read_bytes()

    assert looks_like_camt(content) is StatementFormat(expected["format"])
    if expected["expect"] == "reject":
        with pytest.raises(StatementFileError) as refused:
            parse_camt(content)
        assert refused.value.errors
        return

    parsed = parse_camt(content)
    statements = parsed.statements

    assert parsed.format is StatementFormat(expected["format"])
    assert len(statements) == expected["statement_count"]
    assert parsed.line_count == expected["entry_count"]
    assert statements[0].currency == expected["currency"]
    assert {CHECK_AS_WRITTEN[statement.balance_check] for statement in statements} == set(expected["balance_check"])
    if expected["opening_balance"] is not None:  # top level: one statement, or a chain of one account's
        assert amount(statements[0].opening_balance_minor, statements[0].currency) == expected["opening_balance"]
    if expected["closing_balance"] is not None:
        assert amount(statements[-1].closing_balance_minor, statements[-1].currency) == expected["closing_balance"]
    for statement, expected_statement in zip(statements, expected["statements"], strict=True):
        assert_statement(statement, expected_statement)
    lines = [line for statement in statements for line in statement.lines]
    first_entries = [as_expected_json_writes_it(line) for line in lines[: len(expected["first_entries"])]]
    assert first_entries == expected["first_entries"]


def assert_statement(statement: Statement, expected: dict[str, Any]) -> None:
    currency = statement.currency
    booked = [line for line in statement.lines if line.status is EntryStatus.BOOKED]

    assert statement.statement_id == expected["id"]
    assert (statement.account, currency) == (expected["account"], expected["currency"])
    assert amount(statement.opening_balance_minor, currency) == expected["opening_balance"]
    assert amount(statement.closing_balance_minor, currency) == expected["closing_balance"]
    assert len(statement.lines) == expected["entry_count"]
    assert sum(len(line.details) for line in statement.lines) == expected["tx_details_count"]
    assert len(booked) == expected["booked_entry_count"]
    # expected.json adds the booked amounts as written, whatever their currency
    assert amount(sum(line.amount_minor for line in booked), currency) == expected["sum_booked_entries"]
    assert CHECK_AS_WRITTEN[statement.balance_check] == expected["balance_check"].split(" ")[0]
