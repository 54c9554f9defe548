"""Optional corpus: the real BAI2 and CSV samples in ../shared/statements, checked against its expected.json.

Skipped where the folder is absent; PAYRECON_STATEMENTS_DIR points elsewhere. The files stay
outside the repository (several are GPL-3.0); only the CSV column mappings, as a user would save
them for these two banks, are test data here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from services.kernel.money import format_minor
from services.reconciliation.adapters.formats.csv_mapping import CsvMapping
from services.reconciliation.adapters.formats.detect import detect_format, parse_statement
from services.reconciliation.domain.statements import (
    BalanceCheck,
    ParsedFile,
    Statement,
    StatementFileError,
    StatementFormat,
)

STATEMENTS_DIR = Path(
    os.environ.get("PAYRECON_STATEMENTS_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "statements"
)
FORMATS = ("bai2/", "csv/")

# expected.json writes balance checks as ok | mismatch (with the difference) | n/a (with a reason).
CHECK_WORDS = {BalanceCheck.OK: "ok", BalanceCheck.MISMATCH: "mismatch", BalanceCheck.NOT_APPLICABLE: "n/a"}

CSV_MAPPINGS = {
    # ASN Bank: no header; col 0 booking date, 1 own IBAN, 3 counterparty, 8 balance before the
    # entry, 9 currency, 10 signed amount, 12 value date, 15 sequence number, 17 description in '…'.
    "csv/nl_asn_headerless_balance_chain.csv": {
        "has_header": False,
        "delimiter": ",",
        "quotechar": "'",
        "date": 0,
        "date_format": "%d-%m-%Y",
        "value_date": 12,
        "amount": 10,
        "currency_column": 9,
        "account_column": 1,
        "counterparty": 3,
        "reference": 15,
        "description": [17],
        "balance": 8,
        "balance_before_entry": True,
    },
    # Knab: a "KNAB EXPORT" title row, then a header; ';' with a trailing ';'; comma decimals; C/D column.
    "csv/nl_knab_semicolon_title_row.csv": {
        "skip_rows": 1,
        "delimiter": ";",
        "date": "Transactiedatum",
        "value_date": "Valutadatum",
        "date_format": "%d-%m-%Y",
        "amount": "Bedrag",
        "direction": "CreditDebet",
        "credit_markers": ["C"],
        "debit_markers": ["D"],
        "decimal_separator": ",",
        "account_column": "Rekeningnummer",
        "currency_column": "Valutacode",
        "reference": "Referentie",
        "description": ["Omschrijving"],
        "counterparty": "Tegenrekeninghouder",
        "newest_first": True,
    },
}


def load_expected() -> dict[str, Any]:
    path = STATEMENTS_DIR / "expected.json"
    if not path.is_file():
        return {}
    expected: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return {name: entry for name, entry in expected.items() if name.startswith(FORMATS)}


EXPECTED = load_expected()
pytestmark = pytest.mark.skipif(not EXPECTED, reason=f"no statement corpus at {STATEMENTS_DIR}")


def parse(name: str) -> ParsedFile:
    content = (STATEMENTS_DIR / name).read_bytes()
    mapping = CsvMapping.from_dict(CSV_MAPPINGS[name]) if name in CSV_MAPPINGS else None
    return parse_statement(content, StatementFormat(EXPECTED[name]["format"]), csv_mapping=mapping)


def decimal(minor: int | None, currency: str) -> str | None:
    return None if minor is None else format_minor(minor, currency)


def test_every_sample_has_expectations() -> None:
    on_disk = {f"{path.parent.name}/{path.name}" for fmt in FORMATS for path in (STATEMENTS_DIR / fmt).glob("*")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED) or ["-"])
def test_sample_is_accepted_or_rejected_as_expected(name: str) -> None:
    expected = EXPECTED[name]
    if expected["expect"] == "reject":
        with pytest.raises(StatementFileError) as raised:
            parse(name)
        assert raised.value.errors
        return
    parsed = parse(name)
    assert detect_format((STATEMENTS_DIR / name).read_bytes()) is StatementFormat(expected["format"])
    assert len(parsed.statements) == expected["statement_count"]
    assert parsed.line_count == expected["entry_count"]
    assert {s.currency for s in parsed.statements} == {expected["currency"]}
    assert {CHECK_WORDS[s.balance_check] for s in parsed.statements} == set(expected["balance_check"])
    if expected["opening_balance"] is not None:
        assert decimal(parsed.statements[0].opening_balance_minor, expected["currency"]) == expected["opening_balance"]
    if expected["closing_balance"] is not None:
        assert decimal(parsed.statements[-1].closing_balance_minor, expected["currency"]) == expected["closing_balance"]


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e["expect"] == "accept") or ["-"])
def test_sample_statements_match(name: str) -> None:
    parsed = parse(name)

    for statement, expected in zip(parsed.statements, EXPECTED[name]["statements"], strict=True):
        assert summary(statement) == {
            "account": expected["account"],
            "currency": expected["currency"],
            "opening_balance": expected["opening_balance"],
            "closing_balance": expected["closing_balance"],
            "entry_count": expected["entry_count"],
            "balance_check": expected["balance_check"].split(" ")[0],
        }


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if e["expect"] == "accept") or ["-"])
def test_sample_first_entries_match(name: str) -> None:
    lines = [line for statement in parse(name).statements for line in statement.lines]

    first = [
        {
            "value_date": line.value_date.isoformat() if line.value_date else None,
            "amount": format_minor(line.amount_minor, line.currency),
            # expected.json: BAI2 bank reference else customer reference; CSV the reference column.
            "reference": line.reference or line.end_to_end_id,
        }
        for line in lines[:3]
    ]
    assert first == EXPECTED[name]["first_entries"]


def summary(statement: Statement) -> dict[str, object]:
    return {
        "account": statement.account,
        "currency": statement.currency,
        "opening_balance": decimal(statement.opening_balance_minor, statement.currency),
        "closing_balance": decimal(statement.closing_balance_minor, statement.currency),
        "entry_count": len(statement.lines),
        "balance_check": CHECK_WORDS[statement.balance_check],
    }
