"""MT940, BAI2, OFX and mapped-CSV statement import, on fixtures written from each format's specification.

Each known defect of the field's parsers (mt-940, bai2, ofxtools) has a test here that shows the
library's behaviour and ours side by side.
"""

from __future__ import annotations

import io
import json
import sys
import types
from collections.abc import Callable
from datetime import date
from pathlib import Path

import bai2.bai2 as bai2_library  # type: ignore[import-untyped]
import mt940
import pytest
from bai2.exceptions import IntegrityException as BAI2IntegrityError  # type: ignore[import-untyped]
from bai2.exceptions import NotSupportedYetException as BAI2UnsupportedError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ofxtools.Parser import OFXTree

from services.reconciliation.adapters.formats.bai2 import parse_bai2
from services.reconciliation.adapters.formats.csv_mapping import CsvMapping, parse_csv
from services.reconciliation.adapters.formats.detect import CAMT_MODULE, detect_format, parse_statement
from services.reconciliation.adapters.formats.mt940 import parse_mt940
from services.reconciliation.adapters.formats.ofx import parse_ofx
from services.reconciliation.domain.statements import (
    BalanceCheck,
    ParsedFile,
    RowError,
    StatementFileError,
    StatementFormat,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "statements"


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def rejection(parse: Callable[..., object], *args: object) -> list[RowError]:
    with pytest.raises(StatementFileError) as raised:
        parse(*args)
    return raised.value.errors


# --- MT940 -------------------------------------------------------------------------------------------

MT940_TWO_STATEMENTS = fixture("mt940/two_statements.sta")


def test_mt940_reads_each_statement_of_a_file() -> None:
    parsed = parse_mt940(MT940_TWO_STATEMENTS)

    assert parsed.format is StatementFormat.MT940
    first, second = parsed.statements
    assert (first.statement_id, first.account, first.currency, first.line) == (
        "STMT-2023-12-31",
        "NL91TEST0417164300",
        "EUR",
        2,
    )
    assert (first.opening_balance_minor, first.closing_balance_minor) == (100000, 112550)
    assert (first.opening_date, first.closing_date) == (date(2023, 12, 29), date(2023, 12, 31))
    assert first.balance_check is BalanceCheck.OK
    assert (second.statement_id, second.opening_balance_minor, second.closing_balance_minor) == (
        "STMT-2024-01-02",
        112550,
        100000,
    )
    assert second.balance_check is BalanceCheck.OK
    assert [line.line for line in first.lines] == [6, 8, 10, 12]


def test_mt940_entry_fields() -> None:
    credit = parse_mt940(MT940_TWO_STATEMENTS).statements[0].lines[0]

    assert credit.amount_minor == 25000
    assert credit.value_date == credit.booking_date == date(2023, 12, 29)
    assert credit.end_to_end_id == "INV-2023-118"  # the customer reference, before //
    assert credit.reference == "BNK0001"  # the bank reference, after //
    assert credit.bank_code == "NTRF"
    assert credit.description == "Payment invoice 118 ACME BV"
    assert not credit.reversal


def test_mt940_nonref_is_no_reference_and_multi_line_86_is_one_description() -> None:
    second = parse_mt940(MT940_TWO_STATEMENTS).statements[1]

    assert second.lines[0].end_to_end_id is None  # NONREF
    assert second.lines[1].description == "Rent January flat 3, second floor"


def test_mt940_reversal_marks_are_signed_as_the_money_moves() -> None:
    # mt-940 5.1.1 returns an RC (reversal of a credit) as a positive amount; the statement only
    # balances when RC is a debit and RD a credit.
    library = mt940.parse_statements(MT940_TWO_STATEMENTS)[0]
    assert library[1].data["status"] == "RC" and library[1].data["amount"].amount > 0

    lines = parse_mt940(MT940_TWO_STATEMENTS).statements[0].lines
    reversed_credit, reversed_debit = lines[1], lines[3]
    assert (reversed_credit.amount_minor, reversed_credit.reversal) == (-4000, True)
    assert (reversed_debit.amount_minor, reversed_debit.reversal) == (1550, True)
    assert lines[2].amount_minor == -10000 and not lines[2].reversal


def test_mt940_entry_date_rolls_over_the_year_both_ways() -> None:
    first, second = parse_mt940(MT940_TWO_STATEMENTS).statements

    december_fee = first.lines[2]  # :61:2312290102 — value 29 Dec 2023, booked 2 Jan
    assert (december_fee.value_date, december_fee.booking_date) == (date(2023, 12, 29), date(2024, 1, 2))
    interest = second.lines[0]  # :61:2401011231 — value 1 Jan 2024, booked 31 Dec
    assert (interest.value_date, interest.booking_date) == (date(2024, 1, 1), date(2023, 12, 31))


def test_mt940_30_february_is_a_row_error_not_a_quiet_29th() -> None:
    broken = MT940_TWO_STATEMENTS.replace(b":61:2312291229RC40,00", b":61:2302301229RC40,00")
    # The library moves the date to the 28th/29th without a word.
    library = mt940.parse_statements(broken)[0]
    assert library[1].data["date"] == date(2023, 2, 28)

    errors = rejection(parse_mt940, broken)
    assert errors == [RowError(8, ":61: value date 230230 does not exist")]


def test_mt940_every_broken_entry_is_reported_and_nothing_imported() -> None:
    broken = MT940_TWO_STATEMENTS.replace(b":61:2312291229RC40,00", b":61:2302301229RC40,00").replace(
        b":61:2401020102D135,50", b":61:2401021340D135,50"
    )

    errors = rejection(parse_mt940, broken)
    assert [e.line for e in errors] == [8, 23]
    assert "entry date 1340" in errors[1].message


def test_mt940_refuses_a_file_that_is_not_mt940() -> None:
    not_mt940 = b"date,amount,description\n2024-01-01,10.00,coffee\n"
    assert len(mt940.parse(not_mt940)) == 0  # the library finds nothing and says nothing

    assert rejection(parse_mt940, not_mt940) == [RowError(1, "not an MT940 file: no :20: statement reference found")]


def test_mt940_statement_without_account_or_opening_balance_is_refused() -> None:
    text = b":20:X\n:61:2401010101C1,00NTRFNONREF\n:62F:C240101EUR1,00\n"

    messages = [e.message for e in rejection(parse_mt940, text)]
    assert any(":25:" in m for m in messages) and any(":60F:" in m for m in messages)


def test_mt940_amount_with_more_decimals_than_the_currency_is_refused() -> None:
    text = b":20:X\n:25:ACC\n:60F:C240101JPY100,\n:61:2401010101C1,5NTRFNONREF\n:62F:C240101JPY101,\n"

    errors = rejection(parse_mt940, text)
    assert errors[0].line == 4 and "JPY" in errors[0].message


def test_mt940_cp1252_text_is_read() -> None:
    text = ":20:X\n:25:ACC\n:60F:C240101EUR0,\n:61:2401010101C1,00NTRFNONREF\n:86:Caf\xe9 \u20ac\n:62F:C240101EUR1,00\n"

    parsed = parse_mt940(text.encode("cp1252"))
    assert parsed.statements[0].lines[0].description == "Café €"


# --- BAI2 --------------------------------------------------------------------------------------------

BAI2_FUNDS_TYPES = fixture("bai2/funds_types.bai2")
BAI2_ONE_LINE = fixture("bai2/records_on_one_line.bai2")


def test_bai2_reads_funds_type_variants_and_continuations() -> None:
    parsed = parse_bai2(BAI2_FUNDS_TYPES)

    assert parsed.format is StatementFormat.BAI2 and parsed.warnings == ()
    # bai2 0.15.0 glues the 03's last field to its 88's first: type code "015141000".
    with pytest.raises(BAI2UnsupportedError, match="015141000"):
        bai2_library.parse_from_string(BAI2_FUNDS_TYPES.decode())
    (account,) = parsed.statements
    assert (account.account, account.currency, account.line) == ("1234567890", "USD", 3)
    # 010 on the 03 record, 015 on its 88: bai2 0.15.0 would glue "015" and "141000" into one field.
    assert (account.opening_balance_minor, account.closing_balance_minor) == (100000, 141000)
    assert account.balance_check is BalanceCheck.OK
    assert [(line.bank_code, line.amount_minor) for line in account.lines] == [
        ("165", 20000),  # funds type 0
        ("175", 15000),  # 1
        ("195", 25000),  # V: value date and time follow
        ("475", -5000),  # S: three availability amounts follow
        ("495", -10000),  # D: a count, then that many day/amount pairs
        ("451", -3000),  # Z
        ("409", -1000),  # blank funds type
    ]


def test_bai2_detail_fields() -> None:
    lines = parse_bai2(BAI2_FUNDS_TYPES).statements[0].lines
    as_of = date(2024, 3, 14)

    wire = lines[2]
    assert (wire.value_date, wire.booking_date) == (date(2024, 3, 13), as_of)
    assert (wire.reference, wire.end_to_end_id) == ("BR003", "CR003")
    assert wire.description == "Wire from ACME, invoice 7"  # text keeps its comma
    assert lines[0].value_date == as_of  # no value date: the as-of date
    assert (lines[4].reference, lines[4].description) == ("BR005", "Outgoing wire")
    assert lines[5].description == "ACH debit continued on a second record"  # 88 continues the text
    assert [line.line for line in lines] == [5, 6, 7, 8, 9, 10, 12]


def test_bai2_several_records_on_one_line_and_wrapped_text() -> None:
    parsed = parse_bai2(BAI2_ONE_LINE)

    assert parsed.warnings == ()
    usd, eur = parsed.statements
    assert (usd.account, usd.currency) == ("111", "USD")  # no currency anywhere: USD
    assert (usd.opening_balance_minor, usd.closing_balance_minor) == (5000, 4000)  # 040/045
    assert usd.balance_check is BalanceCheck.OK
    (transfer,) = usd.lines
    assert (transfer.line, transfer.amount_minor, transfer.description) == (2, -1000, "Transfer A/C 12/34")
    assert (eur.account, eur.currency, eur.balance_check) == ("222", "EUR", BalanceCheck.OK)
    (incoming,) = eur.lines
    assert incoming.description == "Incoming payment for order 12345 from CUSTOMER"
    assert (incoming.line, incoming.reference, incoming.amount_minor) == (4, "REF9", 2500)


def test_bai2_library_cannot_read_records_on_one_line() -> None:
    with pytest.raises(ValueError):
        bai2_library.parse_from_string(BAI2_ONE_LINE.decode())


def test_bai2_inconsistent_trailers_are_warnings() -> None:
    # The 03 on one record: the 49 still counts the 88 that is gone, as real bank files miscount.
    miscounted = BAI2_FUNDS_TYPES.replace(b"015/\r\n88,141000", b"015,141000")
    with pytest.raises(BAI2IntegrityError, match="expected 11, found 10"):
        bai2_library.parse_from_string(miscounted.decode())

    parsed = parse_bai2(miscounted)
    assert parsed.line_count == 7
    assert parsed.warnings[0] == RowError(12, "49 says 11 records, the account has 10")

    inconsistent = BAI2_FUNDS_TYPES.replace(b"49,399000,11/", b"49,1,12/").replace(b"99,399000,1,15/", b"99,5,2,99/")
    parsed = parse_bai2(inconsistent)
    assert parsed.line_count == 7
    assert [(w.line, w.message.split(" ")[0]) for w in parsed.warnings] == [
        (13, "49"),
        (13, "49"),
        (14, "98"),
        (15, "99"),
        (15, "99"),
        (15, "99"),
    ]


def test_bai2_invalid_record_code_is_rejected() -> None:
    broken = BAI2_FUNDS_TYPES.replace(b"16,175,15000,1", b"00,175,15000,1")

    assert rejection(parse_bai2, broken) == [RowError(6, "invalid record code '00'")]


def test_bai2_every_bad_detail_is_reported() -> None:
    broken = BAI2_FUNDS_TYPES.replace(b"16,165,20000,0", b"16,165,2O000,0").replace(b"16,409,1000,,", b"16,409,1000,Q,")

    errors = rejection(parse_bai2, broken)
    assert [e.line for e in errors] == [5, 12]
    assert "'2O000'" in errors[0].message and "'Q'" in errors[1].message


def test_bai2_cut_off_file_is_rejected() -> None:
    truncated = BAI2_FUNDS_TYPES.split(b"49,")[0]

    messages = [e.message for e in rejection(parse_bai2, truncated)]
    assert "file ends inside account 1234567890 (no 49)" in messages
    assert "file ends without its 99 trailer" in messages


def test_bai2_type_codes_outside_100_699_use_the_type_code_table() -> None:
    loan_payment = BAI2_ONE_LINE.replace(b"16,451,1000,Z", b"16,760,1000,Z")  # 760: loan disbursement, a debit
    assert parse_bai2(loan_payment).statements[0].lines[0].amount_minor == -1000

    unknown = BAI2_ONE_LINE.replace(b"16,451,1000,Z", b"16,950,1000,Z")
    assert rejection(parse_bai2, unknown) == [RowError(2, "16 type code '950' is neither a credit nor a debit")]


def test_bai2_non_monetary_detail_is_a_warning_not_an_entry() -> None:
    with_890 = BAI2_ONE_LINE.replace(b"16,451,1000,Z", b"16,890,,Z")

    parsed = parse_bai2(with_890)
    assert parsed.statements[0].lines == ()
    assert parsed.warnings[0] == RowError(2, "16 record of type 890 (non-monetary information) not imported")


# --- OFX ---------------------------------------------------------------------------------------------


def test_ofx1_sgml_bank_and_credit_card_statements() -> None:
    parsed = parse_ofx(fixture("ofx/ofx1_sgml.ofx"))

    assert parsed.format is StatementFormat.OFX
    bank, card = parsed.statements
    assert (bank.account, bank.currency, bank.closing_balance_minor) == ("00012345678", "EUR", 320010)
    assert bank.opening_balance_minor is None and bank.balance_check is BalanceCheck.NOT_APPLICABLE
    assert (bank.opening_date, bank.closing_date) == (date(2024, 1, 1), date(2024, 1, 31))
    credit, debit = bank.lines
    assert (credit.line, credit.amount_minor, credit.reference, credit.end_to_end_id) == (
        40,
        125000,
        "FIT-0001",
        "INV-2024-001",
    )
    assert (credit.booking_date, credit.value_date) == (date(2024, 1, 5), date(2024, 1, 6))
    assert (credit.counterparty, credit.description, credit.bank_code) == ("Café du Nord", "Facture 2024-001", "CREDIT")
    assert (debit.amount_minor, debit.counterparty, debit.booking_date) == (-4990, "AT&T", date(2024, 1, 10))
    assert (card.account, card.closing_balance_minor, [line.amount_minor for line in card.lines]) == (
        "4970000000001234",
        -1250,
        [-1250],
    )


def test_ofx2_xml() -> None:
    (statement,) = parse_ofx(fixture("ofx/ofx2_xml.ofx")).statements

    assert (statement.account, statement.currency, statement.closing_balance_minor) == ("987654321", "USD", 420000)
    payroll, check = statement.lines
    assert (payroll.amount_minor, payroll.counterparty, payroll.line) == (250000, "Payroll Müller GmbH", 25)
    assert (check.amount_minor, check.end_to_end_id, check.bank_code) == (-30000, "1042", "CHECK")


def test_qfx_with_a_single_line_header() -> None:
    content = fixture("ofx/qfx_single_line_header.qfx")
    # ofxtools reads the 8 lines after a one-line header as part of it, as ASCII, and fails on é.
    with pytest.raises(UnicodeDecodeError):
        OFXTree().parse(io.BytesIO(content))

    (statement,) = parse_ofx(content).statements
    assert statement.account == "5555555555"
    assert [(line.amount_minor, line.counterparty) for line in statement.lines] == [
        (50750, "CLEARING HOUSE"),
        (-2000, "CAFÉ LATTE"),
    ]
    assert statement.lines[0].booking_date == date(2024, 2, 3)  # as written, not moved by [-8:PST]


def test_ofx_several_transaction_lists_and_a_zero_entry_account() -> None:
    content = fixture("ofx/several_tranlists_and_empty_account.ofx")
    tree = OFXTree()
    tree.parse(io.BytesIO(content))
    with pytest.raises(Exception, match="out of order"):
        tree.convert()

    checking, savings = parse_ofx(content).statements
    assert [line.reference for line in checking.lines] == ["W1-1", "W2-1", "W2-2", "W3-1"]
    assert [line.amount_minor for line in checking.lines] == [10000, -3000, 4500, -500]
    assert (checking.opening_date, checking.closing_date) == (date(2024, 3, 1), date(2024, 3, 21))
    assert (savings.account, savings.lines, savings.closing_balance_minor) == ("87654321", (), None)


def test_ofx_bad_transaction_is_reported_with_its_line() -> None:
    broken = (
        fixture("ofx/ofx1_sgml.ofx")
        .replace(b"<TRNAMT>-49.90", b"<TRNAMT>-49.9O")
        .replace(b"<DTPOSTED>20240115", b"<DTPOSTED>2024011")
    )

    errors = rejection(parse_ofx, broken)
    assert [e.line for e in errors] == [50, 80]
    assert "TRNAMT" in errors[0].message and "DTPOSTED" in errors[1].message


def test_ofx_mismatched_end_tag_is_refused() -> None:
    broken = fixture("ofx/ofx1_sgml.ofx").replace(b"</STMTRS>", b"</STMTTRNRS>", 1)

    errors = rejection(parse_ofx, broken)
    assert errors == [RowError(62, "malformed OFX: end tag </STMTTRNRS> where </STMTRS> was expected")]


def test_ofx_without_statements_names_the_server_status() -> None:
    failed = (
        b"OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nSECURITY:NONE\nENCODING:USASCII\nCHARSET:1252\n"
        b"COMPRESSION:NONE\nOLDFILEUID:NONE\nNEWFILEUID:NONE\n\n<OFX><BANKMSGSRSV1><STMTTRNRS><TRNUID>1"
        b"<STATUS><CODE>2000<SEVERITY>ERROR<MESSAGE>Unknown account</STATUS></STMTTRNRS></BANKMSGSRSV1></OFX>"
    )

    (error,) = rejection(parse_ofx, failed)
    assert "2000 ERROR Unknown account" in error.message


def test_ofx_utf8_text_under_a_cp1252_header_is_read_as_utf8() -> None:
    content = fixture("ofx/ofx1_sgml.ofx").replace("Caf\xe9".encode("cp1252"), "Caf\xe9".encode())

    parsed = parse_ofx(content)
    assert parsed.statements[0].lines[0].counterparty == "Café du Nord"
    assert parsed.warnings == (RowError(1, "the header declares cp1252, but the file is utf-8"),)


def test_ofx_decimal_comma_amount() -> None:
    content = fixture("ofx/ofx2_xml.ofx").replace(b"<TRNAMT>-300.00", b"<TRNAMT>-300,50")

    assert parse_ofx(content).statements[0].lines[1].amount_minor == -30050


# --- CSV ---------------------------------------------------------------------------------------------

SIGNED = CsvMapping(
    date="Date",
    amount="Amount",
    account="NL91TEST0417164300",
    currency="EUR",
    reference="Ref",
    description=("Description",),
)


def test_csv_with_header_and_signed_amounts() -> None:
    content = b"Date,Amount,Ref,Description\n2024-03-01,100.50,R1,Invoice 1\n2024-03-02,-20,R2,Fee\n"

    parsed = parse_csv(content, SIGNED)
    assert parsed.format is StatementFormat.CSV
    (statement,) = parsed.statements
    assert (statement.account, statement.currency, statement.line) == ("NL91TEST0417164300", "EUR", 2)
    assert [(line.line, line.amount_minor, line.reference, line.description) for line in statement.lines] == [
        (2, 10050, "R1", "Invoice 1"),
        (3, -2000, "R2", "Fee"),
    ]
    assert statement.lines[0].booking_date == statement.lines[0].value_date == date(2024, 3, 1)
    assert statement.balance_check is BalanceCheck.NOT_APPLICABLE


def test_csv_title_row_semicolons_comma_decimals_and_cd_column() -> None:
    content = (
        b"EXPORT OF ACCOUNT;;;;;;\n"
        b"Account;Date;Currency;CD;Amount;Reference;\n"
        b'"NL01";"21-06-2019";"EUR";"D";"1.827,75";"A1";\n'
        b'"NL01";"21-06-2019";"EUR";"C";"2500";"A2";\n'
        b'"NL01";"22-06-2019";"EUR";"c";"0,5";"A3";\n'
    )
    mapping = CsvMapping(
        skip_rows=1,
        date="Date",
        date_format="%d-%m-%Y",
        amount="Amount",
        direction="CD",
        decimal_separator=",",
        thousands_separator=".",
        account_column="Account",
        currency_column="Currency",
        reference="Reference",
    )

    (statement,) = parse_csv(content, mapping).statements
    assert [(line.line, line.amount_minor) for line in statement.lines] == [(3, -182775), (4, 250000), (5, 50)]


def test_csv_negative_amount_marked_as_credit_is_refused() -> None:
    content = b"Date;CD;Amount\n2024-03-01;C;-5,00\n2024-03-02;D;-5,00\n"
    mapping = CsvMapping(
        date="Date", amount="Amount", direction="CD", decimal_separator=",", account="A", currency="EUR"
    )

    assert rejection(parse_csv, content, mapping) == [
        RowError(2, "amount -5.00 is negative but marked as a credit (C)")
    ]
    assert parse_csv(content.replace(b"C;-5", b"C;5"), mapping).statements[0].entries_total_minor == 0


def test_csv_split_debit_and_credit_columns() -> None:
    content = (
        b"Date;Debit;Credit;Text\n01/03/2024;12,00;;Coffee\n02/03/2024;;300,00;Refund\n03/03/2024;-4,50;;Bank fee\n"
    )
    mapping = CsvMapping(
        date="Date",
        date_format="%d/%m/%Y",
        debit="Debit",
        credit="Credit",
        decimal_separator=",",
        account="ACC",
        currency="EUR",
        description=("Text",),
    )

    (statement,) = parse_csv(content, mapping).statements
    assert [line.amount_minor for line in statement.lines] == [-1200, 30000, -450]

    both = content.replace(b"01/03/2024;12,00;;", b"01/03/2024;12,00;1,00;")
    assert rejection(parse_csv, both, mapping) == [RowError(2, "both a debit and a credit amount")]


def test_csv_running_balance_gives_opening_and_closing() -> None:
    content = b"date,amount,balance\n2024-03-01,100.00,1100.00\n2024-03-02,-30.00,1070.00\n2024-03-03,5.25,1075.25\n"
    mapping = CsvMapping(date="date", amount="amount", balance="balance", account="A", currency="EUR")

    (statement,) = parse_csv(content, mapping).statements
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (100000, 107525)
    assert (statement.opening_date, statement.closing_date) == (date(2024, 3, 1), date(2024, 3, 3))
    assert statement.balance_check is BalanceCheck.OK


def test_csv_balance_chain_break_is_a_row_error_at_its_line() -> None:
    content = b"date,amount,balance\n2024-03-01,100.00,1100.00\n2024-03-02,-30.00,1080.00\n2024-03-03,5.00,1085.00\n"
    mapping = CsvMapping(date="date", amount="amount", balance="balance", account="A", currency="EUR")

    assert rejection(parse_csv, content, mapping) == [
        RowError(3, "balance 1080.00 breaks the chain: 1070.00 follows from the rows before")
    ]


def test_csv_balance_before_entry_newest_first() -> None:
    # Newest row first; the balance column holds the balance before each row's amount.
    content = b"2024-03-03,5.00,1070.00\n2024-03-02,-30.00,1100.00\n2024-03-01,100.00,1000.00\n"
    mapping = CsvMapping(
        has_header=False,
        date=0,
        amount=1,
        balance=2,
        balance_before_entry=True,
        newest_first=True,
        account="A",
        currency="EUR",
    )

    (statement,) = parse_csv(content, mapping).statements
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (100000, 107500)
    assert [line.line for line in statement.lines] == [1, 2, 3]  # file order is kept


def test_csv_jpy_has_no_decimals() -> None:
    content = b"date,amount\n2024-03-01,1500\n2024-03-02,-250\n"
    mapping = CsvMapping(date="date", amount="amount", account="A", currency="JPY")

    assert [line.amount_minor for line in parse_csv(content, mapping).statements[0].lines] == [1500, -250]
    errors = rejection(parse_csv, content.replace(b"-250", b"-250.5"), mapping)
    assert [e.line for e in errors] == [3] and "JPY" in errors[0].message


def test_csv_bad_rows_are_reported_with_their_lines() -> None:
    content = b"Date,Amount,Ref,Description\n2024-03-01,12.3x,R1,a\n2024-03-02,1.00,R2,b\n2024-13-03,2.00,R3,c\n"

    errors = rejection(parse_csv, content, SIGNED)
    assert [e.line for e in errors] == [2, 4]
    assert "'12.3x'" in errors[0].message and "'2024-13-03'" in errors[1].message


def test_csv_quoted_field_over_two_lines_keeps_line_numbers() -> None:
    content = b'Date,Amount,Ref,Description\n2024-03-01,1.00,R1,"two\nlines"\n2024-03-02,x,R2,b\n'

    assert [e.line for e in rejection(parse_csv, content, SIGNED)] == [4]


def test_csv_account_column_splits_statements() -> None:
    content = b"acc,ccy,date,amount\nA,EUR,2024-03-01,1\nB,USD,2024-03-01,2\nA,EUR,2024-03-02,3\n"
    mapping = CsvMapping(date="date", amount="amount", account_column="acc", currency_column="ccy")

    statements = parse_csv(content, mapping).statements
    assert [(s.account, s.currency, [line.amount_minor for line in s.lines]) for s in statements] == [
        ("A", "EUR", [100, 300]),
        ("B", "USD", [200]),
    ]


@pytest.mark.parametrize(
    ("description", "file_encoding", "mapping_encoding"),
    [
        ("Zürich café", "utf-8-sig", None),  # UTF-8 with a byte-order mark
        ("Zürich café €", "cp1252", None),  # not UTF-8: cp1252 is tried next
        ("Łódź účet", "cp852", "cp852"),  # cannot be told from cp1252: the mapping names it
        ("Šiaulių bankas", "cp1257", "cp1257"),
    ],
)
def test_csv_encodings(description: str, file_encoding: str, mapping_encoding: str | None) -> None:
    content = f"Description;Amount;Date\n{description};1;2024-03-01\n".encode(file_encoding)
    mapping = CsvMapping.from_dict({**SIGNED.to_dict(), "reference": None, "encoding": mapping_encoding})

    assert parse_csv(content, mapping).statements[0].lines[0].description == description


def test_csv_mapping_is_saved_and_loaded_as_json() -> None:
    mapping = CsvMapping(
        has_header=False,
        date=0,
        amount=3,
        direction=4,
        credit_markers=("Bij",),
        debit_markers=("Af",),
        description=(5, 6),
        account="NL91",
        currency="EUR",
        encoding="cp1252",
    )

    saved = json.dumps(mapping.to_dict())
    assert CsvMapping.from_dict(json.loads(saved)) == mapping
    with pytest.raises(ValueError, match="unknown keys"):
        CsvMapping.from_dict({**mapping.to_dict(), "colour": "blue"})


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"amount": None}, "give an amount column"),
        ({"debit": "D"}, "not both"),
        ({"account_column": "acc"}, "exactly one of account"),
        ({"currency": "XXQ"}, "unknown currency"),
        ({"decimal_separator": ";"}, "decimal_separator"),
        ({"has_header": False}, "need a header row"),
        ({"encoding": "klingon"}, "unknown encoding"),
    ],
)
def test_csv_mapping_refuses_contradictions(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CsvMapping.from_dict({**SIGNED.to_dict(), **changes})


def test_csv_missing_header_column_is_reported_at_the_header() -> None:
    errors = rejection(parse_csv, b"Datum,Amount,Ref,Description\n2024-03-01,1,R,d\n", SIGNED)

    assert errors[0].line == 1 and "['Date']" in errors[0].message


def test_csv_delimiter_is_sniffed() -> None:
    content = b"Date\tAmount\tRef\tDescription\n2024-03-01\t1,00\tR\tsemi;colon, comma\n"
    mapping = CsvMapping.from_dict({**SIGNED.to_dict(), "decimal_separator": ","})

    assert parse_csv(content, mapping).statements[0].lines[0].description == "semi;colon, comma"


# --- detection and dispatch --------------------------------------------------------------------------

CSV_SAMPLE = b"Date,Amount,Ref,Description\n2024-03-01,1.00,R1,a\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (MT940_TWO_STATEMENTS, StatementFormat.MT940),
        (b":20:REF\r\n:25:ACC\r\n:60F:C240101EUR1,00\r\n", StatementFormat.MT940),
        (b"ABNANL2A\n940\nABNANL2A\n:20:ABN AMRO BANK NV\n:25:417164300\n:60F:C240101EUR1,00\n", StatementFormat.MT940),
        (BAI2_FUNDS_TYPES, StatementFormat.BAI2),
        (BAI2_ONE_LINE, StatementFormat.BAI2),
        (fixture("ofx/ofx1_sgml.ofx"), StatementFormat.OFX),
        (fixture("ofx/ofx2_xml.ofx"), StatementFormat.OFX),
        (fixture("ofx/qfx_single_line_header.qfx"), StatementFormat.OFX),
        (
            b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>',
            StatementFormat.CAMT053,
        ),
        (b"<Document><BkToCstmrAcctRpt>", StatementFormat.CAMT052),
        (
            b"\xef\xbb\xbf<?xml version='1.0'?>\n<!-- note -->\n<n:Document xmlns:n='x'>\n<n:BkToCstmrDbtCdtNtfctn>",
            StatementFormat.CAMT054,
        ),
        (CSV_SAMPLE, StatementFormat.CSV),
        (b"01,02,2024,12.50,coffee\n", StatementFormat.CSV),  # "01," alone is no BAI2 header
        (b"\xef\xbb\xbfDate;Amount\n", StatementFormat.CSV),
    ],
)
def test_detect_format(content: bytes, expected: StatementFormat) -> None:
    assert detect_format(content) is expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \r\n\n", "empty"),
        (b"%PDF-1.7\n...", "PDF"),
        (b"PK\x03\x04\x14\x00", "Excel"),
        ("Date;Amount".encode("utf-16"), "UTF-16"),
        (bytes(range(256)) * 4, "binary"),
        (b"<?xml version='1.0'?><invoice/>", "<invoice>"),
    ],
)
def test_detect_format_refuses_what_is_no_statement(content: bytes, message: str) -> None:
    (error,) = rejection(detect_format, content)
    assert error.line == 1 and message in error.message


