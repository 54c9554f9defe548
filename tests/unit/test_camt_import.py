"""camt.052 / camt.053 / camt.054 import against fixtures written from the ISO 20022 message schemas."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest

from services.reconciliation.adapters.formats.camt import looks_like_camt, parse_camt
from services.reconciliation.domain.statements import (
    BalanceCheck,
    EntryDetail,
    EntryStatus,
    ParsedFile,
    StatementFileError,
    StatementFormat,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "statements" / "camt"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def lines_with(text: str | bytes, needle: str) -> list[int]:
    """1-based numbers of the lines holding `needle`, counted independently of the parser."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]


def rejection(content: bytes) -> StatementFileError:
    with pytest.raises(StatementFileError) as caught:
        parse_camt(content)
    return caught.value


ENTRY = """      <Ntry>
        <Amt Ccy="{currency}">{amount}</Amt>
        <CdtDbtInd>{indicator}</CdtDbtInd>
        <Sts>BOOK</Sts>
        <BookgDt>
          <Dt>{booked}</Dt>
        </BookgDt>
        <AcctSvcrRef>{reference}</AcctSvcrRef>
      </Ntry>
"""


def entry(
    amount: str = "10.00",
    indicator: str = "CRDT",
    currency: str = "EUR",
    booked: str = "2024-03-04",
    reference: str = "REF",
) -> str:
    return ENTRY.format(amount=amount, indicator=indicator, currency=currency, booked=booked, reference=reference)


def camt053(*entries: str, encoding: str = "UTF-8", account: str = "<IBAN>DE89370400440532013000</IBAN>") -> str:
    """A minimal camt.053.001.02 document with one statement holding `entries`."""
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">\n'
        "  <BkToCstmrStmt>\n"
        "    <GrpHdr>\n"
        "      <MsgId>TEST</MsgId>\n"
        "      <CreDtTm>2024-03-05T06:00:00</CreDtTm>\n"
        "    </GrpHdr>\n"
        "    <Stmt>\n"
        "      <Id>S1</Id>\n"
        "      <Acct>\n"
        f"        <Id>{account}</Id>\n"
        "        <Ccy>EUR</Ccy>\n"
        "      </Acct>\n"
        f"{''.join(entries)}"
        "    </Stmt>\n"
        "  </BkToCstmrStmt>\n"
        "</Document>\n"
    )


# --- camt.053.001.02: two accounts, batch, reversal, PRCD -------------------------------------------


@pytest.fixture(scope="module")
def two_accounts() -> ParsedFile:
    return parse_camt(fixture("camt053_v02_two_accounts.xml"))


def test_every_statement_of_the_message_becomes_one_statement(two_accounts: ParsedFile) -> None:
    content = fixture("camt053_v02_two_accounts.xml")
    euro, franc = two_accounts.statements

    assert two_accounts.format is StatementFormat.CAMT053
    assert (euro.account, euro.currency, euro.statement_id) == ("DE89370400440532013000", "EUR", "STMT-EUR-2024-03-04")
    assert [len(euro.lines), len(franc.lines)] == [3, 1]
    assert [euro.line, franc.line] == lines_with(content, "<Stmt>")
    assert two_accounts.line_count == 4
    assert two_accounts.warnings == ()


def test_account_known_by_other_id_takes_its_currency_from_the_balances(two_accounts: ParsedFile) -> None:
    franc = two_accounts.statements[1]

    assert (franc.account, franc.currency) == ("0532013000", "CHF")


def test_opening_and_closing_booked_balances_add_up(two_accounts: ParsedFile) -> None:
    euro = two_accounts.statements[0]

    assert (euro.opening_balance_minor, euro.closing_balance_minor) == (100_000, 152_450)
    assert (euro.opening_date, euro.closing_date) == (date(2024, 3, 4), date(2024, 3, 4))
    assert euro.balance_check is BalanceCheck.OK


def test_previously_closed_balance_opens_when_there_is_no_opbd_and_clav_is_not_closing(
    two_accounts: ParsedFile,
) -> None:
    franc = two_accounts.statements[1]

    assert franc.opening_balance_minor == -20_000  # PRCD in debit
    assert franc.opening_date == date(2024, 3, 1)
    assert franc.closing_balance_minor == 15_000  # CLBD, not the CLAV 9999.99 before it
    assert franc.balance_check is BalanceCheck.OK