def test_parse_statement_dispatches_on_the_detected_format() -> None:
    assert parse_statement(BAI2_FUNDS_TYPES, None).format is StatementFormat.BAI2
    assert parse_statement(MT940_TWO_STATEMENTS, StatementFormat.MT940).format is StatementFormat.MT940
    parsed: ParsedFile = parse_statement(CSV_SAMPLE, None, csv_mapping=SIGNED)
    assert parsed.format is StatementFormat.CSV and parsed.line_count == 1


CAMT_SAMPLE = b'<?xml version="1.0"?><Document><BkToCstmrStmt><GrpHdr/></BkToCstmrStmt></Document>'


def test_camt_goes_to_the_camt_module_when_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = ParsedFile(format=StatementFormat.CAMT053, statements=())
    camt = types.ModuleType(CAMT_MODULE)
    camt.looks_like_camt = lambda content: StatementFormat.CAMT052  # type: ignore[attr-defined]
    camt.parse_camt = lambda content: parsed  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, CAMT_MODULE, camt)

    assert detect_format(CAMT_SAMPLE) is StatementFormat.CAMT052  # the camt module's verdict wins
    assert parse_statement(CAMT_SAMPLE, None) is parsed


def test_camt_without_the_camt_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, CAMT_MODULE, None)  # as if camt.py did not exist

    assert detect_format(CAMT_SAMPLE) is StatementFormat.CAMT053  # from the root element names
    (error,) = rejection(parse_statement, CAMT_SAMPLE, None)
    assert "camt.05x import is not available" in error.message