def test_batch_entry_is_one_line_with_a_detail_per_transaction(two_accounts: ParsedFile) -> None:
    content = fixture("camt053_v02_two_accounts.xml")
    batch = two_accounts.statements[0].lines[0]

    assert batch.line == lines_with(content, "<Ntry>")[0]
    assert (batch.amount_minor, batch.currency) == (60_000, "EUR")
    assert batch.reference == "BATCH-20240304-0001"
    assert batch.bank_code == "PMNT/RCDT/ESCT"
    assert batch.end_to_end_id is None  # three payers: no single one to lift
    assert batch.counterparty is None
    assert batch.description == "Invoice 1001 Invoice 1002 Invoice 1003 and 1004"
    assert batch.details == (
        EntryDetail(10_000, "EUR", "INV-1001", "TX-0001", "Alpha Trading GmbH", "Invoice 1001"),
        EntryDetail(20_000, "EUR", "INV-1002", "TX-0002", "Beta Logistics BV", "Invoice 1002"),
        EntryDetail(30_000, "EUR", None, "TX-0003", "Gamma SARL", "Invoice 1003 and 1004"),
    )
    assert sum(detail.amount_minor or 0 for detail in batch.details) == batch.amount_minor


def test_reversal_keeps_the_sign_the_bank_booked_and_is_flagged(two_accounts: ParsedFile) -> None:
    reversal = two_accounts.statements[0].lines[1]

    assert (reversal.amount_minor, reversal.reversal) == (-5_000, True)
    assert reversal.reference == "RET-20240304-0002"
    assert reversal.entry_reference == "RVSL-77"
    assert reversal.end_to_end_id == "INV-0999"  # one TxDtls: lifted to the line
    assert reversal.counterparty == "Erika Mustermann"  # the payer of the credit it reverses
    assert (reversal.booking_date, reversal.value_date) == (date(2024, 3, 4), date(2024, 3, 1))
    assert reversal.description == "Return of credit: account closed"


def test_notprovided_is_no_reference_and_free_text_is_folded(two_accounts: ParsedFile) -> None:
    charge = two_accounts.statements[0].lines[2]

    assert charge.amount_minor == -2_550
    assert charge.end_to_end_id is None
    assert charge.counterparty == "Office Supplies Ltd"
    assert charge.description == "Order 4711"
    assert charge.bank_code == "NTRF+020"  # proprietary code when there is no ISO domain
    assert charge.reversal is False
    assert charge.entry_reference is None


def test_datetime_and_offset_dates_are_the_calendar_day_written(two_accounts: ParsedFile) -> None:
    salary = two_accounts.statements[1].lines[0]

    assert salary.booking_date == date(2024, 3, 1)  # DtTm 2024-03-01T23:30:00.000-05:00, not shifted to UTC
    assert salary.value_date == date(2024, 3, 4)  # Dt 2024-03-04+01:00
    assert salary.details == ()
    assert salary.description == "Salary March"


# --- camt.053.001.08: prefixed namespace, foreign-currency entries --------------------------------


@pytest.fixture(scope="module")
def foreign_currency() -> ParsedFile:
    return parse_camt(fixture("camt053_v08_foreign_currency.xml"))


def test_foreign_currency_entry_keeps_its_own_currency_and_the_instructed_amount(
    foreign_currency: ParsedFile,
) -> None:
    euro = foreign_currency.statements[0].lines[0]

    assert (euro.amount_minor, euro.currency) == (-10_000, "EUR")
    assert (euro.original_amount_minor, euro.original_currency) == (-9_735, "CHF")
    assert euro.status is EntryStatus.BOOKED  # Sts/Cd from .001.07 on
    assert euro.counterparty == "Fournisseur Lyon SA"  # Cdtr/Pty/Nm from .001.08 on
    assert euro.booking_date == date(2024, 5, 31)  # DtTm with a -04:00 offset
    assert euro.bank_code == "PMNT/ICDT/XBCT"


def test_account_currency_entry_with_an_instructed_foreign_amount(foreign_currency: ParsedFile) -> None:
    franc = foreign_currency.statements[0].lines[1]

    assert (franc.amount_minor, franc.currency) == (-19_520, "CHF")
    assert (franc.original_amount_minor, franc.original_currency) == (-22_000, "USD")
    assert franc.reference == "FX-USD-0002"
    assert franc.details[0].reference == "TX-USD-0002"
    assert franc.description == "RF18539007547034"  # the structured creditor reference, no Ustrd