def test_parse_statement_needs_a_mapping_for_csv() -> None:
    (error,) = rejection(parse_statement, CSV_SAMPLE, None)
    assert "column mapping" in error.message


# --- damaged files -----------------------------------------------------------------------------------

DAMAGE_TARGETS: list[tuple[str, Callable[[bytes], ParsedFile]]] = [
    ("mt940/two_statements.sta", parse_mt940),
    ("bai2/funds_types.bai2", parse_bai2),
    ("bai2/records_on_one_line.bai2", parse_bai2),
    ("ofx/ofx1_sgml.ofx", parse_ofx),
    ("ofx/ofx2_xml.ofx", parse_ofx),
    ("ofx/qfx_single_line_header.qfx", parse_ofx),
]
# Bytes that mean something in one of the formats, so damage lands on structure, not only on text.
SIGNIFICANT = st.lists(st.sampled_from(list(b"0123456789,/:<>\n\r;CDRVZS-+. {}")), max_size=3).map(bytes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(DAMAGE_TARGETS),
    edits=st.lists(st.tuples(st.integers(min_value=0), SIGNIFICANT), min_size=1, max_size=4),
)
def test_damaged_files_are_refused_with_row_errors_never_crash(
    target: tuple[str, Callable[[bytes], ParsedFile]], edits: list[tuple[int, bytes]]
) -> None:
    name, parse = target
    damaged = bytearray(fixture(name))
    for position, replacement in edits:
        at = position % (len(damaged) + 1)
        damaged[at : at + 1] = replacement
    for read in (parse, detect_format):
        try:
            read(bytes(damaged))
        except StatementFileError as error:
            assert error.errors and all(e.line >= 0 for e in error.errors)