def test_prefixed_namespace_and_foreign_entries_left_out_of_the_balance(foreign_currency: ParsedFile) -> None:
    statement = foreign_currency.statements[0]

    assert (statement.account, statement.currency) == ("CH9300762011623852957", "CHF")
    assert statement.entries_total_minor == -19_520  # the EUR line is not summed into CHF
    assert statement.balance_check is BalanceCheck.OK


# --- encodings ----------------------------------------------------------------------------------


def test_latin1_file_reads_its_non_ascii_names() -> None:
    content = fixture("camt053_v04_latin1.xml")
    assert "Müller".encode() not in content  # the fixture really is Latin-1

    statement = parse_camt(content).statements[0]
    refund, fee = statement.lines

    assert refund.counterparty == "Jürgen Müller"
    assert refund.end_to_end_id == "RÜCK-2024-01"
    assert refund.description == "Rückerstattung für Brötchen, Größe XL"
    assert fee.description == "Société Générale - frais"
    assert [refund.line, fee.line] == lines_with(content, "<Ntry>")
    assert statement.balance_check is BalanceCheck.NOT_APPLICABLE


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("windows-1252", "Gebühr 5 € \N{EN DASH} Zürich"),
        ("cp1252", "Œuvre d\N{RIGHT SINGLE QUOTATION MARK}art"),
        ("latin-1", "Øresund Ålborg"),
        ("CP852", "Łódź Spółka"),
        ("cp1257", "Lėšų pervedimas"),
        ("ISO-8859-2", "Příliš žluťoučký"),
    ],
)
def test_any_encoding_the_declaration_names(encoding: str, text: str) -> None:
    note = f"        <AddtlNtryInf>{text}</AddtlNtryInf>\n      </Ntry>\n"
    document = camt053(entry().replace("      </Ntry>\n", note), encoding=encoding)

    line = parse_camt(document.encode(encoding)).statements[0].lines[0]

    assert line.description == text
    assert line.line == lines_with(document, "<Ntry>")[0]


def test_byte_the_declared_encoding_does_not_have_is_refused_at_its_line() -> None:
    document = camt053(entry(reference="BAD\x81BYTE"), encoding="windows-1252").encode("latin-1")

    error = rejection(document)

    assert [e.line for e in error.errors] == lines_with(document, "BAD")
    assert "0x81" in error.errors[0].message


# --- camt.052 and camt.054 ----------------------------------------------------------------------


def test_intraday_report_shows_pending_entries_but_leaves_them_out_of_the_balance() -> None:
    parsed = parse_camt(fixture("camt052_v02_intraday.xml"))
    report = parsed.statements[0]
    booked, pending, fee = report.lines

    assert parsed.format is StatementFormat.CAMT052
    assert [booked.status, pending.status, fee.status] == [EntryStatus.BOOKED, EntryStatus.PENDING, EntryStatus.BOOKED]
    assert (pending.amount_minor, pending.booking_date, pending.value_date) == (-9_999, None, date(2024, 4, 11))
    assert report.booked_lines == (booked, fee)
    assert report.balance_check is BalanceCheck.OK  # 100.00 + 10.00 - 2.50 = 107.50


def test_report_with_only_an_interim_balance_has_no_balance_check() -> None:
    report = parse_camt(fixture("camt052_v02_intraday.xml")).statements[1]

    assert report.currency == "EUR"  # from the ITBD balance: Acct has no Ccy
    assert (report.opening_balance_minor, report.closing_balance_minor) == (None, None)
    assert report.balance_check is BalanceCheck.NOT_APPLICABLE
    assert report.lines[0].status is EntryStatus.PENDING  # INFO: shown, never booked


def test_notification_without_balances_keeps_entries_that_share_a_reference() -> None:
    parsed = parse_camt(fixture("camt054_v04_notification.xml"))
    notification = parsed.statements[0]
    collected, returned = notification.lines

    assert parsed.format is StatementFormat.CAMT054
    assert (notification.account, notification.currency) == ("CH5604835012345678009", "CHF")  # from the entries
    assert notification.balance_check is BalanceCheck.NOT_APPLICABLE
    assert collected.reference == returned.reference == "SHARED-REF-1"
    assert collected.entry_reference == returned.entry_reference == "DD-COLLECTION-9"
    assert (collected.amount_minor, returned.amount_minor) == (8_000, -3_000)
    assert (returned.reversal, returned.counterparty) == (True, "Anna Beispiel")
    assert [line.details[0].reference for line in notification.lines] == ["DD-TX-1", "DD-TX-2"]  # TxId
    assert [line.end_to_end_id for line in notification.lines] == ["MANDATE-1-FEB", "MANDATE-2-FEB"]


# --- currencies with other exponents ------------------------------------------------------------


def test_yen_amounts_have_no_minor_digits() -> None:
    statement = parse_camt(fixture("camt053_v02_jpy.xml")).statements[0]

    assert (statement.account, statement.currency) == ("1234567", "JPY")
    assert [line.amount_minor for line in statement.lines] == [-250_000, 1_500]  # "1500.00" is exact
    assert (statement.opening_balance_minor, statement.closing_balance_minor) == (1_000_000, 751_500)
    assert statement.balance_check is BalanceCheck.OK


def test_yen_with_a_fraction_is_refused() -> None:
    content = fixture("camt053_v02_jpy.xml").replace(b">250000<", b">2500.5<")

    error = rejection(content)

    assert [e.line for e in error.errors] == lines_with(content, "<Ntry>")[:1]
    assert "JPY" in error.errors[0].message


def test_three_decimal_currency() -> None:
    line = parse_camt(camt053(entry(amount="1.234", currency="KWD")).encode()).statements[0].lines[0]

    assert (line.amount_minor, line.currency) == (1_234, "KWD")


# --- files that must be refused, with nothing returned ------------------------------------------


def test_broken_xml_is_refused_at_the_line_the_parser_stopped() -> None:
    document = camt053(entry(), entry(reference="OPEN<AcctSvcrRef>"))

    error = rejection(document.encode())

    assert len(error.errors) == 1
    assert error.errors[0].line == lines_with(document, "OPEN")[0] + 1  # the mismatched end tag follows
    assert error.errors[0].message.startswith("not well-formed XML")


@pytest.mark.parametrize("content", [b"", b"   \n", b"Date;Amount\n2024-01-01;10.00\n", b"\xff\xfe\x00garbage"])
def test_what_is_not_xml_at_all_is_refused(content: bytes) -> None:
    assert rejection(content).errors[0].message.startswith("not well-formed XML")


def test_message_with_a_group_header_only_is_refused() -> None:
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">\n'
        "  <BkToCstmrStmt>\n"
        "    <GrpHdr>\n"
        "      <MsgId>EMPTY</MsgId>\n"
        "    </GrpHdr>\n"
        "  </BkToCstmrStmt>\n"
        "</Document>\n"
    )

    error = rejection(document.encode())

    assert [(e.line, e.message) for e in error.errors] == [(3, "BkToCstmrStmt holds no Stmt: nothing to import")]


def test_other_iso20022_message_is_refused() -> None:
    document = b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"><CstmrCdtTrfInitn/></Document>'

    assert "not a camt.052/053/054 message" in rejection(document).errors[0].message


def test_every_unreadable_entry_is_reported_at_its_line() -> None:
    document = camt053(
        entry(amount="12,50"),
        entry(indicator="DBIT"),  # fine
        entry(indicator=""),
        entry(currency="XYZ"),
        entry(amount="-3.00"),
        entry(booked="2024-02-30"),
        entry(amount="1.234"),  # EUR has two decimals
        entry().replace('        <Amt Ccy="EUR">10.00</Amt>\n', ""),
    )
    entries = lines_with(document, "<Ntry>")

    error = rejection(document.encode())

    assert [e.line for e in error.errors] == [entries[0], *entries[2:]]
    messages = [e.message for e in error.errors]
    assert "'12,50'" in messages[0]
    assert "CdtDbtInd" in messages[1]
    assert "XYZ" in messages[2]
    assert "negative" in messages[3]
    assert "2024-02-30" in messages[4]
    assert "decimal places" in messages[5]
    assert "Amt" in messages[6] and "missing" in messages[6]


def test_amount_without_currency_is_refused() -> None:
    document = camt053(entry().replace(' Ccy="EUR"', ""))

    assert "no currency" in rejection(document.encode()).errors[0].message


def test_statement_without_an_account_is_refused_at_its_line() -> None:
    document = camt053(entry(), account="<Prxy>none</Prxy>")

    error = rejection(document.encode())

    assert [e.line for e in error.errors] == lines_with(document, "<Stmt>")
    assert "account" in error.errors[0].message


def test_unreadable_balance_is_refused() -> None:
    content = fixture("camt053_v02_two_accounts.xml").replace(b">1524.50<", b">1.524,50<")

    error = rejection(content)

    assert [e.line for e in error.errors] == lines_with(content, "<Stmt>")[:1]
    assert "CLBD balance" in error.errors[0].message


def test_unreadable_transaction_amount_is_refused() -> None:
    content = fixture("camt053_v02_two_accounts.xml").replace(b'"EUR">200.00<', b'"EUR">two hundred<')

    error = rejection(content)

    assert [e.line for e in error.errors] == lines_with(content, "<Ntry>")[:1]
    assert "TxDtls 2" in error.errors[0].message


def test_external_entity_is_never_read() -> None:
    document = (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE Document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
        + camt053(entry(reference="&secret;")).split("\n", 1)[1]
    )

    error = rejection(document.encode())

    assert [e.message for e in error.errors] == ["the file declares a DTD (<!DOCTYPE>), which camt files never carry"]
    assert "root:" not in str(error)


def test_entity_expansion_bomb_is_refused_quickly() -> None:
    levels = "".join(f'<!ENTITY e{n} "{f"&e{n - 1};" * 10}">' for n in range(1, 10))
    document = (
        f'<?xml version="1.0"?>\n<!DOCTYPE Document [<!ENTITY e0 "lol">{levels}]>\n'
        + camt053(entry(reference="&e9;")).split("\n", 1)[1]
    )

    started = time.perf_counter()
    rejection(document.encode())

    assert time.perf_counter() - started < 1


# --- what is kept as a warning ------------------------------------------------------------------


def test_entry_without_a_status_is_read_as_booked_with_a_warning() -> None:
    document = camt053(entry().replace("        <Sts>BOOK</Sts>\n", ""))

    parsed = parse_camt(document.encode())

    assert parsed.statements[0].lines[0].status is EntryStatus.BOOKED
    assert [w.line for w in parsed.warnings] == lines_with(document, "<Ntry>")


def test_unknown_status_is_pending_with_a_warning() -> None:
    parsed = parse_camt(camt053(entry().replace("BOOK", "WHAT")).encode())

    assert parsed.statements[0].lines[0].status is EntryStatus.PENDING
    assert "WHAT" in parsed.warnings[0].message


# --- size ---------------------------------------------------------------------------------------


def test_line_numbers_stay_exact_past_65535_lines_and_across_feed_slices() -> None:
    # libxml2 keeps element lines in 16 bits, and the parser is fed 1 MiB at a time
    note = (
        "        <AddtlNtryInf>\n"
        + "          remittance text continued over many lines\n" * 60
        + "        </AddtlNtryInf>\n"
    )
    tall_entry = entry().replace("      </Ntry>\n", note + "      </Ntry>\n")
    document = camt053(*(tall_entry.replace("<AcctSvcrRef>REF", f"<AcctSvcrRef>R{n}") for n in range(1_100)))
    assert document.count("\n") > 70_000 and len(document) > 2 << 20

    statement = parse_camt(document.encode()).statements[0]

    assert len(statement.lines) == 1_100
    assert [line.line for line in statement.lines] == lines_with(document, "<Ntry>")
    assert statement.lines[-1].reference == "R1099"


# --- sniffing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("camt053_v02_two_accounts.xml", StatementFormat.CAMT053),
        ("camt053_v08_foreign_currency.xml", StatementFormat.CAMT053),
        ("camt053_v04_latin1.xml", StatementFormat.CAMT053),
        ("camt052_v02_intraday.xml", StatementFormat.CAMT052),
        ("camt054_v04_notification.xml", StatementFormat.CAMT054),
    ],
)
def test_sniffing_names_the_message_kind(name: str, expected: StatementFormat) -> None:
    assert looks_like_camt(fixture(name)) is expected


def test_sniffing_falls_back_to_the_namespace_and_reads_utf16() -> None:
    namespace_only = b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08"><Other/></Document>'
    utf16 = camt053(entry()).replace("UTF-8", "UTF-16").encode("utf-16")

    assert looks_like_camt(namespace_only) is StatementFormat.CAMT054
    assert looks_like_camt(utf16) is StatementFormat.CAMT053
    assert parse_camt(utf16).statements[0].lines[0].amount_minor == 1_000


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"Date;Text;Amount\n2024-01-01;BkToCstmrStmt;10.00\n",
        b"01,BANK,CUST,240101,0000,1,,,2/\n",
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"><CstmrCdtTrfInitn/></Document>',
        b"<OFX><BANKMSGSRSV1/></OFX>",
    ],
)
def test_sniffing_ignores_other_formats(content: bytes) -> None:
    assert looks_like_camt(content) is None
